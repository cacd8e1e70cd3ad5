"""Protocol switches: `Upgrade` only for WebSocket; no CONNECT (or CONNECT-UDP) in a tunnel.

After `Upgrade: h2c` and the upstream's `101`, mitmproxy relayed the rest of the connection raw:
HTTP/2 streams with any method and authority were never checked. Every test below sends what a
hostile skill would send next and asserts the recording upstream never got it.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from tests.adversarial.conftest import AdvWorld
from tests.adversarial.wire import BioTLS, open_tunnel, recv_until_closed, wait_for
from tests.clients import basic

# What a client sends after its upgrade was accepted: the HTTP/2 preface, then (encoded as
# bytes that any raw relay would pass on) a request the policy would refuse.
H2C_TAIL = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"DELETE /v1/everything HTTP/1.1\r\n\r\n"


def h2c_request(host: str, path: str = "/v1/invoices") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            f"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n").encode()


def new_lines(adv: AdvWorld, start: int, reason: str) -> list[dict[str, Any]]:
    wait_for(lambda: any(r["reason"] == reason for r in adv.proxy.audit()[start:]))
    return [r for r in adv.proxy.audit()[start:] if r["reason"] == reason]


def test_h2c_upgrade_in_an_intercepted_tunnel_is_refused(adv: AdvWorld) -> None:
    adv.reset()
    start = len(adv.proxy.audit())
    raw = open_tunnel(adv.proxy_addr, "mallory", adv.proxy.tokens["mallory"], "api.adv.test",
                      adv.tls.port)
    client = BioTLS(raw, "api.adv.test", cafile=adv.bundle)
    raw.sendall(client.client_hello())
    client.handshake()
    client.send_records([h2c_request(f"api.adv.test:{adv.tls.port}"), H2C_TAIL])
    answer = client.read(timeout=3)
    raw.close()
    assert answer.startswith(b"HTTP/1.1 403")
    assert b'"reason": "upgrade_not_allowed"' in answer
    records = new_lines(adv, start, "upgrade_not_allowed")
    assert [(r["skill"], r["host"], r["method"]) for r in records] == [
        ("mallory", "api.adv.test", "GET")]
    assert b"h2c" not in adv.tls.received() and b"DELETE" not in adv.tls.received()


def test_h2c_upgrade_in_a_plain_tunnel_is_refused(adv: AdvWorld) -> None:
    adv.reset()
    start = len(adv.proxy.audit())
    raw = open_tunnel(adv.proxy_addr, "mallory", adv.proxy.tokens["mallory"], "plain.adv.test",
                      adv.plain.port)
    raw.sendall(h2c_request(f"plain.adv.test:{adv.plain.port}", "/") + H2C_TAIL)
    answer = recv_until_closed(raw, timeout=3)
    raw.close()
    assert answer.startswith(b"HTTP/1.1 403")
    assert len(new_lines(adv, start, "upgrade_not_allowed")) == 1
    assert adv.plain.accepted == 0


def test_h2c_upgrade_over_plain_http_is_refused(adv: AdvWorld) -> None:
    adv.reset()
    start = len(adv.proxy.audit())
    host = f"plain.adv.test:{adv.plain.port}"
    head = h2c_request(host, f"http://{host}/").replace(
        b"\r\n\r\n", f"\r\nProxy-Authorization: {basic('mallory', adv.proxy.tokens['mallory'])}"
                     f"\r\n\r\n".encode(), 1)
    with socket.create_connection(adv.proxy_addr, timeout=10) as sock:
        sock.sendall(head + H2C_TAIL)
        answer = recv_until_closed(sock, timeout=3)
    assert answer.startswith(b"HTTP/1.1 403")
    assert len(new_lines(adv, start, "upgrade_not_allowed")) == 1
    assert adv.plain.accepted == 0


@pytest.mark.parametrize("headers", [
    pytest.param("Upgrade: TLS/1.0\r\nConnection: Upgrade", id="TLS upgrade"),
    pytest.param("Upgrade: websocket, h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13",
                 id="websocket listed with h2c"),
    pytest.param("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8",
                 id="websocket of another version (mitmproxy would relay its 101 raw)"),
    pytest.param("Upgrade: websocket\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Version: 13", id="two Upgrade headers"),
])
def test_upgrades_other_than_websocket_are_refused(adv: AdvWorld, headers: str) -> None:
    adv.reset()
    start = len(adv.proxy.audit())
    raw = open_tunnel(adv.proxy_addr, "mallory", adv.proxy.tokens["mallory"], "plain.adv.test",
                      adv.plain.port)
    raw.sendall(f"GET / HTTP/1.1\r\nHost: plain.adv.test:{adv.plain.port}\r\n{headers}\r\n"
                f"\r\n".encode() + H2C_TAIL)
    answer = recv_until_closed(raw, timeout=3)
    raw.close()
    assert answer.startswith(b"HTTP/1.1 403")
    assert len(new_lines(adv, start, "upgrade_not_allowed")) == 1
    assert adv.plain.accepted == 0


def test_an_upstream_switching_to_another_protocol_is_cut_off(adv: AdvWorld) -> None:
    # A well-formed WebSocket handshake passes the request check; the (recording) upstream
    # answers `101` with `Upgrade: h2c`. mitmproxy would relay the rest raw; egress kills it.
    adv.reset()
    start = len(adv.proxy.audit())
    raw = open_tunnel(adv.proxy_addr, "mallory", adv.proxy.tokens["mallory"], "plain.adv.test",
                      adv.plain.port)
    raw.sendall(f"GET /ws HTTP/1.1\r\nHost: plain.adv.test:{adv.plain.port}\r\n"
                f"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
    assert wait_for(lambda: adv.plain.request_lines() == ["GET /ws HTTP/1.1"])
    try:
        raw.sendall(H2C_TAIL)
    except OSError:
        pass  # already closed by egress
    answer = recv_until_closed(raw, timeout=3)
    raw.close()
    assert not answer.startswith(b"HTTP/1.1 101")
    records = new_lines(adv, start, "upgrade_not_allowed")
    assert [r["detail"] for r in records] == [
        "upstream switched to a protocol other than WebSocket"]
    assert b"PRI * HTTP/2.0" not in adv.plain.received()
    assert b"DELETE" not in adv.plain.received()


# -- no tunnel inside a tunnel ----------------------------------------------------------------

def test_connect_inside_an_intercepted_tunnel_is_refused_and_audited_once(adv: AdvWorld) -> None:
    adv.reset()
    start = len(adv.proxy.audit())
    raw = open_tunnel(adv.proxy_addr, "mallory", adv.proxy.tokens["mallory"], "api.adv.test",
                      adv.tls.port)
    client = BioTLS(raw, "api.adv.test", cafile=adv.bundle)
    raw.sendall(client.client_hello())
    client.handshake()
    client.send_records([b"CONNECT other.adv.test:443 HTTP/1.1\r\nHost: other.adv.test:443\r\n\r\n"
                         b"\x16\x03\x01"])
    answer = client.read(timeout=3)
    raw.close()
    assert not answer.startswith(b"HTTP/1.1 200")
    records = new_lines(adv, start, "nested_connect")
    assert [(r["skill"], r["host"]) for r in records] == [("mallory", "api.adv.test")]
    assert len(adv.proxy.audit()[start:]) == 1  # exactly once
    assert b"CONNECT" not in adv.tls.received()


@pytest.mark.parametrize("method", ["CONNECT-UDP", "CONNECT"])
def test_connect_style_methods_in_a_plain_tunnel_are_refused(adv: AdvWorld, method: str) -> None:
    adv.reset()
    start = len(adv.proxy.audit())
    raw = open_tunnel(adv.proxy_addr, "mallory", adv.proxy.tokens["mallory"], "plain.adv.test",
                      adv.plain.port)
    target = "/.well-known/masque/udp/10.0.0.1/53/" if method == "CONNECT-UDP" else \
        "10.0.0.1:22"
    raw.sendall(f"{method} {target} HTTP/1.1\r\nHost: plain.adv.test:{adv.plain.port}\r\n"
                f"\r\n".encode())
    answer = recv_until_closed(raw, timeout=3)
    raw.close()
    assert not answer.startswith(b"HTTP/1.1 200")
    assert len(new_lines(adv, start, "nested_connect")) == 1
    assert len(adv.proxy.audit()[start:]) == 1
    assert adv.plain.accepted == 0
