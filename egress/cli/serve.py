"""`egress serve`: run the proxy in the foreground.

Parses the arguments, checks the policy and the admin endpoint before anything listens, raises
the open-files limit, then hands off to the proxy (egress/proxy/service.py: the fast path with
mitmproxy behind it, or with `--front off` mitmproxy alone) and its supervisor
(egress/ops/supervisor.py). The proxy's imports (mitmproxy, aiohttp, dnspython) happen here,
when the verb runs, not when the CLI starts.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from egress.cli.common import add_data_dir, address_arg, data_dir
from egress.errors import ConfigError

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
    p.add_argument("--front", default="on", choices=["on", "off"],
                   help="on (default): egress's fast path takes every connection and hands "
                        "mitmproxy only what needs it (intercepted hosts, plain HTTP); off: "
                        "mitmproxy takes every connection, as under mitmdump -s")
    p.add_argument("--audit", default=None, metavar="PATH",
                   help="audit log file, or - for stdout as JSON lines for a log collector "
                        "(default DATA_DIR/audit.jsonl)")
    add_data_dir(p)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    host, port = address_arg(args.listen, "--listen")
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(args.log_level.upper())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Loggers pass INFO on even when the operator prints less: egress audits refusals that
    # mitmproxy only reports as INFO log lines (see egress/proxy/protocol_audit.py).
    logging.basicConfig(level=min(logging.INFO, handler.level), handlers=[handler])
    from egress.ops.admin import admin_token, check_admin_bind

    admin = None if args.admin == "off" else address_arg(args.admin, "--admin")
    token = admin_token(data_dir(args)) if admin is not None else None
    if admin is not None:
        check_admin_bind(admin[0], token)  # before anything listens
    return asyncio.run(serve(args.policies, data_dir(args), host, port, admin=admin,
                             admin_token=token, drain_seconds=args.drain_seconds,
                             audit=args.audit, front=args.front == "on"))


async def serve(policies: Path, data: Path, host: str, port: int, *,
                admin: tuple[str, int] | None = None, admin_token: str | None = None,
                drain_seconds: float = 10.0, audit: str | None = None,
                front: bool = True) -> int:
    import asyncio

    from egress.errors import PolicyErrors
    from egress.ops.fdlimit import raise_nofile_limit
    from egress.ops.runtime import Runtime
    from egress.ops.supervisor import Supervisor
    from egress.policy.hosts import listen_addresses
    from egress.policy.load import load_policy_dir
    from egress.proxy.deciding import Deciding

    # A stop signal during start-up (after the fast path listens, before the supervisor's
    # handlers are in place) must not kill the process mid-way: it is kept and the supervisor
    # drains as soon as it can. Installed before anything can listen.
    early_stop = _catch_stop_signals()
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
    soft, hard = raise_nofile_limit()  # every tunnel holds two descriptors
    log.info("open files limit: %d (hard %d)", soft, hard)
    runtime = Runtime.create(policies, data, self_addresses=listen_addresses(host, port),
                             audit_path=audit, policy=policy)
    deciding = Deciding.create(lambda: runtime)
    try:
        proxy = await _proxy(runtime, deciding, host, port, audit=audit, front=front)
    except (ConfigError, OSError) as exc:
        print(f"egress: {exc}", file=sys.stderr)
        return 1
    ops = Supervisor(proxy, admin=admin, admin_token=admin_token, drain_seconds=drain_seconds)
    try:
        await ops.start()  # SIGTERM/SIGINT drain, SIGHUP reloads
    except ConfigError as exc:
        print(f"egress: {exc}", file=sys.stderr)
        await ops.stop()
        return 1
    log.info("egress listening on %s:%d (%s), policies %s, data %s", host, port,
             "fast path" if front else "mitmproxy only", policies, data)
    if early_stop:  # the supervisor's handlers replaced ours; act on what they missed
        ops.on_stop_signal(early_stop[0])
    try:
        await proxy.run()
    finally:
        await ops.stop()
    return 0


def _catch_stop_signals() -> list[int]:
    """SIGTERM/SIGINT from now until the supervisor starts are recorded, not fatal."""
    import asyncio
    import signal

    caught: list[int] = []
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, caught.append, sig)
    return caught


async def _proxy(runtime: Any, deciding: Any, host: str, port: int, *, audit: str | None,
                 front: bool) -> Any:
    """The running proxy: the fast path with mitmproxy behind it, or mitmproxy alone."""
    if not front:
        from egress.proxy.master import build_master
        from egress.proxy.service import MitmproxyOnly

        return MitmproxyOnly(build_master(runtime, deciding, host, port, audit=audit),
                             runtime, deciding)
    import asyncio

    from egress.proxy.ca import ensure_ca_apart
    from egress.proxy.service import FastPath

    def build() -> Any:
        from egress.proxy.master import build_master

        return build_master(runtime, deciding, host, port, audit=audit, listen=False)

    await asyncio.to_thread(ensure_ca_apart, runtime.data_dir)  # `egress ca` names it now
    proxy = FastPath(runtime, deciding, build)
    await proxy.start(host, port)
    return proxy
