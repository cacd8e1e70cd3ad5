"""`egress serve`: run the proxy in the foreground on a lean mitmproxy Master.

The Master carries only the addons egress needs (core options, proxy server, layer selection,
TLS) plus EgressAddon, instead of mitmdump's ~35 defaults: measured 60-75% faster, and nothing
that could rewrite traffic behind the policy's back (maplocal, modifyheaders, replay...).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from egress.cli.ca import ca_dir, ensure_ca
from egress.cli.common import add_data_dir, data_dir
from egress.errors import ConfigError
from egress.policy.model import PolicySet

log = logging.getLogger("egress")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="run the proxy",
        description="Run egress in the foreground. Skills use it as their HTTP(S) proxy: "
                    "HTTPS_PROXY=http://SKILL:TOKEN@127.0.0.1:8080",
    )
    p.add_argument("--policies", required=True, type=Path, metavar="DIR",
                   help="directory of policy *.yaml files")
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="proxy address (default 127.0.0.1:8080)")
    p.add_argument("--admin", default="127.0.0.1:8081", metavar="HOST:PORT|off",
                   help="admin endpoint: /healthz, /readyz, /metrics, POST /reload (default "
                        "127.0.0.1:8081; off disables it). Off loopback it needs a bearer token "
                        "from $EGRESS_ADMIN_TOKEN or DATA_DIR/admin-token")
    p.add_argument("--drain-seconds", default=10.0, type=float, metavar="S",
                   help="on SIGTERM, how long open connections may finish (default 10)")
    p.add_argument("--audit", default=None, metavar="PATH",
                   help="audit log file, or - for stdout as JSON lines for a log collector "
                        "(default DATA_DIR/audit.jsonl)")
    add_data_dir(p)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(run=run)


def parse_hostport(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what}: {text!r} is not HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port)


def run(args: argparse.Namespace) -> int:
    host, port = parse_hostport(args.listen, "--listen")
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(args.log_level.upper())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Loggers pass INFO on even when the operator prints less: egress audits refusals that
    # mitmproxy only reports as INFO log lines (see egress/protocol_audit.py).
    logging.basicConfig(level=min(logging.INFO, handler.level), handlers=[handler])
    from egress.admin import admin_token, check_admin_bind

    admin = None if args.admin == "off" else parse_hostport(args.admin, "--admin")
    token = admin_token(data_dir(args)) if admin is not None else None
    if admin is not None:
        check_admin_bind(admin[0], token)  # before anything listens
    return asyncio.run(serve(args.policies, data_dir(args), host, port, admin=admin,
                             admin_token=token, drain_seconds=args.drain_seconds,
                             audit=args.audit))


def build_master(policies: Path, data: Path, host: str, port: int, *,
                 audit: str | None = None, policy: PolicySet | None = None) -> Any:
    """A mitmproxy Master with just the addons egress needs. Call inside a running loop."""
    from mitmproxy import master, options
    from mitmproxy.addons import core, errorcheck, next_layer, proxyserver, tlsconfig

    from egress.addon import EgressAddon

    ensure_ca(data)
    opts = options.Options(
        listen_host=host, listen_port=port, mode=["regular"],
        confdir=str(ca_dir(data)),
    )
    m = master.Master(opts)
    m.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(),
                 tlsconfig.TlsConfig(), errorcheck.ErrorCheck(),
                 EgressAddon(preloaded=(str(policies), policy) if policy else None))
    opts.update(
        connection_strategy="lazy",
        rawtcp=False,  # no raw relay on mitmproxy's guess (egress/layers.py decides tunnels)
        egress_policies=str(policies), egress_data_dir=str(data), egress_audit=audit or "",
        # Large bodies stream instead of being held in memory (uploads, downloads, SSE).
        stream_large_bodies="256k",
    )
    return m


async def serve(policies: Path, data: Path, host: str, port: int, *,
                admin: tuple[str, int] | None = None, admin_token: str | None = None,
                drain_seconds: float = 10.0, audit: str | None = None) -> int:
    from mitmproxy.exceptions import OptionsError

    from egress.errors import PolicyErrors
    from egress.lifecycle import Operations
    from egress.policy.load import load_policy_dir

    try:
        # Fail fast with file:line messages before binding a port; the proxy reuses this load.
        policy = await asyncio.to_thread(load_policy_dir, policies)
    except PolicyErrors as exc:
        for err in exc.errors:
            print(f"egress: {err}", file=sys.stderr)
        print("egress: not started: fix the policy (egress check DIR shows the same list)",
              file=sys.stderr)
        return 1
    from egress.policy.lint import policy_warnings

    for warning in policy_warnings(policy):
        log.warning("policy: %s", warning)  # rules that can never work (see egress check)
    try:
        m = build_master(policies, data, host, port, audit=audit, policy=policy)
    except OptionsError as exc:
        print(f"egress: {exc}", file=sys.stderr)
        return 1
    ops = Operations(m, m.addons.get("egressaddon"), admin=admin, admin_token=admin_token,
                     drain_seconds=drain_seconds)
    try:
        await ops.start()  # SIGTERM/SIGINT drain, SIGHUP reloads
    except ConfigError as exc:
        print(f"egress: {exc}", file=sys.stderr)
        await ops.stop()
        return 1
    log.info("egress listening on %s:%d, policies %s, data %s", host, port, policies, data)
    try:
        await m.run()
    finally:
        await ops.stop()
    return 0
