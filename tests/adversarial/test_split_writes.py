"""Split writes: the first bytes of a tunnel's ClientHello, of a request inside intercepted TLS,
or of a plain-HTTP request in a tunnel arrive alone, then the rest after a pause.

mitmproxy guesses a tunnel's protocol from whatever bytes it has; given one byte it guessed
"raw TCP" and relayed the rest unjudged (no SNI check, no interception, no request checks).
egress decides the layer itself and waits, bounded, for bytes that prove the protocol.
Every test asserts on what the recording upstream received and on the audit log.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.adversarial.conftest import REAL_KEY, AdvWorld
from tests.adversarial.wire import BioTLS, open_tunnel, recv_until_closed, send_split, wait_for

PAUSE = 0.3  # long enough that mitmproxy sees the first piece as an event of its own


def tunnel(adv: AdvWorld, host: str, port: int | None = None) -> Any:
    return open_tunnel(adv.proxy_addr, "mallory", adv.proxy.tokens["mallory"], host,
                       port or adv.tls.port)


def audit_after(adv: AdvWorld, start: int, reason: str, count: int = 1) -> list[dict[str, Any]]:
    """New audit lines since `start` with `reason` (waits until `count` arrived)."""
    def found() -> list[dict[str, Any]]:
        return [r for r in adv.proxy.audit()[start:] if r["reason"] == reason]
    wait_for(lambda: len(found()) >= count)
    return found()


# -- the ClientHello -----------------------------------------------------------------------

@pytest.mark.parametrize("cuts", [
    pytest.param([1], id="first byte alone"),
    pytest.param([3], id="record type and version alone"),
    pytest.param([5], id="record header alone"),
    pytest.param([1, 2, 3, 4, 5, 6, 40], id="byte by byte, then a chunk"),
])
def test_split_clienthello_cannot_front_another_name(adv: AdvWorld, cuts: list[int]) -> None:
    adv.reset()
    start = len(adv.proxy.audit())
    raw = tunnel(adv, "pass.adv.test")
    client = BioTLS(raw, "other.adv.test", cafile=adv.ca.path)
    send_split(raw, client.client_hello(), cuts, PAUSE)
    answer = recv_until_closed(raw)
    raw.close()
    records = audit_after(adv, start, "host_mismatch")
    assert adv.tls.accepted == 0, "egress relayed a ClientHello naming another host"
    assert answer == b""
    assert [(r["decision"], r["kind"], r["host"]) for r in records] == [
        ("deny", "tls", "pass.adv.test")]


def test_split_clienthello_with_the_right_name_passes_through(adv: AdvWorld) -> None:
    adv.reset()
    raw = tunnel(adv, "pass.adv.test")
    client = BioTLS(raw, "pass.adv.test", cafile=adv.ca.path)
    send_split(raw, client.client_hello(), [1, 5], PAUSE)
    client.handshake()
    client.send_records([b"GET /split HTTP/1.1\r\nHost: pass.adv.test\r\n\r\n"])
    assert client.read(timeout=3, until=b"\r\n\r\n").startswith(b"HTTP/1.1 200")
    raw.close()
    assert adv.tls.snis() == ["pass.adv.test"]
    assert adv.tls.request_lines() == ["GET /split HTTP/1.1"]


@pytest.mark.parametrize("cuts", [pytest.param([1], id="first byte alone"),
                                  pytest.param([2, 9], id="inside the handshake header")])
def test_split_clienthello_on_an_intercepted_host_is_still_intercepted(adv: AdvWorld,
                                                                        cuts: list[int]) -> None:
    # The client trusts the upstream's CA too: a raw relay would hand it the real upstream,
    # and its DELETE would reach a host whose rule allows only GET and HEAD.
    adv.reset()
    start = len(adv.proxy.audit())
    raw = tunnel(adv, "api.adv.test")
    client = BioTLS(raw, "api.adv.test", cafile=adv.bundle)
    send_split(raw, client.client_hello(), cuts, PAUSE)
    client.handshake()
    assert "egress" in str(client.obj.getpeercert()["issuer"]).lower() or \
        "mitmproxy" in str(client.obj.getpeercert()["issuer"]).lower()
    client.send_records([b"DELETE /v1/invoices HTTP/1.1\r\nHost: api.adv.test:%d\r\n\r\n"
                         % adv.tls.port])
    answer = client.read(timeout=3, until=b"\r\n\r\n")
    raw.close()
    assert answer.startswith(b"HTTP/1.1 403")
    assert [r["method"] for r in audit_after(adv, start, "method_not_allowed")] == ["DELETE"]
    assert b"DELETE" not in adv.tls.received()


# -- inside intercepted TLS ----------------------------------------------------------------

def intercepted(adv: AdvWorld, alpn: list[str] | None = None) -> BioTLS:
    raw = tunnel(adv, "api.adv.test")
    client = BioTLS(raw, "api.adv.test", cafile=adv.bundle, alpn=alpn)
    raw.sendall(client.client_hello())
    client.handshake()
    return client


@pytest.mark.parametrize("cut", [1, 3, 7])
def test_request_split_across_tls_records_is_still_judged(adv: AdvWorld, cut: int) -> None:
    adv.reset()
    start = len(adv.proxy.audit())
    client = intercepted(adv)
    head = b"DELETE /v1/invoices HTTP/1.1\r\nHost: api.adv.test:%d\r\n\r\n" % adv.tls.port
    client.send_records([head[:cut], head[cut:]], pause=PAUSE)
    answer = client.read(timeout=3, until=b"\r\n\r\n")
    client.sock.close()
    assert answer.startswith(b"HTTP/1.1 403")
    assert [r["method"] for r in audit_after(adv, start, "method_not_allowed")] == ["DELETE"]
    assert b"DELETE" not in adv.tls.received()


def test_allowed_request_split_across_tls_records_gets_the_key(adv: AdvWorld) -> None:
    adv.reset()
    client = intercepted(adv)
    head = b"GET /v1/invoices HTTP/1.1\r\nHost: api.adv.test:%d\r\n\r\n" % adv.tls.port
    client.send_records([head[:1], head[1:12], head[12:]], pause=PAUSE)
    assert client.read(timeout=3, until=b"\r\n\r\n").startswith(b"HTTP/1.1 200")
    client.sock.close()
    assert adv.tls.request_lines() == ["GET /v1/invoices HTTP/1.1"]
    assert f"Bearer {REAL_KEY}".encode() in adv.tls.received()


def test_not_http_inside_intercepted_tls_is_refused(adv: AdvWorld) -> None:
    adv.reset()
    start = len(adv.proxy.audit())
    client = intercepted(adv)
    client.send_records([b"\x00\x01binary protocol\r\n" * 4])
    answer = client.read(timeout=3, until=b"\r\n\r\n")
    client.sock.close()
    records = audit_after(adv, start, "protocol_not_allowed")
    assert answer == b""
    assert [(r["decision"], r["host"]) for r in records] == [("deny", "api.adv.test")]
    assert b"binary protocol" not in adv.tls.received()


# -- plain HTTP in a tunnel ----------------------------------------------------------------

def test_split_plain_request_in_a_tunnel_is_still_judged(adv: AdvWorld) -> None:
    adv.reset()
    start = len(adv.proxy.audit())
    raw = tunnel(adv, "plain.adv.test", adv.plain.port)
    head = b"POST /admin HTTP/1.1\r\nHost: admin.adv.test\r\nContent-Length: 0\r\n\r\n"
    send_split(raw, head, [3], PAUSE)
    answer = recv_until_closed(raw, timeout=3)
    raw.close()
    assert answer.startswith(b"HTTP/1.1 403")
    assert [r["host"] for r in audit_after(adv, start, "host_mismatch")] == ["plain.adv.test"]
    assert b"/admin" not in adv.plain.received()


def test_split_plain_request_with_the_right_host_arrives_as_sent(adv: AdvWorld) -> None:
    adv.reset()
    raw = tunnel(adv, "plain.adv.test", adv.plain.port)
    head = b"GET /ok HTTP/1.1\r\nHost: plain.adv.test:%d\r\n\r\n" % adv.plain.port
    send_split(raw, head, [1, 4], PAUSE)
    answer = recv_until_closed(raw, timeout=2)
    raw.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert adv.plain.request_lines() == ["GET /ok HTTP/1.1"]


@pytest.mark.parametrize("first", [
    pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", id="ssh greeting"),
    pytest.param(b"\x05\x01\x00", id="socks5 hello"),
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", id="h2 prior knowledge"),
    pytest.param(b"GET / HTTP/9.9\r\n", id="unknown HTTP version"),
])
def test_not_http1_in_a_tunnel_is_refused(adv: AdvWorld, first: bytes) -> None:
    adv.reset()
    start = len(adv.proxy.audit())
    raw = tunnel(adv, "plain.adv.test", adv.plain.port)
    raw.sendall(first)
    answer = recv_until_closed(raw, timeout=3)
    raw.close()
    records = audit_after(adv, start, "protocol_not_allowed")
    assert adv.plain.accepted == 0
    assert not answer.startswith(b"SSH") and b"200" not in answer
    assert [(r["decision"], r["host"], r["port"]) for r in records] == [
        ("deny", "plain.adv.test", adv.plain.port)]
