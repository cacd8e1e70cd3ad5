"""Refusals that left no audit line: mitmproxy's own (a request without Host, HTTP/2 protocol
errors inside intercepted tunnels, requests it rejects as smuggling-prone) and upstream TLS
verification failures (audited as `allow`, invisible to `egress denials`). Each must now be
exactly one audit line with a reason code, and the upstream must have received nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import pytest

from tests.adversarial.wire import BioTLS, open_tunnel, recv_until_closed, wait_for
from tests.clients import basic
from tests.conftest import UPSTREAM_IP, TestCA, write_policy
from tests.dnsserver import DnsServer
from tests.proxy import Proxy, run_proxy
from tests.recording import RecordingUpstream, recording_upstream

# The recorder's certificate names these; wrongcert.una.test resolves to it but is not named.
NAMES = ["api.una.test", "plain.una.test"]


@dataclass
class UnaWorld:
    proxy: Proxy
    tls: RecordingUpstream  # offers h2, so intercepted clients get HTTP/2
    plain: RecordingUpstream
    bundle: str

    @property
    def addr(self) -> tuple[str, int]:
        return (self.proxy.host, self.proxy.port)

    def new_lines(self, start: int, reason: str | None = None) -> list[dict[str, Any]]:
        """Denials since `start` (allowed lines are logged too here: log_allowed)."""
        return [r for r in self.proxy.audit()[start:]
                if r["decision"] != "allow" and (reason is None or r["reason"] == reason)]

    def settle(self, start: int, reason: str) -> list[dict[str, Any]]:
        """Every line since `start`, once a `reason` line arrived (and a moment for strays)."""
        assert wait_for(lambda: self.new_lines(start, reason)), self.new_lines(start)
        wait_for(lambda: False, timeout=0.5)
        return self.new_lines(start)


@pytest.fixture(scope="module")
def una(proxy_path: str, tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[UnaWorld]:
    tmp = tmp_path_factory.mktemp("una")
    with DnsServer() as dns, \
            recording_upstream(UPSTREAM_IP, ca=test_ca.ca, names=NAMES,
                               alpn=("h2", "http/1.1")) as tls, \
            recording_upstream(UPSTREAM_IP) as plain:
        for name in [*NAMES, "wrongcert.una.test"]:
            dns.set(name, [UPSTREAM_IP], ttl=300)
        policies = tmp / "policies"
        policies.mkdir()
        shutil.copy(test_ca.path, policies / "upstream-ca.pem")
        write_policy(policies, f"""
            settings:
              dns: {{nameservers: ["{dns.address}"], timeout: 2}}
              networks: {{allow: ["{UPSTREAM_IP}/32"]}}
              upstream_ca: upstream-ca.pem
              audit: {{log_allowed: true}}
            skills:
              eve:
                allow:
                  - {{host: api.una.test, ports: [{tls.port}], methods: [GET]}}
                  - {{host: wrongcert.una.test, ports: [{tls.port}], methods: [GET]}}
                  - {{host: plain.una.test, ports: [{plain.port}]}}
            """)
        with run_proxy(policies, tmp / "data", ["eve"]) as proxy:
            bundle = tmp / "bundle.pem"
            bundle.write_text((tmp / "data" / "ca" / "mitmproxy-ca-cert.pem").read_text()
                              + open(test_ca.path).read())
            yield UnaWorld(proxy, tls, plain, str(bundle))


def auth(una: UnaWorld) -> str:
    return basic("eve", una.proxy.tokens["eve"])


# -- mitmproxy's HTTP/1 refusals --------------------------------------------------------------

@pytest.mark.parametrize("with_auth", [False, True], ids=["anonymous", "authenticated"])
def test_origin_form_request_without_host_is_audited_once(una: UnaWorld, with_auth: bool) -> None:
    start = len(una.proxy.audit())
    head = b"GET /v1/invoices HTTP/1.1\r\n"
    if with_auth:
        head += f"Proxy-Authorization: {auth(una)}\r\n".encode()
    with socket.create_connection(una.addr, timeout=10) as sock:
        sock.sendall(head + b"\r\n")
        answer = recv_until_closed(sock, timeout=3)
    assert answer.startswith(b"HTTP/1.1 400")
    lines = una.settle(start, "bad_request")
    assert [(r["decision"], r["reason"]) for r in lines] == [("deny", "bad_request")]
    assert "without Host" in lines[0]["detail"]
    assert una.plain.accepted == 0


def test_smuggling_prone_request_in_a_tunnel_is_audited_once(una: UnaWorld) -> None:
    una.plain.reset()
    start = len(una.proxy.audit())
    raw = open_tunnel(una.addr, "eve", una.proxy.tokens["eve"], "plain.una.test",
                      una.plain.port)
    raw.sendall(f"POST /x HTTP/1.1\r\nHost: plain.una.test:{una.plain.port}\r\n"
                f"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".encode())
    answer = recv_until_closed(raw, timeout=3)
    raw.close()
    assert not answer.startswith(b"HTTP/1.1 200")
    lines = una.settle(start, "bad_request")
    assert [(r["reason"], r["skill"], r["host"]) for r in lines] == [
        ("bad_request", "eve", "plain.una.test")]
    assert lines[0]["detail"].startswith("mitmproxy refused the request")
    assert una.plain.received() == b""


# -- HTTP/2 inside an intercepted tunnel -------------------------------------------------------

def h2_tunnel(una: UnaWorld) -> tuple[BioTLS, h2.connection.H2Connection]:
    raw = open_tunnel(una.addr, "eve", una.proxy.tokens["eve"], "api.una.test", una.tls.port)
    client = BioTLS(raw, "api.una.test", cafile=una.bundle, alpn=["h2"])
    raw.sendall(client.client_hello())
    client.handshake()
    assert client.alpn == "h2"
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False, validate_inbound_headers=False))
    conn.initiate_connection()
    client.send_records([conn.data_to_send()])
    return client, conn


H2_CASES = [
    pytest.param([(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"api.una.test"),
                  (b":path", b"/v1/x"), (b"host", b"other.una.test")],
                 id=":authority differs from host"),
    pytest.param([(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https"),
                  (b":authority", b"api.una.test"), (b":path", b"/chat")],
                 id="extended CONNECT"),
    pytest.param([(b":method", b"CONNECT"), (b":authority", b"10.0.0.1:22")],
                 id="HTTP/2 CONNECT"),
    pytest.param([(b":method", b"GET"), (b":path", b"/v1/x")], id="no scheme"),
]


@pytest.mark.parametrize("headers", H2_CASES)
def test_http2_protocol_errors_are_audited_once(una: UnaWorld,
                                                headers: list[tuple[bytes, bytes]]) -> None:
    una.tls.reset()
    start = len(una.proxy.audit())
    client, conn = h2_tunnel(una)
    conn.send_headers(1, headers, end_stream=True)
    client.send_records([conn.data_to_send()])
    client.read(timeout=3)
    client.sock.close()
    lines = una.settle(start, "protocol_error")
    assert [(r["decision"], r["reason"], r["skill"], r["host"]) for r in lines] == [
        ("deny", "protocol_error", "eve", "api.una.test")]
    assert b"/v1/x" not in una.tls.received() and b"/chat" not in una.tls.received()


# -- upstream TLS ----------------------------------------------------------------------------

def test_upstream_tls_failure_is_a_denial_egress_denials_shows(una: UnaWorld) -> None:
    una.tls.reset()
    start = len(una.proxy.audit())
    raw = open_tunnel(una.addr, "eve", una.proxy.tokens["eve"], "wrongcert.una.test",
                      una.tls.port)
    client = BioTLS(raw, "wrongcert.una.test", cafile=una.bundle)
    raw.sendall(client.client_hello())
    client.handshake()
    head = b"GET /v1/x HTTP/1.1\r\nHost: wrongcert.una.test\r\n\r\n"
    client.send_records([head])
    first = client.read(timeout=2)
    client.send_records([head])  # a retry on the same connection
    second = client.read(timeout=2)
    raw.close()
    assert first.startswith(b"HTTP/1.1 502") or second.startswith(b"HTTP/1.1 502")
    assert b'"reason": "upstream_tls_failed"' in first + second  # an agent-readable reply
    lines = una.settle(start, "upstream_tls_failed")
    assert [(r["decision"], r["reason"], r["skill"], r["host"]) for r in lines] == [
        ("deny", "upstream_tls_failed", "eve", "wrongcert.una.test")]
    # Each 502 names the audit line that refused the tunnel (what an investigator looks up).
    named = re.findall(rb"X-Egress-Request-Id: ([0-9a-f]+)", first + second)
    assert named and {n.decode() for n in named} == {lines[0]["id"]}
    requests = [r for r in una.proxy.audit()[start:] if r["kind"] == "http"]
    assert requests == []  # never audited as an allowed request
    assert una.tls.received() == b""  # nothing went to the unverified upstream
    out = subprocess.run(
        [str(Path(sys.executable).with_name("egress")), "denials", "--json",
         "--data-dir", str(una.proxy.data_dir), "--reason", "upstream_tls_failed"],
        capture_output=True, text=True, timeout=30, check=True).stdout
    shown = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert {r["host"] for r in shown} == {"wrongcert.una.test"}


def test_upstream_tls_failure_of_a_plain_proxy_request_is_audited(una: UnaWorld) -> None:
    # `GET https://...` sent to the proxy itself (no CONNECT): mitmproxy dials TLS upstream.
    una.tls.reset()
    start = len(una.proxy.audit())
    with socket.create_connection(una.addr, timeout=10) as sock:
        sock.sendall(f"GET https://wrongcert.una.test:{una.tls.port}/v1/x HTTP/1.1\r\n"
                     f"Host: wrongcert.una.test:{una.tls.port}\r\n"
                     f"Proxy-Authorization: {auth(una)}\r\n\r\n".encode())
        answer = recv_until_closed(sock, timeout=3)
    assert answer.startswith(b"HTTP/1.1 502")
    lines = una.settle(start, "upstream_tls_failed")
    assert [(r["reason"], r["skill"], r["port"]) for r in lines] == [
        ("upstream_tls_failed", "eve", una.tls.port)]
    # The host is the SNI mitmproxy sent upstream; for plain-HTTP `https://` requests that is
    # today the pinned address, not the name (the request host is rewritten to pin the IP).
    assert lines[0]["host"] in ("wrongcert.una.test", UPSTREAM_IP)
    assert una.tls.received() == b""
