"""`egress exec --skill SKILL -- COMMAND`: run a command whose only way out is egress.

The command runs in a network namespace that holds nothing but a loopback interface and a
relay to egress, in its own PID namespace under a syscall filter (egress/jail/namespace.py explains
why it is built that way), with the skill's proxy credentials in HTTP_PROXY/HTTPS_PROXY/
ALL_PROXY and a CA bundle that trusts egress for hosts it intercepts. Clients that honour the
proxy variables work unchanged; everything else (direct connections, raw sockets, DNS, IPv6,
processes outside the jail) finds no route. Its environment is minimal (jail_environment):
nothing of the caller's reaches it unless --env names it.

Needs Linux and root to build the namespace; the command itself runs as the user who ran
sudo (or --user), never as root.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import re
import shutil
import socket
import ssl
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from egress.cli.common import add_data_dir, address_arg, data_dir
from egress.errors import ConfigError

__all__ = ["CA_VARS", "KEPT_VARS", "PROXY_VARS", "Account", "jail_environment", "parse_env",
           "resolve_account", "run"]

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
CA_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE")
# Other tools' CA-file variables, pointed at the bundle too, so git, pip, the AWS and Google
# Cloud CLIs, Deno, gRPC and Nix trust egress's CA for intercepted hosts.
EXTRA_CA_VARS = ("GIT_SSL_CAINFO", "AWS_CA_BUNDLE", "PIP_CERT", "HTTPLIB2_CA_CERTS", "DENO_CERT",
                 "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", "NIX_SSL_CERT_FILE",
                 "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE")
# The only variables of the caller's environment the command gets without --env: where to
# find programs and how to talk to the terminal. Locale categories (LC_CTYPE, LC_ALL, ...)
# match LOCALE_VAR. Everything else (API keys, cloud credentials, SSH_AUTH_SOCK,
# LD_PRELOAD, ...) stays out unless --env names it.
KEPT_VARS = ("PATH", "TERM", "LANG", "LANGUAGE", "TZ")
LOCALE_VAR = re.compile(r"LC_[A-Z]+")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# Names --env may not set: egress exec sets the proxy and CA variables itself; proxy
# exceptions would let a client try to go around egress; the proxy URLs already carry the
# skill's token.
RESERVED_VARS = frozenset({*PROXY_VARS, *CA_VARS, *EXTRA_CA_VARS, "NO_PROXY", "no_proxy",
                           "EGRESS_TOKEN"})
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_EXIT_UNAVAILABLE = 126  # like a shell's "found but cannot execute"
WORKDIR_PREFIX = "egress-exec-"


@dataclass(frozen=True)
class Account:
    """The user the command runs as."""

    uid: int
    gid: int
    name: str | None = None
    home: str | None = None


def register(sub: Any) -> None:
    p = sub.add_parser(
        "exec", help="run a command whose only network access is egress (Linux, root)",
        description="Run COMMAND in a network namespace whose only way out is the egress "
                    "proxy, with the skill's proxy credentials and egress's CA in its "
                    "environment. Direct connections, DNS and IPv6 find no route. Start it "
                    "with sudo: the command runs as you (or --user), never as root.",
        usage="egress exec --skill SKILL [options] -- COMMAND [ARG...]",
    )
    p.add_argument("--skill", required=True, help="the skill whose credentials the command uses")
    p.add_argument("--proxy", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="where `egress serve` listens (default 127.0.0.1:8080)")
    p.add_argument("--token-file", type=Path, metavar="FILE",
                   help="file holding the skill's token (default: $EGRESS_TOKEN)")
    p.add_argument("--policies", type=Path, metavar="DIR",
                   help="check first that the skill has a policy in DIR")
    p.add_argument("--user", metavar="USER",
                   help="run COMMAND as USER (name or uid; default: the user who ran sudo)")
    p.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                   help="give COMMAND this variable too (repeatable): NAME copies it from this "
                        "environment (under sudo: sudo --preserve-env=NAME), NAME=VALUE sets it "
                        "(visible to other users in `ps`; prefer NAME for secrets). Without "
                        "--env the command gets only PATH, TERM, LANG, LANGUAGE, LC_*, TZ, "
                        "HOME, USER, LOGNAME and egress's proxy and CA variables")
    add_data_dir(p)
    p.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(run=run)


# -- pure parts ------------------------------------------------------------------------------

def proxy_url(skill: str, token: str, port: int) -> str:
    return f"http://{quote(skill, safe='')}:{quote(token, safe='')}@127.0.0.1:{port}"


def jail_environment(base: Mapping[str, str], *, proxy: str, ca_bundle: str,
                     account: Account, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The command's whole environment: the few KEPT_VARS and LC_* of `base`, the user's
    identity, egress's proxy and CA settings, and `extra` (from --env, see parse_env)."""
    env = {k: v for k, v in base.items() if k in KEPT_VARS or LOCALE_VAR.fullmatch(k)}
    env.setdefault("PATH", DEFAULT_PATH)
    env["HOME"] = account.home or "/"
    if account.name is not None:
        env.update(USER=account.name, LOGNAME=account.name)
    env.update(extra or {})
    env.update(dict.fromkeys(PROXY_VARS, proxy))
    env.update(dict.fromkeys((*CA_VARS, *EXTRA_CA_VARS), ca_bundle))
    return env


def parse_env(values: list[str], base: Mapping[str, str]) -> dict[str, str]:
    """--env NAME (copied from `base`) and --env NAME=VALUE, checked."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, given = value.partition("=")
        if not ENV_NAME.fullmatch(name):
            raise ConfigError(f"--env {value!r}: {name!r} is not a variable name (letters, "
                              f"digits and _, not starting with a digit)")
        if name in RESERVED_VARS:
            raise ConfigError(f"--env {name}: egress exec sets the proxy and CA variables "
                              f"itself, and nothing may name proxy exceptions or the token")
        if sep:
            out[name] = given
        elif name in base:
            out[name] = base[name]
        else:
            raise ConfigError(f"--env {name}: not set in egress exec's environment (sudo "
                              f"drops most variables: sudo --preserve-env={name} egress exec "
                              f"..., or --env {name}=VALUE)")
    return out


def resolve_account(user: str | None, environ: Mapping[str, str]) -> Account:
    """--user USER, else the user who ran sudo. Root is refused: it could leave the jail."""
    if user:
        account = _lookup(user)
    elif environ.get("SUDO_UID", "").isdigit():
        uid = int(environ["SUDO_UID"])
        found = _lookup(str(uid))
        gid = int(environ["SUDO_GID"]) if environ.get("SUDO_GID", "").isdigit() else found.gid
        account = Account(uid, gid, found.name, found.home)
    else:
        raise ConfigError("who should COMMAND run as? Start egress exec with sudo "
                          "(the command runs as you) or pass --user USER")
    if account.uid == 0 or account.gid == 0:
        raise ConfigError("refusing to run COMMAND as root: root inside the jail "
                          "could leave it. Run egress exec through sudo from your own account, "
                          "or pass --user with an unprivileged user")
    return account


def _lookup(user: str) -> Account:
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        if user.isdigit():  # a bare uid without a passwd entry (common in containers)
            return Account(int(user), int(user))
        raise ConfigError(f"--user {user!r}: no such user") from None
    return Account(entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir)


def ca_bundle(system_pem: str, egress_pem: str) -> str:
    """System CAs plus egress's CA, for clients that take a single CA file."""
    parts = [p.strip() + "\n" for p in (system_pem, egress_pem) if p.strip()]
    return "".join(parts)


# -- the command -----------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    from egress.jail import namespace as jail
    from egress.jail import syscall_filter
    from egress.proxy.ca import ensure_ca

    bwrap = shutil.which("bwrap")
    why = (jail.unavailable(platform=sys.platform, euid=os.geteuid(), bwrap=bwrap)
           or syscall_filter.unavailable())
    if why is not None:
        print(why, file=sys.stderr)
        return _EXIT_UNAVAILABLE
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise ConfigError("no COMMAND given: egress exec --skill SKILL -- COMMAND")
    token = _token(args)
    extra = parse_env(args.env, os.environ)
    account = resolve_account(args.user, os.environ)
    if args.policies is not None:
        _check_skill(args.skill, args.policies)
    host, port = address_arg(args.proxy, "--proxy")
    _check_proxy(host, port)
    data = data_dir(args)
    egress_ca = ensure_ca(data)
    remove_stale_workdirs(Path(tempfile.gettempdir()))
    workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    try:
        # Not the data dir: that is private to egress (0700) and the command runs as another
        # user. These files hold only public certificates and a resolver stub.
        workdir.chmod(0o755)
        _write(workdir / "pid", str(os.getpid()))
        bundle = _write(workdir / "ca-bundle.pem",
                        ca_bundle(_system_cas(), egress_ca.read_text(encoding="ascii")))
        resolv = _write(workdir / "resolv.conf", jail.RESOLV_CONF)
        env = jail_environment(os.environ, proxy=proxy_url(args.skill, token, port),
                               ca_bundle=str(bundle), account=account, extra=extra)
        spec = jail.JailSpec(command=tuple(command), env=env, uid=account.uid, gid=account.gid,
                             proxy=(host, port), port=port, resolv_conf=str(resolv), bwrap=bwrap)
        try:
            return asyncio.run(jail.run(spec))
        except (OSError, syscall_filter.SyscallFilterError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            print(f"egress exec: cannot build the jail: {reason}", file=sys.stderr)
            return _EXIT_UNAVAILABLE
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def remove_stale_workdirs(tmp: Path) -> None:
    """Remove what runs that were SIGKILLed (so never cleaned up) left in the temp directory."""
    for directory in tmp.glob(WORKDIR_PREFIX + "*"):
        try:
            owner = directory.stat().st_uid
            pid = int((directory / "pid").read_text(encoding="ascii"))
        except (OSError, ValueError):
            continue
        if owner == os.geteuid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(directory, ignore_errors=True)


def _token(args: argparse.Namespace) -> str:
    token: str
    if args.token_file is not None:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read --token-file {args.token_file}: "
                              f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from exc
    else:
        token = os.environ.get("EGRESS_TOKEN", "").strip()
    if not token:
        raise ConfigError(f"no token for skill {args.skill!r}: pass --token-file "
                          f"FILE or set EGRESS_TOKEN (`egress token issue {args.skill}` makes one)")
    return token


def _check_skill(skill: str, policies: Path) -> None:
    from egress.policy.load import load_policy_dir

    policy = load_policy_dir(policies)
    if skill not in policy.skills:
        raise ConfigError(f"skill {skill!r} has no policy in {policies}; egress "
                          f"would refuse all of its requests")


def _check_proxy(host: str, port: int) -> None:
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as exc:
        raise ConfigError(f"no egress proxy answers at {host}:{port} "
                          f"({exc.strerror or type(exc).__name__}); start `egress serve` first "
                          f"or pass --proxy HOST:PORT") from exc


def _system_cas() -> str:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return Path(candidate).read_text(encoding="utf-8", errors="replace")
    try:
        import certifi  # mitmproxy depends on it
    except ImportError:
        return ""
    return Path(certifi.where()).read_text(encoding="utf-8", errors="replace")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)
    return path
