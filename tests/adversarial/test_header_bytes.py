"""Header bytes: a bare CR, LF, NUL or other control character in a header is refused and audited.

`X-A: a\\rTransfer-Encoding: chunked` reached the upstream byte for byte (issue 17): an upstream
that takes a lone CR as a line end sees a header egress never judged. RFC 9110 5.5 lets a
recipient reject such a field; egress does, with 400 `bad_header`, on plain HTTP and inside
intercepted tunnels. What mitmproxy itself refuses first (an invalid header name; a CR in the
request line) is asserted here too: nothing reaches the upstream, and the audit log has one line.
HTTP/2 field values with CR, LF or NUL are refused by the h2 library before any egress hook.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.adversarial.reqworld import (
    ReqWorld,
    h1_in_tunnel,
    h1_plain,
    h2_head,
    h2_in_tunnel,
    req_world,
    wait_for,
)
from tests.clients import RawResponse
from tests.conftest import TestCA


@pytest.fixture(scope="module")
def rw(proxy_path: str, tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[ReqWorld]:
    with req_world(tmp_path_factory.mktemp("hdr"), test_ca) as world:
        yield world


# Header lines egress must refuse itself (mitmproxy accepts them).
VALUE_TRICKS = [
    pytest.param(b"X-A: a\rTransfer-Encoding: chunked", "bare CR", id="bare CR (issue 17)"),
    pytest.param(b"X-A: a\r\rHost: other.req.test", "bare CR", id="CR CR"),
    pytest.param(b"X-A: a\x00b", "NUL", id="NUL"),
    pytest.param(b"X-A: a\x0bb", "control character", id="vertical tab"),
    pytest.param(b"X-A: a\x1cb", "control character", id="file separator (splitlines breaks)"),
    pytest.param(b"X-A: a\r\n Transfer-Encoding: chunked", "obsolete line folding",
                 id="obsolete line folding"),
    pytest.param(b"X-A: a\r\n\tb", "obsolete line folding", id="folding with a tab"),
]


def _head(host: str, port: int, line: bytes, *, target: str = "/v1/invoices",
          extra: bytes = b"") -> bytes:
    return (f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n".encode() + extra + line
            + b"\r\nConnection: close\r\n\r\n")


def _assert_refused(rw: ReqWorld, answer: RawResponse | None, before: int, what: str) -> None:
    assert answer is not None and answer.status == 400, answer
    assert answer.json()["reason"] == "bad_header"
    record = rw.proxy.audit_for(answer.request_id)
    assert (record["decision"], record["reason"]) == ("deny", "bad_header")
    assert what in record["detail"]
    assert rw.audit_after(before) == [record]


@pytest.mark.parametrize("line, what", VALUE_TRICKS)
@pytest.mark.parametrize("host", ["api.req.test", "open.req.test"])
def test_tunnel_refuses_control_bytes_in_values(rw: ReqWorld, host: str, line: bytes,
                                                what: str) -> None:
    rw.reset()
    before = rw.audit_count()
    answer = h1_in_tunnel(rw, host, _head(host, rw.tls.port, line))
    _assert_refused(rw, answer, before, what)
    assert rw.tls.received() == b""


@pytest.mark.parametrize("line, what", VALUE_TRICKS)
def test_plain_http_refuses_control_bytes_in_values(rw: ReqWorld, line: bytes, what: str) -> None:
    rw.reset()
    before = rw.audit_count()
    port = rw.plain.port
    answer = h1_plain(rw, _head("plainopen.req.test", port, line,
                                target=f"http://plainopen.req.test:{port}/x",
                                extra=f"Proxy-Authorization: {rw.auth()}\r\n".encode()))
    _assert_refused(rw, answer, before, what)
    assert rw.plain.received() == b""


def test_two_host_headers_are_refused(rw: ReqWorld) -> None:
    rw.reset()
    before = rw.audit_count()
    port = rw.tls.port
    answer = h1_in_tunnel(rw, "open.req.test", _head("open.req.test", port,
                                                     f"Host: open.req.test:{port}".encode()))
    _assert_refused(rw, answer, before, "more than one Host header")
    assert rw.tls.received() == b""


@pytest.mark.parametrize("line", [
    pytest.param(b"X-A\rTransfer-Encoding: chunked", id="CR in a name"),
    pytest.param(b"X\x00A: b", id="NUL in a name"),
    pytest.param(b"X A: b", id="space in a name"),
])
def test_invalid_header_names_never_reach_the_upstream(rw: ReqWorld, line: bytes) -> None:
    # mitmproxy's own header validation answers these (its 400, not egress's JSON), after
    # running egress's requestheaders hook, which audits them.
    rw.reset()
    before = rw.audit_count()
    answer = h1_in_tunnel(rw, "open.req.test", _head("open.req.test", rw.tls.port, line))
    assert answer is None or answer.status == 400, answer
    records = rw.audit_after(before)
    assert [(r["decision"], r["reason"]) for r in records] == [("deny", "bad_header")]
    assert "is not a token" in records[0]["detail"]
    assert rw.tls.received() == b""


def test_cr_in_the_request_line_never_reaches_the_upstream(rw: ReqWorld) -> None:
    # bytes.split() takes CR as whitespace: mitmproxy refuses the request line (400).
    rw.reset()
    before = rw.audit_count()
    head = (f"GET /v1/invoices\rX HTTP/1.1\r\nHost: open.req.test:{rw.tls.port}\r\n"
            "Connection: close\r\n\r\n").encode()
    answer = h1_in_tunnel(rw, "open.req.test", head)
    assert answer is None or answer.status == 400, answer
    assert [r["reason"] for r in rw.audit_after(before)] == ["bad_request"]
    assert rw.tls.received() == b""


def test_lf_line_ends_are_rewritten_not_smuggled(rw: ReqWorld) -> None:
    # A bare LF ends a header line for mitmproxy as for every upstream; what goes out is
    # re-assembled with CR LF, so both read the same two headers.
    rw.reset()
    port = rw.tls.port
    answer = h1_in_tunnel(rw, "open.req.test", _head("open.req.test", port, b"X-A: a\nX-B: b"))
    assert answer is not None and answer.status == 200
    assert wait_for(lambda: b"X-A: a\r\nX-B: b\r\n" in rw.tls.received())


def test_tab_and_obs_text_in_values_pass(rw: ReqWorld) -> None:
    rw.reset()
    answer = h1_in_tunnel(rw, "open.req.test", _head("open.req.test", rw.tls.port,
                                                     "X-A: a\tb caf\u00e9".encode()))
    assert answer is not None and answer.status == 200
    assert wait_for(lambda: "X-A: a\tb caf\u00e9\r\n".encode() in rw.tls.received())


# -- HTTP/2 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("header", [
    pytest.param((b"x-a", b"a\rtransfer-encoding: chunked"), id="bare CR"),
    pytest.param((b"x-a", b"a\x00b"), id="NUL"),
    pytest.param((b"x-a", b"a\nb"), id="LF"),
    pytest.param((b"x-a\r", b"b"), id="CR in a name"),
])
def test_h2_control_bytes_never_reach_the_upstream(rw: ReqWorld, header: tuple[bytes, bytes]
                                                    ) -> None:
    rw.reset()
    answer = h2_in_tunnel(rw, "h2open.req.test",
                          h2_head("h2open.req.test", rw.h2.port, b"/x", extra=[header]))
    assert answer.status is None and answer.reset, answer  # h2 refuses the stream or connection
    assert rw.h2.requests == []


@pytest.mark.parametrize("header", [
    pytest.param((b"x-a", b"a\x0bb"), id="vertical tab"),
    pytest.param((b"x-a", b"a\x7fb"), id="DEL"),
])
def test_h2_other_control_bytes_are_refused_by_egress(rw: ReqWorld,
                                                       header: tuple[bytes, bytes]) -> None:
    # h2 lets these through (RFC 9113 only forbids CR, LF, NUL); egress refuses them itself.
    rw.reset()
    before = rw.audit_count()
    answer = h2_in_tunnel(rw, "h2open.req.test",
                          h2_head("h2open.req.test", rw.h2.port, b"/x", extra=[header]))
    assert answer.status == 400 and answer.json()["reason"] == "bad_header"
    assert [r["reason"] for r in rw.audit_after(before)] == ["bad_header"]
    assert rw.h2.requests == []


def test_h2_protocol_error_on_header_bytes_is_audited(rw: ReqWorld) -> None:
    rw.reset()
    before = rw.audit_count()
    answer = h2_in_tunnel(rw, "h2open.req.test", h2_head(
        "h2open.req.test", rw.h2.port, b"/x", extra=[(b"x-a", b"a\rtransfer-encoding: chunked")]))
    assert answer.status is None and rw.h2.requests == []
    records = rw.audit_after(before, wait=2)
    assert [r["decision"] for r in records] == ["deny"]
