#!/usr/bin/env python3
"""Container entrypoint for egress: prepare the data directory, then exec `egress serve`.

    egress-entrypoint [serve [ARGS]]     prepare, then run `egress serve` configured from the
                                         environment below (ARGS are added to its arguments)
    egress-entrypoint healthcheck        exit 0 when egress is healthy (admin /healthz, or
                      [--ready]          /readyz with --ready; a TCP connect to the proxy when
                                         the admin endpoint is off), else 1
    egress-entrypoint COMMAND [ARGS]     any other egress command, e.g. `token issue weather`

Environment (all optional):
    EGRESS_POLICIES      policy directory                     (default /etc/egress/policies)
    EGRESS_DATA_DIR      tokens, CA, audit                    (default /var/lib/egress)
    EGRESS_LISTEN        proxy address                        (default 0.0.0.0:8080)
    EGRESS_ADMIN         admin endpoint, or off               (default 127.0.0.1:8081)
    EGRESS_AUDIT         audit file, or - for stdout          (default DATA_DIR/audit.jsonl)
    EGRESS_TOKENS_FILE   token hashes from a mounted secret: DATA_DIR/tokens.json becomes a
                         link to it, so a rotated secret takes effect without a restart
    EGRESS_CA_FILE       PEM with egress's CA key and certificate, shared by every replica
                         (otherwise each data directory makes its own CA on first start)
    EGRESS_LOG_LEVEL     debug | info | warning | error        (default info)

Written for the container image but runs anywhere with egress installed; the tests run it
directly. It needs nothing but the standard library and egress.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

DEFAULTS = {
    "EGRESS_POLICIES": "/etc/egress/policies",
    "EGRESS_DATA_DIR": "/var/lib/egress",
    "EGRESS_LISTEN": "0.0.0.0:8080",
    "EGRESS_ADMIN": "127.0.0.1:8081",
    "EGRESS_LOG_LEVEL": "info",
}
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
_PEM_KEY = re.compile(r"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----.+?-----END (?:RSA |EC )?PRIVATE KEY-----", re.S)
CA_BASENAME = "mitmproxy"  # egress keeps its CA where mitmproxy looks: DATA_DIR/ca/mitmproxy-ca.pem


class SetupError(Exception):
    """The environment asks for something that cannot work; the message says what."""


def setting(env: Mapping[str, str], name: str) -> str:
    return env.get(name) or DEFAULTS[name]


def serve_argv(env: Mapping[str, str], extra: Sequence[str] = ()) -> list[str]:
    """The `egress serve` command line for this environment. Pure."""
    argv = [sys.executable, "-m", "egress.cli.main", "serve",
            "--policies", setting(env, "EGRESS_POLICIES"),
            "--data-dir", setting(env, "EGRESS_DATA_DIR"),
            "--listen", setting(env, "EGRESS_LISTEN"),
            "--admin", setting(env, "EGRESS_ADMIN"),
            "--log-level", setting(env, "EGRESS_LOG_LEVEL")]
    if env.get("EGRESS_AUDIT"):
        argv += ["--audit", env["EGRESS_AUDIT"]]
    return argv + list(extra)


def prepare(env: Mapping[str, str]) -> None:
    """Make the data directory ready: link mounted token hashes, install a shared CA."""
    data = Path(setting(env, "EGRESS_DATA_DIR"))
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    if env.get("EGRESS_TOKENS_FILE"):
        link_tokens(data, Path(env["EGRESS_TOKENS_FILE"]))
    if env.get("EGRESS_CA_FILE"):
        install_ca(data, Path(env["EGRESS_CA_FILE"]))


def link_tokens(data: Path, source: Path) -> None:
    target = data / "tokens.json"
    if not source.is_file():
        raise SetupError(f"EGRESS_TOKENS_FILE {source} is not a readable file")
    if target.exists() and not target.is_symlink():
        raise SetupError(f"{target} holds tokens issued in this data directory; refusing to "
                         f"replace it with a link to EGRESS_TOKENS_FILE {source}. Keep one of "
                         f"the two")
    tmp = data / ".tokens.json.link"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(source)
    os.replace(tmp, target)  # atomic: a running egress never sees the link missing


def install_ca(data: Path, source: Path) -> None:
    if not source.exists():
        # An optional Secret that was not created: fine for policies that never intercept.
        print(f"egress-entrypoint: EGRESS_CA_FILE {source} does not exist; using the CA in "
              f"{data / 'ca'} (made on first start, different in every replica)", file=sys.stderr)
        return
    try:
        pem = source.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"EGRESS_CA_FILE {source}: cannot read it ({type(exc).__name__})") from exc
    certs, keys = _PEM_CERT.findall(pem), _PEM_KEY.findall(pem)
    if len(certs) != 1 or len(keys) != 1:
        raise SetupError(f"EGRESS_CA_FILE {source}: expected one private key and one "
                         f"certificate in PEM, found {len(keys)} and {len(certs)}")
    directory = data / "ca"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(directory / f"{CA_BASENAME}-ca.pem", keys[0] + "\n" + certs[0] + "\n", 0o600)
    _write(directory / f"{CA_BASENAME}-ca-cert.pem", certs[0] + "\n", 0o644)


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)
    os.replace(tmp, path)


def healthcheck(env: Mapping[str, str], *, ready: bool = False, timeout: float = 4.0) -> int:
    admin = setting(env, "EGRESS_ADMIN")
    try:
        if admin == "off":
            host, port = _hostport(setting(env, "EGRESS_LISTEN"))
            with socket.create_connection((_dialable(host), port), timeout=timeout):
                return 0
        host, port = _hostport(admin)
        headers = {}
        token = _admin_token(env)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection(_dialable(host), port, timeout=timeout)
        try:
            conn.request("GET", "/readyz" if ready else "/healthz", headers=headers)
            status = conn.getresponse().status
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError) as exc:
        print(f"egress-entrypoint: unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"egress-entrypoint: unhealthy: admin answered {status}", file=sys.stderr)
        return 1
    return 0


def _admin_token(env: Mapping[str, str]) -> str | None:
    token = env.get("EGRESS_ADMIN_TOKEN", "").strip()
    if token:
        return token
    path = Path(setting(env, "EGRESS_DATA_DIR")) / "admin-token"
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _dialable(host: str) -> str:
    """A wildcard listen address is reached on loopback."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    args = list(argv)
    if args[:1] == ["healthcheck"]:
        return healthcheck(env, ready="--ready" in args[1:])
    child_env = dict(env)
    child_env.setdefault("EGRESS_DATA_DIR", setting(env, "EGRESS_DATA_DIR"))
    if not args or args[0] == "serve":
        try:
            prepare(env)
        except (SetupError, OSError) as exc:
            print(f"egress-entrypoint: {exc}", file=sys.stderr)
            return 1
        cmd = serve_argv(env, args[1:])
    else:
        cmd = [sys.executable, "-m", "egress.cli.main", *args]
    # exec, not a child: egress gets the signals (SIGTERM drains, SIGHUP reloads) directly.
    os.execve(sys.executable, cmd, child_env)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
