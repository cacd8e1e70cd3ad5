"""Slow and idle clients: unfinished heads, silent connections, half ClientHellos, and a flood of
connections that never authenticate. Before, each lived until mitmproxy's own 600 s inactivity
timeout (or forever while dripping a byte now and then), with no audit line.

This module runs its own egress with short limits (settings.connections) so the suite stays
fast; every close must come with exactly one audit line naming its reason.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.adversarial.wire import BioTLS, open_tunnel, wait_for
from tests.clients import basic, read_response
from tests.conftest import UPSTREAM_IP, TestCA, write_policy
from tests.dnsserver import DnsServer
from tests.proxy import Proxy, run_proxy
from tests.recording import RecordingUpstream, recording_upstream

HEAD, PRE_AUTH, IDLE, HELLO, CAP = 2, 2, 3, 2, 4
NAMES = ["pass.slow.test", "api.slow.test", "plain.slow.test"]


@dataclass
class SlowWorld:
    proxy: Proxy
    tls: RecordingUpstream
    plain: RecordingUpstream
    ca: TestCA
    bundle: str

    @property
    def addr(self) -> tuple[str, int]:
        return (self.proxy.host, self.proxy.port)

    def tunnel(self, host: str, port: int) -> socket.socket:
        return open_tunnel(self.addr, "sloth", self.proxy.tokens["sloth"], host, port)

    def lines(self, start: int, reason: str) -> list[dict[str, Any]]:
        return [r for r in self.proxy.audit()[start:] if r["reason"] == reason]


@pytest.fixture(scope="module")
def slow(proxy_path: str, tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[SlowWorld]:
    tmp = tmp_path_factory.mktemp("slow")
    with DnsServer() as dns, \
            recording_upstream(UPSTREAM_IP, ca=test_ca.ca, names=NAMES) as tls, \
            recording_upstream(UPSTREAM_IP) as plain:
        for name in NAMES:
            dns.set(name, [UPSTREAM_IP], ttl=300)
        policies = tmp / "policies"
        policies.mkdir()
        shutil.copy(test_ca.path, policies / "upstream-ca.pem")
        write_policy(policies, f"""
            settings:
              dns: {{nameservers: ["{dns.address}"], timeout: 2}}
              networks: {{allow: ["{UPSTREAM_IP}/32"]}}
              upstream_ca: upstream-ca.pem
              connections:
                request_head_timeout: {HEAD}s
                idle_before_auth: {PRE_AUTH}s
                idle_timeout: {IDLE}s
                clienthello_timeout: {HELLO}s
                max_unauthenticated_per_address: {CAP}
            skills:
              sloth:
                allow:
                  - {{host: pass.slow.test, ports: [{tls.port}]}}
                  - {{host: api.slow.test, ports: [{tls.port}], methods: [GET]}}
                  - {{host: plain.slow.test, ports: [{plain.port}]}}
            """)
        with run_proxy(policies, tmp / "data", ["sloth"]) as proxy:
            bundle = tmp / "bundle.pem"
            bundle.write_text((tmp / "data" / "ca" / "mitmproxy-ca-cert.pem").read_text()
                              + open(test_ca.path).read())
            yield SlowWorld(proxy, tls, plain, test_ca, str(bundle))


def closed_after(sock: socket.socket, limit: float, drip: bytes | None = None,
                 every: float = 0.4) -> float | None:
    """Seconds until the peer closed `sock` (None: still open after `limit`). With `drip`,
    send one byte of it every `every` seconds meanwhile (a slowloris client)."""
    started = time.monotonic()
    sock.settimeout(every)
    sent = 0
    while time.monotonic() - started < limit:
        try:
            data = sock.recv(65536)
            if not data:
                return time.monotonic() - started
            continue  # an answer (e.g. 407): keep waiting for the close
        except TimeoutError:
            pass
        except OSError:
            return time.monotonic() - started
        if drip and sent < len(drip):
            try:
                sock.sendall(drip[sent:sent + 1])
            except OSError:
                return time.monotonic() - started
            sent += 1
    return None


def connect(slow: SlowWorld) -> socket.socket:
    return socket.create_connection(slow.addr, timeout=10)


def metrics(slow: SlowWorld) -> str:
    import urllib.request
    admin = slow.proxy.process.args[slow.proxy.process.args.index("--admin") + 1]  # type: ignore
    return urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()


def unauthenticated_drop_to(slow: SlowWorld, count: int) -> bool:
    """Wait until egress has seen enough unauthenticated connections close."""
    return wait_for(lambda: f"egress_unauthenticated_connections {count}\n" in metrics(slow))


# -- before authentication -------------------------------------------------------------------

def test_a_silent_connection_is_closed_and_audited(slow: SlowWorld) -> None:
    start = len(slow.proxy.audit())
    with connect(slow) as sock:
        took = closed_after(sock, PRE_AUTH + 4)
    assert took is not None and PRE_AUTH - 0.5 <= took <= PRE_AUTH + 2.5
    assert wait_for(lambda: slow.lines(start, "auth_timeout"))
    [line] = slow.lines(start, "auth_timeout")
    assert (line["decision"], line["kind"], line["skill"]) == ("deny", "connection", None)


def test_a_dripped_request_head_is_cut_off_though_never_idle(slow: SlowWorld) -> None:
    start = len(slow.proxy.audit())
    with connect(slow) as sock:
        sock.sendall(b"GET http://plain.slow.test/ HTTP/1.1\r\n")
        took = closed_after(sock, HEAD + 4, drip=b"X-Slow: " + b"a" * 200)
    assert took is not None and took <= HEAD + 2.5
    assert wait_for(lambda: slow.lines(start, "request_head_timeout"))
    assert len(slow.lines(start, "request_head_timeout")) == 1
    assert slow.plain.accepted == 0


def test_after_a_407_an_idle_connection_is_closed(slow: SlowWorld) -> None:
    start = len(slow.proxy.audit())
    with connect(slow) as sock:
        sock.sendall(b"GET http://plain.slow.test/ HTTP/1.1\r\nHost: plain.slow.test\r\n\r\n")
        assert read_response(sock).status == 407
        took = closed_after(sock, PRE_AUTH + 4)
    assert took is not None
    assert wait_for(lambda: slow.lines(start, "auth_timeout"))


def test_unauthenticated_connections_per_address_are_capped(slow: SlowWorld) -> None:
    assert unauthenticated_drop_to(slow, 0)  # connections of earlier tests have gone
    start = len(slow.proxy.audit())
    held = [connect(slow) for _ in range(CAP)]
    try:
        time.sleep(0.3)
        with connect(slow) as extra:
            assert closed_after(extra, 2) is not None  # refused at once
        assert wait_for(lambda: slow.lines(start, "unauthenticated_limit"))
        # One of them authenticates: a slot frees up for a new connection.
        held[0].sendall(f"CONNECT plain.slow.test:{slow.plain.port} HTTP/1.1\r\nHost: x\r\n"
                        f"Proxy-Authorization: {basic('sloth', slow.proxy.tokens['sloth'])}"
                        f"\r\n\r\n".encode())
        assert read_response(held[0], head_only=True).status == 200
        with connect(slow) as again:
            assert closed_after(again, 0.8) is None  # accepted, open
    finally:
        for sock in held:
            sock.close()
    assert len(slow.lines(start, "unauthenticated_limit")) == 1
    assert unauthenticated_drop_to(slow, 0)  # leave no slot taken for the next test


# -- tunnels -----------------------------------------------------------------------------------

def test_a_half_clienthello_is_cut_off(slow: SlowWorld) -> None:
    start = len(slow.proxy.audit())
    sock = slow.tunnel("pass.slow.test", slow.tls.port)
    hello = BioTLS(sock, "pass.slow.test", cafile=slow.ca.path).client_hello()
    sock.sendall(hello[:10])
    took = closed_after(sock, HELLO + 4, drip=hello[10:40])
    sock.close()
    assert took is not None and took <= HELLO + 2.5
    assert wait_for(lambda: slow.lines(start, "clienthello_timeout"))
    [line] = slow.lines(start, "clienthello_timeout")
    assert (line["skill"], line["host"], line["port"]) == ("sloth", "pass.slow.test",
                                                            slow.tls.port)
    assert slow.tls.accepted == 0 or slow.tls.received() == b""


def test_a_dripped_request_line_in_a_plain_tunnel_is_cut_off(slow: SlowWorld) -> None:
    start = len(slow.proxy.audit())
    sock = slow.tunnel("plain.slow.test", slow.plain.port)
    sock.sendall(b"GE")
    took = closed_after(sock, HEAD + 4, drip=b"T /" + b"a" * 100)
    sock.close()
    assert took is not None and took <= HEAD + 2.5
    assert wait_for(lambda: slow.lines(start, "request_head_timeout"))
    assert slow.lines(start, "request_head_timeout")[0]["host"] == "plain.slow.test"


def test_a_dripped_head_inside_intercepted_tls_is_cut_off(slow: SlowWorld) -> None:
    start = len(slow.proxy.audit())
    sock = slow.tunnel("api.slow.test", slow.tls.port)
    client = BioTLS(sock, "api.slow.test", cafile=slow.bundle)
    sock.sendall(client.client_hello())
    client.handshake()
    client.send_records([b"GET /v1 HTTP/1.1\r\nHost: api.slow.test\r\n"])
    deadline = time.monotonic() + HEAD + 4
    closed = False
    while time.monotonic() < deadline and not closed:
        try:
            client.send_records([b"X"])
        except OSError:
            closed = True
        closed = closed or client.read(timeout=0.4) == b"" and _peer_closed(sock)
    sock.close()
    assert closed
    assert wait_for(lambda: slow.lines(start, "request_head_timeout"))
    assert b"GET /v1" not in slow.tls.received()


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the peer closed `sock` (unread bytes, e.g. TLS session tickets, are dropped)."""
    sock.settimeout(0.05)
    for _ in range(100):
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False


def test_an_idle_tunnel_is_closed_and_an_active_one_is_not(slow: SlowWorld) -> None:
    start = len(slow.proxy.audit())
    idle = slow.tunnel("pass.slow.test", slow.tls.port)
    busy = slow.tunnel("pass.slow.test", slow.tls.port)
    clients = []
    for sock in (idle, busy):
        client = BioTLS(sock, "pass.slow.test", cafile=slow.ca.path)
        sock.sendall(client.client_hello())
        client.handshake()
        clients.append(client)
    # The busy one asks something every second for longer than the idle timeout.
    began = time.monotonic()
    while time.monotonic() - began < IDLE + 1.5:
        clients[1].send_records([b"GET /tick HTTP/1.1\r\nHost: pass.slow.test\r\n\r\n"])
        assert clients[1].read(timeout=1).startswith(b"HTTP/1.1 200")
    assert _peer_closed(idle)
    assert not _peer_closed(busy)
    idle.close()
    busy.close()
    assert wait_for(lambda: slow.lines(start, "idle_timeout"))
    [line] = slow.lines(start, "idle_timeout")
    assert (line["skill"], line["host"], line["kind"]) == ("sloth", "pass.slow.test",
                                                            "connection")


def test_keep_alive_requests_with_pauses_are_not_head_timeouts(slow: SlowWorld) -> None:
    start = len(slow.proxy.audit())
    with connect(slow) as sock:
        for _ in range(3):
            sock.sendall(f"GET http://plain.slow.test:{slow.plain.port}/ka HTTP/1.1\r\n"
                         f"Host: plain.slow.test:{slow.plain.port}\r\nProxy-Authorization: "
                         f"{basic('sloth', slow.proxy.tokens['sloth'])}\r\n\r\n".encode())
            assert read_response(sock).status == 200
            time.sleep(HEAD + 0.5)  # longer than the head timeout, shorter than idle
    assert slow.lines(start, "request_head_timeout") == []
    assert slow.lines(start, "idle_timeout") == []


def test_metrics_show_the_limits_and_unauthenticated_connections(slow: SlowWorld) -> None:
    assert unauthenticated_drop_to(slow, 0)
    with connect(slow):
        time.sleep(0.2)
        text = metrics(slow)
    assert f'egress_connection_limit{{limit="request_head_timeout_seconds"}} {HEAD}' in text
    assert f'egress_connection_limit{{limit="idle_timeout_seconds"}} {IDLE}' in text
    assert f'egress_connection_limit{{limit="max_unauthenticated_per_address"}} {CAP}' in text
    assert "egress_unauthenticated_connections 1" in text
    assert 'egress_decisions_total{skill="",decision="deny",reason="auth_timeout"}' in text
