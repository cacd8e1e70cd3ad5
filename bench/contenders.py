"""The proxies compared, each started the same way: a process of its own on 127.0.0.1.

  direct            no proxy: the floor
  squid             allowlist (dst 127.0.0.3) and CONNECT, no cache, no access log
  mitmdump-pass     bare mitmdump, TLS passed through (ignore_hosts '.*')
  mitmdump-mitm     bare mitmdump, TLS intercepted
  egress-pass       egress serve, a host rule (TLS passed through)
  egress-mitm       egress serve, a rule with methods + a credential (TLS intercepted, key injected)
  kow               keys-on-the-wire, a header binding (TLS intercepted, key injected)

mitmdump runs with -q (no per-flow output) and, like egress, stream_large_bodies=256k, so the
comparison is of addons and Master, not of printing or buffering. The bare mitmdump instance
also carries a block_list rule, giving the deny workload a mitmdump figure.
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import Service, Supervisor, free_port
from bench.upstream import UPSTREAM_IP, Upstream

__all__ = ["DENIED_IP", "LISTEN", "PLACEHOLDER", "SECRET", "Contender", "Tools", "egress_policy",
           "issue_token", "start"]

LISTEN = "127.0.0.1"
DENIED_IP = "127.0.0.9"  # no contender may reach it: the deny workload aims here
SKILL = "bench"
# The placeholder the client sends; the proxies that inject put SECRET in its place.
PLACEHOLDER = "bench_PLACEHOLDER_0123456789abcdef"
SECRET = "bench-real-secret-0f1e2d3c4b5a"
STREAM = "256k"


@dataclass(frozen=True)
class Tools:
    """Where the programs are: the project venv's egress/mitmdump, kow's own venv."""

    egress: str
    mitmdump: str
    kow_python: str | None


@dataclass
class Contender:
    name: str
    proxy: str | None  # proxy URL, with credentials where the proxy wants them
    service: Service | None
    intercepts: bool = False  # the proxy terminates TLS (client must trust its CA)
    injects: bool = False  # the proxy puts SECRET into the Authorization header
    ca: Path | None = None  # the proxy's CA, when it intercepts
    notes: list[str] = field(default_factory=list)


def start(name: str, sup: Supervisor, work: Path, up: Upstream, tools: Tools, *,
          credential: bool = True) -> Contender:
    """Start contender `name`. `credential`: give egress-mitm a credential rule (else methods)."""
    starters = {
        "direct": lambda: Contender("direct", None, None),
        "squid": lambda: _squid(sup, work, up),
        "mitmdump-pass": lambda: _mitmdump(sup, work, up, tools, intercept=False),
        "mitmdump-mitm": lambda: _mitmdump(sup, work, up, tools, intercept=True),
        "egress-pass": lambda: _egress(sup, work, up, tools, intercept=False, credential=False),
        "egress-mitm": lambda: _egress(sup, work, up, tools, intercept=True,
                                       credential=credential),
        # The same with the fast path off (mitmproxy takes every connection, as before it).
        "egress-pass-off": lambda: _egress(sup, work, up, tools, intercept=False,
                                           credential=False, front=False),
        "egress-mitm-off": lambda: _egress(sup, work, up, tools, intercept=True,
                                           credential=credential, front=False),
        "kow": lambda: _kow(sup, work, up, tools),
    }
    return starters[name]()


# -- squid ---------------------------------------------------------------------------------


def _squid(sup: Supervisor, work: Path, up: Upstream) -> Contender:
    root = work / "squid"
    root.mkdir(exist_ok=True)
    root.chmod(0o777)  # squid drops root privileges to its own user
    port = free_port(LISTEN)
    conf = root / "squid.conf"
    conf.write_text(f"""
http_port {LISTEN}:{port}
pid_filename {root}/squid.pid
cache_log {root}/cache.log
access_log none
cache_store_log none
cache deny all
coredump_dir {root}
shutdown_lifetime 0 seconds
acl upstream dst {UPSTREAM_IP}/32
acl bench_ports port {up.https_port} {up.http_port}
acl CONNECT method CONNECT
http_access allow CONNECT upstream bench_ports
http_access allow upstream bench_ports
http_access deny all
via off
forwarded_for delete
""")
    service = sup.start("squid", ["squid", "-N", "-f", str(conf)], ready=(LISTEN, port))
    return Contender("squid", f"http://{LISTEN}:{port}", service)


# -- bare mitmdump -----------------------------------------------------------------------------


def _mitmdump(sup: Supervisor, work: Path, up: Upstream, tools: Tools, *,
              intercept: bool) -> Contender:
    name = "mitmdump-mitm" if intercept else "mitmdump-pass"
    confdir = work / f"{name}-conf"
    port = free_port(LISTEN)
    cmd = [tools.mitmdump, "-q", "--listen-host", LISTEN, "--listen-port", str(port),
           "--set", f"confdir={confdir}", "--set", f"stream_large_bodies={STREAM}",
           "--set", f"block_list=:~d {DENIED_IP}:403"]
    if intercept:
        cmd += ["--set", f"ssl_verify_upstream_trusted_ca={up.ca.ca_pem}"]
    else:
        cmd += ["--set", "ignore_hosts=.*"]
    service = sup.start(name, cmd, ready=(LISTEN, port))
    return Contender(name, f"http://{LISTEN}:{port}", service, intercepts=intercept,
                     ca=confdir / "mitmproxy-ca-cert.pem" if intercept else None)


# -- egress ------------------------------------------------------------------------------------


def egress_policy(up: Upstream, *, intercept: bool, credential: bool) -> str:
    """The policy of one egress contender: one skill, the upstream as an IP-literal rule."""
    head = f"""settings:
  networks:
    allow: ["{UPSTREAM_IP}/32"]
  upstream_ca: {up.ca.ca_pem}
skills:
  {SKILL}:
    allow:
"""
    if not intercept:
        return head + f"""      - host: {UPSTREAM_IP}
        ports: [{up.https_port}, {up.http_port}]
"""
    text = head + f"""      - host: {UPSTREAM_IP}
        ports: [{up.https_port}]
        methods: [GET, HEAD]
"""
    if credential:
        text += f"""        credential: bench-key
    credentials:
      bench-key:
        secret: env:EGRESS_BENCH_SECRET
        header: Authorization
        format: "Bearer {{secret}}"
        placeholder: {PLACEHOLDER}
"""
    return text


def _egress(sup: Supervisor, work: Path, up: Upstream, tools: Tools, *, intercept: bool,
            credential: bool, front: bool = True) -> Contender:
    name = ("egress-mitm" if intercept else "egress-pass") + ("" if front else "-off")
    data = work / f"{name}-data"
    token_file = data / "bench-token"
    if not token_file.exists():
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(issue_token(tools.egress, data))
    token = token_file.read_text()
    policies = work / f"{name}-policies"
    policies.mkdir(exist_ok=True)
    (policies / "bench.yaml").write_text(egress_policy(up, intercept=intercept,
                                                       credential=credential))
    port = free_port(LISTEN)
    cmd = [tools.egress, "serve", "--policies", str(policies), "--data-dir", str(data),
           "--listen", f"{LISTEN}:{port}"]
    options = _serve_options(tools.egress)
    if "--admin" in options:
        cmd += ["--admin", f"{LISTEN}:{free_port(LISTEN)}"]  # on, as by default; own port
    if "--drain-seconds" in options:
        cmd += ["--drain-seconds", "1"]  # stopping between workloads need not wait 10 s
    if not front:
        cmd += ["--front", "off"]
    service = sup.start(name, cmd, env={"EGRESS_BENCH_SECRET": SECRET}, ready=(LISTEN, port))
    return Contender(name, f"http://{SKILL}:{token}@{LISTEN}:{port}", service,
                     intercepts=intercept, injects=credential,
                     ca=data / "ca" / "mitmproxy-ca-cert.pem" if intercept else None)


@functools.cache
def _serve_options(egress: str) -> str:
    """`egress serve --help`: options this egress has (the CLI grows while the bench exists)."""
    out = subprocess.run([egress, "serve", "--help"], capture_output=True, text=True, timeout=60,
                         check=False)
    return out.stdout


def issue_token(egress: str, data: Path) -> str:
    out = subprocess.run([egress, "token", "issue", SKILL, "--data-dir", str(data)],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip().splitlines()[-1]


# -- keys-on-the-wire --------------------------------------------------------------------------


def _kow(sup: Supervisor, work: Path, up: Upstream, tools: Tools) -> Contender:
    if tools.kow_python is None:
        raise RuntimeError("keys-on-the-wire is not installed")
    root = work / "kow"
    root.mkdir(exist_ok=True)
    secrets = root / "secrets.yaml"
    secrets.write_text(f"secrets:\n  BENCH_KEY: \"{SECRET}\"\n")
    secrets.chmod(0o600)  # kow refuses a world-readable secrets file
    config = root / "bindings.yaml"
    config.write_text(f"""version: 1
binding_source: file
unmatched_destination_policy: deny
secrets:
  BENCH_KEY:
    placeholder: {PLACEHOLDER}
    inject:
      type: header
      header: Authorization
      format: "Bearer {{BENCH_KEY}}"
    bindings:
      - host: "{UPSTREAM_IP}"
        methods: [GET, HEAD]
audit:
  path: {root}/audit.jsonl
backend:
  type: static
  config:
    path: {secrets}
""")
    confdir = root / "conf"
    port = free_port(LISTEN)
    cmd = [tools.kow_python, "-m", "kow", "-q", "--listen-host", LISTEN,
           "--listen-port", str(port), "--set", f"confdir={confdir}",
           "--set", f"kow_config={config}", "--set", f"stream_large_bodies={STREAM}",
           "--set", f"ssl_verify_upstream_trusted_ca={up.ca.ca_pem}"]
    service = sup.start("kow", cmd, ready=(LISTEN, port), timeout=60)
    return Contender("kow", f"http://{LISTEN}:{port}", service, intercepts=True, injects=True,
                     ca=confdir / "mitmproxy-ca-cert.pem")

