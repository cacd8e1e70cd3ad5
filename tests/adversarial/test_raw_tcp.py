"""`raw_tcp: true`: the one explicit way to let a non-TLS, non-HTTP protocol through a CONNECT.

Only where a rule says so, only to that host and port, and never as a way around the checks
egress can still make: a ClientHello must still name the CONNECT host, and an HTTP/1 request
is still judged like any other (Host == CONNECT host).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.adversarial.wire import BioTLS, open_tunnel, recv_until_closed, wait_for
from tests.conftest import UPSTREAM_IP, TestCA, write_policy
from tests.dnsserver import DnsServer
from tests.proxy import Proxy, run_proxy
from tests.recording import RecordingUpstream, recording_upstream

NAMES = ["db.raw.test", "norule.raw.test", "tls.raw.test"]


@dataclass
class RawWorld:
    proxy: Proxy
    plain: RecordingUpstream
    tls: RecordingUpstream
    ca: TestCA

    def tunnel(self, host: str, port: int):  # type: ignore[no-untyped-def]
        return open_tunnel((self.proxy.host, self.proxy.port), "dba", self.proxy.tokens["dba"],
                           host, port)


@pytest.fixture(scope="module")
def raw(proxy_path: str, tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[RawWorld]:
    tmp = tmp_path_factory.mktemp("raw")
    with DnsServer() as dns, recording_upstream(UPSTREAM_IP) as plain, \
            recording_upstream(UPSTREAM_IP, ca=test_ca.ca, names=NAMES) as tls:
        for name in NAMES:
            dns.set(name, [UPSTREAM_IP], ttl=300)
        policies = write_policy(tmp / "policies", f"""
            settings:
              dns: {{nameservers: ["{dns.address}"], timeout: 2}}
              networks: {{allow: ["{UPSTREAM_IP}/32"]}}
            skills:
              dba:
                allow:
                  - {{host: db.raw.test, ports: [{plain.port}, {tls.port}], raw_tcp: true}}
                  - {{host: norule.raw.test, ports: [{plain.port}]}}
            """)
        with run_proxy(policies, tmp / "data", ["dba"]) as proxy:
            yield RawWorld(proxy, plain, tls, test_ca)


GREETING = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"  # a PostgreSQL SSLRequest: neither TLS nor HTTP


def test_raw_tcp_rule_relays_another_protocol(raw: RawWorld) -> None:
    raw.plain.reset()
    sock = raw.tunnel("db.raw.test", raw.plain.port)
    sock.sendall(GREETING)
    assert wait_for(lambda: raw.plain.received() == GREETING)
    sock.sendall(b"more bytes")
    assert wait_for(lambda: raw.plain.received() == GREETING + b"more bytes")
    sock.close()


def test_without_the_rule_the_same_bytes_are_refused(raw: RawWorld) -> None:
    raw.plain.reset()
    start = len(raw.proxy.audit())
    sock = raw.tunnel("norule.raw.test", raw.plain.port)
    sock.sendall(GREETING)
    assert recv_until_closed(sock, timeout=3) == b""
    sock.close()
    assert wait_for(lambda: any(r["reason"] == "protocol_not_allowed"
                                for r in raw.proxy.audit()[start:]))
    assert raw.plain.accepted == 0


def test_raw_tcp_does_not_skip_the_sni_check(raw: RawWorld) -> None:
    raw.tls.reset()
    start = len(raw.proxy.audit())
    sock = raw.tunnel("db.raw.test", raw.tls.port)
    sock.sendall(BioTLS(sock, "tls.raw.test", cafile=raw.ca.path).client_hello())
    assert recv_until_closed(sock, timeout=3) == b""
    sock.close()
    assert wait_for(lambda: any(r["reason"] == "host_mismatch"
                                for r in raw.proxy.audit()[start:]))
    assert raw.tls.accepted == 0


def test_raw_tcp_does_not_skip_the_host_check_for_http(raw: RawWorld) -> None:
    raw.plain.reset()
    start = len(raw.proxy.audit())
    sock = raw.tunnel("db.raw.test", raw.plain.port)
    sock.sendall(b"GET /admin HTTP/1.1\r\nHost: norule.raw.test\r\n\r\n")
    # (10 s: mitmproxy, which judges HTTP inside tunnels, may start with this first request)
    assert recv_until_closed(sock, timeout=10).startswith(b"HTTP/1.1 403")
    sock.close()
    assert wait_for(lambda: any(r["reason"] == "host_mismatch"
                                for r in raw.proxy.audit()[start:]))
    assert b"/admin" not in raw.plain.received()
