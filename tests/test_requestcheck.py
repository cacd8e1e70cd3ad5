"""requestcheck: the request-head checks as tables over plain data (no proxy)."""

from __future__ import annotations

import pytest

from egress.proxy.requestcheck import (
    RequestHead,
    authority_problem,
    check_head,
    header_problem,
    judged_path,
    method_problem,
    target_problem,
)
from egress.reasons import Reason

BAD_HEADER, TARGET, MISMATCH = Reason.BAD_HEADER, Reason.BAD_REQUEST_TARGET, Reason.HOST_MISMATCH


@pytest.mark.parametrize("fields, detail", [
    pytest.param([(b"X-A", b"a b\tc")], None, id="space and tab inside a value"),
    pytest.param([(b"X-A", b"")], None, id="empty value"),
    pytest.param([(b"X-A", "caf\u00e9".encode())], None, id="obs-text bytes"),
    pytest.param([(b"X-A", b"a\rTransfer-Encoding: chunked")], "header 'X-A': bare CR in the value",
                 id="bare CR (issue 17)"),
    pytest.param([(b"X-A", b"a\r\n b")],
                 "header 'X-A': obsolete line folding (a value continued on the next line)",
                 id="obsolete line folding"),
    pytest.param([(b"X-A", b"a\nb")], "header 'X-A': LF in the value", id="LF"),
    pytest.param([(b"X-A", b"a\x00b")], "header 'X-A': NUL in the value", id="NUL"),
    pytest.param([(b"X-A", b"a\x0bb")], "header 'X-A': control character in the value",
                 id="vertical tab (a line break to str.splitlines)"),
    pytest.param([(b"X-A", b"a\x7fb")], "header 'X-A': control character in the value", id="DEL"),
    pytest.param([(b"X-A\r", b"a")], "header name 'X-A\\r' is not a token", id="CR in a name"),
    pytest.param([(b"X\x00A", b"a")], "header name 'X\\x00A' is not a token", id="NUL in a name"),
    pytest.param([(b"X A", b"a")], "header name 'X A' is not a token", id="space in a name"),
    pytest.param([(b"", b"a")], "header name '' is not a token", id="empty name"),
    pytest.param([(b"Ok", b"1"), (b"X-B", b"\x01")], "header 'X-B': control character in the value",
                 id="the second header is checked too"),
])
def test_header_problem(fields: list[tuple[bytes, bytes]], detail: str | None) -> None:
    problem = header_problem(fields)
    assert (problem and (problem.reason, problem.detail)) == (detail and (BAD_HEADER, detail))


def test_header_problem_never_quotes_a_value() -> None:
    problem = header_problem([(b"Authorization", b"Bearer sk_live_secret\r\n x")])
    assert problem is not None and "sk_live" not in problem.detail


@pytest.mark.parametrize("method, target, detail", [
    pytest.param("GET", b"/v1/invoices?x=1&y=%2F..%2F", None, id="origin-form with a query"),
    pytest.param("GET", b"/", None, id="root"),
    pytest.param("OPTIONS", b"*", None, id="asterisk-form for OPTIONS"),
    pytest.param("GET", b"/v1/a%20b", None, id="escaped space"),
    pytest.param("GET", "/v1/caf\u00e9".encode(), None, id="raw non-ASCII (judged by path rules)"),
    pytest.param("GET", b"*", "request target is not an origin-form path (it must start with '/')",
                 id="asterisk-form for GET"),
    pytest.param("GET", b"https://other.test/x",
                 "request target is not an origin-form path (it must start with '/')",
                 id="absolute URI as an HTTP/2 :path"),
    pytest.param("GET", b"other.test:443",
                 "request target is not an origin-form path (it must start with '/')",
                 id="authority-form"),
    pytest.param("GET", b"", "request target is not an origin-form path (it must start with '/')",
                 id="empty"),
    pytest.param("GET", b"/v1/invoices#/../../customers/cus_123",
                 "request target holds a fragment ('#'); clients never send one",
                 id="fragment (issue 17)"),
    pytest.param("GET", b"/v1/invoices?q=#x",
                 "request target holds a fragment ('#'); clients never send one",
                 id="fragment after a query"),
    pytest.param("GET", b"/v1/invoices /admin", "request target holds a space or control character",
                 id="space (an HTTP/2 :path becoming two HTTP/1 tokens)"),
    pytest.param("GET", b"/v1/a\x00", "request target holds a space or control character",
                 id="NUL"),
    pytest.param("GET", b"/v1/a\rb", "request target holds a space or control character", id="CR"),
    pytest.param("GET", b"/v1/a\tb", "request target holds a space or control character", id="tab"),
    pytest.param("GET", b"/v1/a\x7f", "request target holds a space or control character",
                 id="DEL"),
])
def test_target_problem(method: str, target: bytes, detail: str | None) -> None:
    problem = target_problem(method, target)
    assert (problem and (problem.reason, problem.detail)) == (detail and (TARGET, detail))


def head(hosts: tuple[str, ...] = ("api.test:8443",), authority: str = "", *,
         http2: bool = False, target: bytes = b"/x") -> RequestHead:
    return RequestHead(method="GET", target=target, authority=authority, hosts=hosts,
                       fields=[(b"Host", h.encode()) for h in hosts], http2=http2)


@pytest.mark.parametrize("h, require_host, reason, detail", [
    pytest.param(head(), True, None, None, id="Host names the destination"),
    pytest.param(head(("API.test.:8443",)), True, None, None, id="case and trailing dot"),
    pytest.param(head(("api.test",)), True, None, None,
                 id="Host without a port takes the destination's port"),
    pytest.param(head(("other.test:8443",)), True, MISMATCH,
                 "Host header 'other.test:8443' differs from the destination api.test:8443",
                 id="another host"),
    pytest.param(head(("api.test:443",)), True, MISMATCH,
                 "Host header 'api.test:443' differs from the destination api.test:8443",
                 id="another port"),
    pytest.param(head(("api.test@other.test",)), True, MISMATCH,
                 "Host header 'api.test@other.test' differs from the destination api.test:8443",
                 id="userinfo trick"),
    pytest.param(head(("api.test", "other.test")), True, BAD_HEADER, "more than one Host header",
                 id="two Host headers"),
    pytest.param(head(()), True, MISMATCH, "no Host header", id="no Host in a tunnel"),
    pytest.param(head(()), False, None, None, id="no Host on plain HTTP (the URI names the host)"),
    pytest.param(head((), authority="api.test:8443"), True, MISMATCH, "no Host header",
                 id="absolute-form without Host in a tunnel (forwarded origin-form: no host)"),
    pytest.param(head(authority="api.test:8443"), True, None, None,
                 id="absolute-form naming the destination"),
    pytest.param(head(authority="other.test:8443"), True, MISMATCH,
                 "request target authority 'other.test:8443' differs from the destination "
                 "api.test:8443", id="absolute-form naming another host"),
    pytest.param(head((), authority="other.test:8443", http2=True), True, MISMATCH,
                 ":authority 'other.test:8443' differs from the destination api.test:8443",
                 id="HTTP/2 :authority naming another host"),
    pytest.param(head((), authority="api.test:8443", http2=True), True, None, None,
                 id="HTTP/2 :authority alone"),
])
def test_authority_problem(h: RequestHead, require_host: bool, reason: Reason | None,
                           detail: str | None) -> None:
    problem = authority_problem(h, "api.test", 8443, require_host=require_host)
    assert (problem and (problem.reason, problem.detail)) == (reason and (reason, detail))


def test_check_head_reports_header_bytes_before_the_target_and_the_authority() -> None:
    h = RequestHead(method="GET", target=b"/a#b", authority="other.test", hosts=("x",),
                    fields=[(b"X-A", b"a\rb")])
    problem = check_head(h, "api.test", 443, require_host=True)
    assert problem is not None and problem.reason is BAD_HEADER
    h2 = RequestHead(method="GET", target=b"/a#b", authority="other.test", hosts=("x",), fields=[])
    problem = check_head(h2, "api.test", 443, require_host=True)
    assert problem is not None and problem.reason is TARGET


@pytest.mark.parametrize("target, path", [
    pytest.param("/v1/invoices?limit=1", "/v1/invoices", id="query dropped"),
    pytest.param("/v1/invoices", "/v1/invoices", id="no query"),
    pytest.param("/v1/%2e%2e?x", "/v1/%2e%2e", id="escapes kept as sent"),
])
def test_judged_path_is_the_forwarded_path_without_query(target: str, path: str) -> None:
    assert judged_path(target) == path


@pytest.mark.parametrize("method, bad", [
    pytest.param("GET", False, id="GET"),
    pytest.param("get", False, id="lowercase is a token (and a different method)"),
    pytest.param("X-CUSTOM_1", False, id="extension method"),
    pytest.param("", True, id="empty"),
    pytest.param("G\x00ET", True, id="NUL"),
    pytest.param("GE(T", True, id="separator"),
    pytest.param("G\u00c9T", True, id="non-ASCII"),
])
def test_method_problem(method: str, bad: bool) -> None:
    problem = method_problem(method)
    assert (problem is not None) is bad
    if problem is not None:
        assert problem.reason is Reason.BAD_REQUEST and "is not a token" in problem.detail
