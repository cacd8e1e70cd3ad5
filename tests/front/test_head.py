"""The fast path's head reader (egress/proxy/front/head.py): malformed, oversized, pipelined and
split heads, and the same answers as mitmproxy's reader for the same bytes.

The differential part builds heads from the pieces attacks use (odd methods and targets, Host
variants, header names and values with CR, LF, NUL, folding, Transfer-Encoding and
Content-Length combinations, bare-LF line ends) and reads each with both: the fast path's
reader, and mitmproxy's as the engine uses it (h11's ReceiveBuffer, `read_request_head`,
`validate_request`, then regular mode's Host lookup for origin-form). They must agree on
refusing, and on what an accepted head is down to the Arrival the gate judges
(`same_request`, the check the addon makes at every hand-over).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy import http
from mitmproxy.net.http import url
from mitmproxy.net.http.http1 import read_request_head
from mitmproxy.proxy.layers.http import HTTPMode, validate_request
from mitmproxy.test import tflow

from egress.proxy.flows import arrival
from egress.proxy.front.head import HOSTLESS, HeadError, ProxyHead, ReceiveBuffer, read_head
from egress.proxy.handover import same_request
from egress.proxy.header_limit import MAX_HEAD_BYTES
from egress.reasons import Reason

AUTH = b"Proxy-Authorization: Basic YTpi\r\n"


def read(data: bytes) -> ProxyHead | HeadError | None:
    buf = ReceiveBuffer()
    buf += data
    return read_head(buf)


# -- malformed -----------------------------------------------------------------------------

@pytest.mark.parametrize("data, reason, detail", [
    pytest.param(b"GARBAGE\r\n\r\n", Reason.BAD_REQUEST, "unparsable request: Bad HTTP "
                 "request line", id="one word"),
    pytest.param(b"GET http://a/ HTTP/9\r\n\r\n", Reason.BAD_REQUEST, "unparsable request: "
                 "Bad HTTP request line", id="bad version"),
    pytest.param(b"CONNECT a.test HTTP/1.1\r\n\r\n", Reason.BAD_REQUEST, "unparsable request: "
                 "Bad HTTP request line", id="CONNECT without a port"),
    pytest.param(b"connect a.test:443 HTTP/1.1\r\n\r\n", Reason.BAD_REQUEST, "unparsable "
                 "request: Bad HTTP request line", id="connect in lower case"),
    pytest.param(b"GET ftp//a/ HTTP/1.1\r\n\r\n", Reason.BAD_REQUEST, "unparsable request: "
                 "Bad HTTP request line", id="target neither origin nor absolute form"),
    pytest.param(b"GET http://a/ HTTP/1.1\r\nNoColon\r\n\r\n", Reason.BAD_REQUEST,
                 "unparsable request: Invalid header line", id="header without a colon"),
    pytest.param(b"GET http://a/ HTTP/1.1\r\n folded\r\n\r\n", Reason.BAD_REQUEST,
                 "unparsable request: Invalid headers", id="fold before any header"),
    pytest.param(b"GET /x HTTP/1.1\r\n\r\n", Reason.BAD_REQUEST,
                 f"unparsable request: {HOSTLESS}", id="origin-form without Host"),
    pytest.param(b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Reason.BAD_REQUEST,
                 f"unparsable request: {HOSTLESS}", id="origin-form with two Hosts"),
    pytest.param(b"POST http://a/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                 Reason.BAD_REQUEST, "smuggling-prone request refused: multiple content-length "
                 "headers", id="two lengths"),
    pytest.param(b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2"
                 b"\r\n\r\n", Reason.BAD_REQUEST, "smuggling-prone request refused: message "
                 "with both transfer-encoding and content-length headers", id="TE and CL"),
    pytest.param(b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                 Reason.BAD_REQUEST, "smuggling-prone request refused: unexpected HTTP "
                 "transfer-encoding for request", id="TE without chunked"),
    pytest.param(b"POST http://a/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                 Reason.BAD_REQUEST, "smuggling-prone request refused: unexpected HTTP "
                 "transfer-encoding for this HTTP version", id="TE on HTTP/1.0"),
    pytest.param(b"POST http://a/ HTTP/1.1\r\nContent-Length: +1\r\n\r\n", Reason.BAD_REQUEST,
                 "smuggling-prone request refused: invalid content-length header",
                 id="signed length"),
    pytest.param(b"GET http://a/ HTTP/1.1\r\nX A: 1\r\nContent-Length: 1\r\n"
                 b"Content-Length: 1\r\n\r\n", Reason.BAD_HEADER,
                 "header name 'X A' is not a token", id="smuggling-prone, named by its header"),
    pytest.param(b"GET ftp://a:21/ HTTP/1.1\r\n\r\n", Reason.BAD_REQUEST,
                 "smuggling-prone request refused: Invalid request scheme: ftp", id="scheme"),
    pytest.param(b"CONNECT a:443 HTTP/1.1\r\nContent-Length: 3\r\n\r\n", Reason.BAD_REQUEST,
                 "CONNECT request with a body", id="CONNECT with a body"),
])
def test_malformed_heads_are_refused_as_the_engine_refuses_them(data: bytes, reason: Reason,
                                                                detail: str) -> None:
    got = read(data)
    assert isinstance(got, HeadError)
    assert (got.reason, got.detail, got.status) == (reason, detail, 400)


def test_header_bytes_egress_refuses_are_read_as_sent_for_the_gate() -> None:
    # CR inside a value and folding are not framing errors: requestcheck refuses them as
    # bad_header at the gate, on both paths (tests/adversarial/test_header_bytes.py).
    got = read(b"GET http://a/ HTTP/1.1\r\nX-A: a\rTransfer-Encoding: chunked\r\n"
               b"X-B: one\r\n two\r\n\r\n")
    assert isinstance(got, ProxyHead)
    assert got.fields == ((b"X-A", b"a\rTransfer-Encoding: chunked"), (b"X-B", b"one\r\n two"))


# -- oversized -------------------------------------------------------------------------------

def test_an_unfinished_head_past_64_kib_is_refused_with_431() -> None:
    got = read(b"GET http://a/ HTTP/1.1\r\nX-Big: " + b"a" * MAX_HEAD_BYTES)
    assert isinstance(got, HeadError)
    assert got.status == 431 and got.reason is Reason.BAD_REQUEST
    assert "larger than 65536 bytes" in got.detail


def test_a_complete_head_is_read_however_much_follows_it() -> None:
    head = b"POST http://a/ HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"
    buf = ReceiveBuffer()
    buf += head + b"x" * 100_000
    got = read_head(buf)
    assert isinstance(got, ProxyHead) and got.body == 100_000 and got.raw == head
    assert len(buf) == 100_000  # the body stays for whoever reads it next


def test_below_the_cap_an_unfinished_head_waits() -> None:
    assert read(b"GET http://a/ HTTP/1.1\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES - 100)) is None


# -- split and pipelined ------------------------------------------------------------------------

HEAD = b"GET http://a.test:8080/p?q=1 HTTP/1.1\r\nHost: a.test:8080\r\n" + AUTH + b"\r\n"


@pytest.mark.parametrize("cut", [1, 3, 4, 20, len(HEAD) - 3, len(HEAD) - 1])
def test_a_head_split_anywhere_is_read_once_complete(cut: int) -> None:
    buf = ReceiveBuffer()
    buf += HEAD[:cut]
    assert read_head(buf) is None
    buf += HEAD[cut:]
    got = read_head(buf)
    assert isinstance(got, ProxyHead)
    assert (got.host, got.port, got.path, got.raw) == ("a.test", 8080, b"/p?q=1", HEAD)


def test_byte_by_byte() -> None:
    buf = ReceiveBuffer()
    got = None
    for i in range(len(HEAD)):
        buf += HEAD[i:i + 1]
        got = read_head(buf)
        if i < len(HEAD) - 1:
            assert got is None
    assert isinstance(got, ProxyHead) and got.raw == HEAD


def test_pipelined_heads_are_read_one_at_a_time_in_order() -> None:
    second = b"CONNECT b.test:443 HTTP/1.1\r\n" + AUTH + b"\r\n"
    third = b"GARBAGE\r\n\r\n"
    buf = ReceiveBuffer()
    buf += b"\r\n" + HEAD + second + third  # a leading blank line is skipped, as the engine does
    first = read_head(buf)
    assert isinstance(first, ProxyHead) and first.raw == HEAD and not first.connect
    nxt = read_head(buf)
    assert isinstance(nxt, ProxyHead) and nxt.connect and (nxt.host, nxt.port) == ("b.test", 443)
    assert isinstance(read_head(buf), HeadError)
    assert read_head(buf) is None and len(buf) == 0


@pytest.mark.parametrize("head, keep", [
    pytest.param(HEAD, True, id="HTTP/1.1"),
    pytest.param(HEAD.replace(b"HTTP/1.1", b"HTTP/1.0"), False, id="HTTP/1.0"),
    pytest.param(HEAD.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"), False,
                 id="Connection: close"),
    pytest.param(HEAD.replace(b"HTTP/1.1", b"HTTP/1.0").replace(
        b"\r\n\r\n", b"\r\nConnection: keep-alive\r\n\r\n"), True, id="1.0 keep-alive"),
    pytest.param(HEAD.replace(b"\r\n\r\n", b"\r\nConnection: Close\r\n\r\n"), True,
                 id="tokens compared as sent, like mitmproxy"),
])
def test_keep_alive_follows_mitmproxys_rule(head: bytes, keep: bool) -> None:
    got = read(head)
    assert isinstance(got, ProxyHead) and got.keep_alive is keep


def test_the_arrival_is_what_the_addon_would_read() -> None:
    got = read(b"GET http://Example.test/a HTTP/1.1\r\nHost: example.test\r\n"
               b"Proxy-Authorization: Basic x\r\nProxy-Authorization: Basic y\r\n\r\n")
    assert isinstance(got, ProxyHead)
    a = got.arrival("conn", "127.0.0.1:1", authenticated_as=None)
    assert a.proxy_authorization == "Basic x, Basic y"  # joined, as Headers.get joins them
    assert a.head is not None and a.head.authority == ""  # regular mode drops it
    assert [k for k, _ in a.headers] == ["Host"]  # Proxy-Authorization is never forwarded


# -- the same answers as mitmproxy ----------------------------------------------------------------

METHODS = [b"GET", b"POST", b"CONNECT", b"get", b"G\x00T", b"X-Y", b"OPTIONS"]
TARGETS = [b"/", b"/a?b=1", b"*", b"http://a.test/x", b"HTTP://A.test:81/x", b"https://a.test",
           b"http://a.test:99999/", b"http://[::1]:8080/", b"http://a b/", b"a.test:443",
           b"a.test:0", b"[::1]:443", b"http://xn--bcher-kva.test/", b"ftp://a.test/",
           b"http://a.test/#f", b"//a.test/x", b"http://\xc3\xa9.test/", b"http://a.test/%zz"]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"http/1.1"]
NAMES = [b"Host", b"host", b"X-A", b"X A", b"X-A ", b"Content-Length", b"Transfer-Encoding",
         b"Connection", b"Proxy-Authorization", b"X\x00"]
VALUES = [b"a.test", b"a.test:81", b"5", b"0", b"chunked", b"gzip, chunked", b"identity",
          b"Basic YTpi", b"close", b"a\rb", b"a\x00b", b" padded ", b"caf\xc3\xa9", b"",
          b"1,1", b"+1"]


@st.composite
def heads(draw: Any) -> bytes:
    eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
    sep = draw(st.sampled_from([b" ", b" ", b"  ", b"\t"]))
    line = sep.join([draw(st.sampled_from(METHODS)), draw(st.sampled_from(TARGETS)),
                     draw(st.sampled_from(VERSIONS))])
    lines = [line]
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.integers(0, 9)) == 0:
            lines.append(b" folded")
        else:
            lines.append(draw(st.sampled_from(NAMES)) + b":"
                         + draw(st.sampled_from([b" ", b"", b"\t"]))
                         + draw(st.sampled_from(VALUES)))
    return eol.join(lines) + eol + eol


def engine_reads(data: bytes) -> tuple[str, Any]:
    """How mitmproxy's regular mode reads `data` up to its hooks: ("unparsable", None),
    ("refused", None), ("hostless", None) or ("ok", Arrival)."""
    from h11._receivebuffer import ReceiveBuffer as H11Buffer

    buf = H11Buffer()
    buf += data
    lines = buf.maybe_extract_lines()
    while lines == []:
        lines = buf.maybe_extract_lines()
    assert lines is not None
    try:
        request = read_request_head([bytes(x) for x in lines])
    except ValueError:
        return "unparsable", None
    if validate_request(HTTPMode.regular, request, True) is not None:
        return "refused", None
    connect = request.method == "CONNECT"
    if not connect:
        if not request.host:
            try:
                host, port = url.parse_authority(request.host_header or "", check=True)
            except ValueError:
                return "hostless", None
            request.data.host, request.data.port = host, port or 80
            request.scheme = "http"
        request.authority = ""
    flow = tflow.tflow()
    flow.request = request
    auth = request.headers.get("Proxy-Authorization")
    request.headers.pop("Proxy-Authorization", None)
    return "ok", arrival(flow, "connect" if connect else "http", proxy_authorization=auth)


@settings(max_examples=1500, deadline=None, database=None)
@given(heads())
def test_the_fast_path_reads_heads_as_mitmproxy_does(data: bytes) -> None:
    outcome, engine = engine_reads(data)
    got = read(data)
    if outcome != "unparsable" and data.split(b"\n", 1)[0].rstrip()[-8:] not in (
            b"HTTP/1.1", b"HTTP/1.0"):
        # Deliberately stricter: an HTTP/1 line claiming HTTP/2.0 (which the engine would
        # judge as HTTP/2) is refused.
        assert isinstance(got, HeadError) and got.detail.endswith("Unknown HTTP version")
        return
    if outcome == "ok":
        if isinstance(got, HeadError) and got.detail == "CONNECT request with a body":
            return  # the fast path refuses this rarity outright (the engine would relay it)
        assert isinstance(got, ProxyHead), (data, got)
        front = got.arrival(engine.connection, engine.peer, authenticated_as=None)
        assert same_request(front, engine), (data, front, engine)
        return
    assert isinstance(got, HeadError), (data, outcome, got)
    expected = {"unparsable": "unparsable request: ", "hostless": f"unparsable request: "
                f"{HOSTLESS}", "refused": ""}[outcome]
    assert got.detail.startswith(expected), (data, outcome, got)
    if outcome == "refused":
        assert got.head is not None and not got.detail.startswith("unparsable")


def test_http_flow_import_is_only_the_tests() -> None:
    # The reader itself loads none of mitmproxy.http (its RSS is what the fast path saves).
    import subprocess
    import sys

    code = ("import sys, egress.proxy.front.server; "
            "print(sorted(m for m in sys.modules if m in ('mitmproxy.http', "
            "'mitmproxy.proxy.layers', 'mitmproxy.tls', 'OpenSSL', 'cryptography')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    assert out == "[]"
    assert http.Request  # (this test module, unlike the fast path, uses mitmproxy.http)
