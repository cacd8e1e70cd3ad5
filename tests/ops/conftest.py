"""Fixtures for operating egress: a running `egress serve` with its admin endpoint.

`ops` (module scope) is the shared world of tests/conftest.py's `world`, plus: report-mode and
rate-limited skills, a metadata name, `log_allowed` on, and the admin endpoint on loopback
protected by a bearer token. Tests that edit the policy or stop the proxy start their own
with `start_ops_world`.
"""

from __future__ import annotations

import re
import socket
import ssl
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clients import RawResponse, basic, read_response
from tests.conftest import UPSTREAM_IP, TestCA
from tests.dnsserver import DnsServer
from tests.proxy import Proxy, run_proxy
from tests.upstream import Upstream, free_port, run_upstream

ADMIN_TOKEN = "ops-test-admin-token-0123456789abcdef"
NAMES = {
    "api.allowed.test": [UPSTREAM_IP], "www.allowed.test": [UPSTREAM_IP],
    "deep.sub.allowed.test": [UPSTREAM_IP], "plain.allowed.test": [UPSTREAM_IP],
    "other.test": [UPSTREAM_IP], "new.test": [UPSTREAM_IP],
    "metadata.test": ["169.254.169.254"], "loop.test": ["127.0.0.1"],
}
CERT_NAMES = ["*.allowed.test", "allowed.test", "*.sub.allowed.test", "other.test", "new.test"]
SKILLS = ["alpha", "reporter", "limited", "single", "ruled", "lavish", "ghost"]


@dataclass
class OpsWorld:
    proxy: Proxy
    tls: Upstream
    plain: Upstream
    dns: DnsServer
    ca: TestCA
    admin_port: int
    admin_token: str | None
    policy_file: Path

    @property
    def addr(self) -> tuple[str, int]:
        return (self.proxy.host, self.proxy.port)

    def auth(self, skill: str) -> str:
        return basic(skill, self.proxy.tokens[skill])

    def admin(self, method: str, path: str, *, token: str | None | bool = True) -> httpx.Response:
        """Call the admin endpoint; token=True sends the world's token, a str sends that."""
        headers = {}
        bearer = self.admin_token if token is True else token or None
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        with httpx.Client(timeout=10, trust_env=False) as client:
            return client.request(method, f"http://127.0.0.1:{self.admin_port}{path}",
                                  headers=headers)

    def metrics(self) -> dict[str, float]:
        resp = self.admin("GET", "/metrics")
        assert resp.status_code == 200, resp.text
        return parse_metrics(resp.text)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


def series(name: str, **labels: str) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{inner}}}" if labels else name


def policy_text(dns: DnsServer, tls: Upstream, plain: Upstream, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        settings:
          dns: {{nameservers: ["{dns.address}"], timeout: 2}}
          networks: {{allow: ["{UPSTREAM_IP}/32"]}}
          audit: {{log_allowed: true}}
        skills:
          alpha:
            allow:
              - host: api.allowed.test
                ports: [{tls.port}]
              - host: plain.allowed.test
                ports: [{plain.port}]
          reporter:
            mode: report
            allow:
              - host: api.allowed.test
                ports: [{tls.port}]
          limited:
            limits: {{requests_per_minute: 2}}
            allow:
              - host: api.allowed.test
                ports: [{tls.port}]
          single:
            limits: {{concurrent_connections: 1}}
            allow:
              - host: api.allowed.test
                ports: [{tls.port}]
          ruled:
            allow:
              - host: api.allowed.test
                ports: [{tls.port}]
                limits: {{requests_per_minute: 1}}
              - host: other.test
                ports: [{tls.port}]
          lavish:
            mode: report
            limits: {{requests_per_minute: 1}}
            allow:
              - host: api.allowed.test
                ports: [{tls.port}]
        """) + textwrap.dedent(extra)


@contextmanager
def start_ops_world(tmp: Path, ca: TestCA, *, token: str | None = None,
                    args: list[str] | None = None,
                    make_policy: Callable[[DnsServer, Upstream, Upstream], str] = policy_text,
                    env: dict[str, str] | None = None) -> Iterator[OpsWorld]:
    with DnsServer() as dns, \
            run_upstream(UPSTREAM_IP, ca=ca.ca, names=CERT_NAMES, tmp=str(tmp)) as tls, \
            run_upstream(UPSTREAM_IP, ca=None, names=[], tmp=str(tmp)) as plain:
        for name, ips in NAMES.items():
            dns.set(name, ips, ttl=300)
        policies = tmp / "policies"
        policies.mkdir()
        policy_file = policies / "policy.yaml"
        policy_file.write_text(make_policy(dns, tls, plain))
        admin_port = free_port()
        env = {**(env or {}), "EGRESS_ADMIN_TOKEN": token or ""}
        with run_proxy(policies, tmp / "data", SKILLS, env=env,
                       args=["--admin", f"127.0.0.1:{admin_port}", *(args or [])]) as proxy:
            wait_admin(admin_port)
            yield OpsWorld(proxy, tls, plain, dns, ca, admin_port, token, policy_file)


def wait_admin(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"admin endpoint on port {port} did not start")


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[OpsWorld]:
    with start_ops_world(tmp_path_factory.mktemp("ops"), test_ca, token=ADMIN_TOKEN) as world:
        yield world


# -- clients ---------------------------------------------------------------------------

def connect_status(world: OpsWorld, skill: str, target: str) -> RawResponse:
    """CONNECT and return egress's answer; the tunnel (if any) is closed straight away."""
    with socket.create_connection(world.addr, timeout=10) as sock:
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
                     f"Proxy-Authorization: {world.auth(skill)}\r\n\r\n".encode())
        return read_response(sock)


@contextmanager
def tunnel(world: OpsWorld, skill: str, host: str, port: int | None = None) -> Iterator[ssl.SSLSocket]:
    """An open CONNECT tunnel with TLS to the upstream, for requests with `get`."""
    port = port or world.tls.port
    sock = socket.create_connection(world.addr, timeout=10)
    try:
        target = f"{host}:{port}"
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
                     f"Proxy-Authorization: {world.auth(skill)}\r\n\r\n".encode())
        head = read_response(sock, head_only=True)
        assert head.status == 200, head
        ctx = ssl.create_default_context(cafile=world.ca.path)
        tls = ctx.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise
    try:
        yield tls
    finally:
        tls.close()


def get(tls: ssl.SSLSocket, host: str, path: str = "/echo") -> RawResponse:
    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return read_response(tls)


def wait_until(check: Callable[[], Any], *, timeout: float = 10.0, step: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy (bounded in time); return that."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def audit_where(proxy: Proxy, **fields: Any) -> list[dict[str, Any]]:
    return [r for r in proxy.audit() if all(r.get(k) == v for k, v in fields.items())]


def rule_line(policy: str, host: str, skill: str) -> int:
    """Line number of `- host: HOST` under `skill:` in a policy text (for rule labels)."""
    lines = policy.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"\s+{skill}:\s*$", line))
    return next(i for i in range(start, len(lines)) if lines[i].strip() == f"- host: {host}") + 1
