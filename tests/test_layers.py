"""What a tunnel's first bytes are (egress/layers.py): the pure part of the layer decision."""

from __future__ import annotations

import pytest

from egress.proxy.layers import MAX_CLIENTHELLO_BYTES, MAX_REQUEST_LINE_BYTES, request_line, sniff
from tests.clients import client_hello


@pytest.mark.parametrize("data, state", [
    pytest.param(b"GET / HTTP/1.1\r\n", "complete", id="origin-form request line"),
    pytest.param(b"POST /v1/x?y=1 HTTP/1.0\n", "complete", id="HTTP/1.0 with a bare LF"),
    pytest.param(b"OPTIONS * HTTP/1.1\r\n", "complete", id="asterisk-form"),
    pytest.param(b"G", "partial", id="first byte of a method"),
    pytest.param(b"POS", "partial", id="method split before its end"),
    pytest.param(b"POST ", "partial", id="method and space"),
    pytest.param(b"POST /admin HTT", "partial", id="version split"),
    pytest.param(b"POST /admin HTTP/1.1\r", "partial", id="CR without LF yet"),
    pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", "invalid", id="ssh greeting"),
    pytest.param(b"\x05\x01\x00", "invalid", id="socks5 hello"),
    pytest.param(b"PRI * HTTP/2.0\r\n", "invalid", id="HTTP/2 preface"),
    pytest.param(b"GET / HTTP/9.9\r\n", "invalid", id="unknown version"),
    pytest.param(b"GET  / HTTP/1.1\r\n", "invalid", id="two spaces"),
    pytest.param(b"GET / HTTP/1.1 x\r\n", "invalid", id="four parts"),
    pytest.param(b"GET /\x00 HTTP/1.1\r\n", "invalid", id="NUL in the target"),
    pytest.param(b"GE\x00T", "invalid", id="NUL in the method"),
    pytest.param(b"GET /\r\n", "invalid", id="HTTP/0.9 line"),
    pytest.param(b"X" * 40 + b" / HTTP/1.1\r\n", "invalid", id="method too long"),
    pytest.param(b"GET /" + b"a" * MAX_REQUEST_LINE_BYTES, "invalid", id="line too long"),
])
def test_request_line(data: bytes, state: str) -> None:
    assert request_line(data) == state


def test_a_complete_clienthello_is_tls_with_its_sni() -> None:
    sniffed = sniff(client_hello("api.example.com"))
    assert sniffed.what == "tls"
    assert sniffed.hello is not None and sniffed.hello.sni == "api.example.com"


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 6, 9, 100, -1])
def test_every_prefix_of_a_clienthello_waits(cut: int) -> None:
    assert sniff(client_hello()[:cut]).what == "wait_tls"


@pytest.mark.parametrize("data, what", [
    pytest.param(b"\x16\x01", "other", id="not TLS version 3.x"),
    pytest.param(b"\x16\x03\x09", "other", id="unknown minor version"),
    pytest.param(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", "bad_tls",
                 id="a handshake record that is no ClientHello"),
    pytest.param(b"", "wait_http", id="nothing yet"),
    pytest.param(b"GET / HTTP/1.1\r\n", "http1", id="plain HTTP/1"),
    pytest.param(b"POS", "wait_http", id="plain HTTP/1 split"),
])
def test_sniff(data: bytes, what: str) -> None:
    assert sniff(data).what == what


def test_an_endless_clienthello_is_refused_not_waited_for() -> None:
    hello = client_hello()
    # A record header announcing more than the cap, followed by that many bytes.
    fake = b"\x16\x03\x01\xff\xff\x01\xff\xff\xff" + b"\x00" * (MAX_CLIENTHELLO_BYTES + 16)
    assert sniff(hello[:5]).what == "wait_tls"
    assert sniff(fake).what == "bad_tls"
