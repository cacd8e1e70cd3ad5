"""Shared fixtures: a test CA, loopback upstreams, a real DNS server, and a running egress.

The end-to-end "world": every test host name resolves (through a dnspython DNS server on
loopback) to 127.0.0.2, where real HTTP/1.1+HTTP/2 TLS and plain-HTTP upstreams listen. The
policy opens only 127.0.0.2/32, so the rest of loopback (egress itself on 127.0.0.1) stays
denied. Denials in these tests therefore come from the policy, never from DNS luck.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.dnsserver import DnsServer
# Headless Chromium fixture, and the hook that lets it save a screenshot when a test failed.
from tests.parts.browser import browser, pytest_runtest_makereport  # noqa: F401
from tests.proxy import Proxy, proxy_path, run_proxy  # noqa: F401  (proxy_path: autouse)
from tests.upstream import Upstream, free_port, run_upstream

UPSTREAM_IP = "127.0.0.2"

# Names the e2e zone knows; all point at the upstream address.
E2E_NAMES = [
    "api.allowed.test", "www.allowed.test", "deep.sub.allowed.test", "allowed.test",
    "evilallowed.test", "allowed.test.evil.test", "other.test", "plain.allowed.test",
    "xn--bcher-kva.allowed.test", "closed.allowed.test",
]


@dataclass
class TestCA:
    __test__ = False

    ca: trustme.CA
    path: str  # PEM of the CA certificate, for clients to trust the upstreams


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "test-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return TestCA(ca, str(path))


@dataclass
class World:
    proxy: Proxy
    tls: Upstream
    plain: Upstream
    dns: DnsServer
    ca: TestCA
    closed_port: int = 0  # allowed for closed.allowed.test; nothing listens there

    @property
    def proxy_addr(self) -> tuple[str, int]:
        return (self.proxy.host, self.proxy.port)


def write_policy(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policy.yaml").write_text(textwrap.dedent(text))
    return directory


@pytest.fixture(scope="module")
def world(proxy_path: str, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
          test_ca: TestCA) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("world")
    with DnsServer() as dns, \
            run_upstream(UPSTREAM_IP, ca=test_ca.ca, names=["*.allowed.test", "allowed.test",
                         "other.test", "*.sub.allowed.test", "evilallowed.test",
                         "allowed.test.evil.test"], tmp=str(tmp)) as tls, \
            run_upstream(UPSTREAM_IP, ca=None, names=[], tmp=str(tmp)) as plain:
        for name in E2E_NAMES:
            dns.set(name, [UPSTREAM_IP], ttl=300)
        closed = free_port()
        policies = write_policy(tmp / "policies", f"""
            settings:
              dns: {{nameservers: ["{dns.address}"], timeout: 2}}
              networks: {{allow: ["{UPSTREAM_IP}/32"]}}
            skills:
              alpha:
                allow:
                  - host: api.allowed.test
                    ports: [{tls.port}]
                  - host: "*.allowed.test"
                    ports: [{tls.port}]
                  - host: plain.allowed.test
                    ports: [{plain.port}]
                  - host: closed.allowed.test
                    ports: [{closed}]
              beta:
                allow:
                  - host: other.test
                    ports: [{tls.port}]
              idle: {{}}
            """)
        with run_proxy(policies, tmp / "data", ["alpha", "beta", "idle", "ghost"]) as proxy:
            yield World(proxy, tls, plain, dns, test_ca, closed)
