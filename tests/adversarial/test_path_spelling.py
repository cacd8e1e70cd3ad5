"""Path spelling: what a path rule judges is byte for byte what the upstream receives.

egress used to resolve `..`, `.` and `//` and decode escapes before judging, then forward the
raw target with the key: `/v1/invoices/x/../../customers` was judged as `/v1/customers`... and
as `/v1/invoices/*` by a server that does not resolve, or resolves differently. `#` was worse:
the path was cut at `#` for judging and forwarded whole (issue 17). Now, on rules with paths,
any spelling with more than one reading is refused (path_not_canonical), '#' anywhere is refused
(bad_request_target), and an allowed path reaches the upstream exactly as judged. Through
HTTP/1.1 and HTTP/2 tunnels and plain HTTP alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.adversarial.reqworld import (
    PLACEHOLDER,
    REAL_KEY,
    ReqWorld,
    h1_in_tunnel,
    h1_plain,
    h2_head,
    h2_in_tunnel,
    req_world,
    wait_for,
)
from tests.conftest import TestCA


@pytest.fixture(scope="module")
def rw(proxy_path: str, tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[ReqWorld]:
    with req_world(tmp_path_factory.mktemp("paths"), test_ca) as world:
        yield world


# (path, reason): every one would reach /v1/customers or beyond on some upstream.
TRICKS = [
    pytest.param("/v1/customers/x/delete/../../../invoices", "path_not_canonical",
                 id="dot-dot judged as an allowed path (issue 11)"),
    pytest.param("/v1/customers//../invoices", "path_not_canonical",
                 id="empty segment then dot-dot"),
    pytest.param("/v1/invoices/x/delete/../../../customers", "path_not_canonical",
                 id="dot-dot climbing out of the rule"),
    pytest.param("/v1/invoices/..", "path_not_canonical", id="dot-dot a star would match"),
    pytest.param("/v1/invoices/./in_1", "path_not_canonical", id="dot segment"),
    pytest.param("/v1/invoices//in_1", "path_not_canonical", id="empty segment"),
    pytest.param("//v1/invoices", "path_not_canonical", id="leading double slash"),
    pytest.param("/v1/invoices/%2e%2e", "path_not_canonical", id="encoded dot-dot"),
    pytest.param("/v1/invoices/%2E%2e/%2e%2E/customers", "path_not_canonical",
                 id="mixed-case encoded dot-dots"),
    pytest.param("/v1/invoices/..%2fcustomers", "path_not_canonical", id="encoded slash"),
    pytest.param("/v1/invoices/..%5ccustomers", "path_not_canonical", id="encoded backslash"),
    pytest.param("/v1/invoices/%252e%252e", "path_not_canonical", id="double encoding"),
    pytest.param("/v1/%69nvoices", "path_not_canonical", id="escaped letter"),
    pytest.param("/v1/invoices/..;/customers", "path_not_canonical", id="Tomcat ..; segment"),
    pytest.param("/v1/invoices/in_1;x=1", "path_not_canonical", id="path parameter"),
    pytest.param("/v1/invoices/\\..\\..\\customers", "path_not_canonical", id="backslashes"),
    pytest.param("/v1/invoices#/../../customers/cus_123", "bad_request_target",
                 id="fragment (issue 17)"),
    pytest.param("/v1/invoices?x=1#/../customers", "bad_request_target",
                 id="fragment after a query"),
    pytest.param("/v1/invoices/in_1%00", "path_not_canonical", id="encoded NUL"),
    pytest.param("/v1/customers", "path_not_allowed", id="plainly outside the rule"),
]


def _h1(path: str, host: str, port: int) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {PLACEHOLDER}\r\nConnection: close\r\n\r\n").encode()


@pytest.mark.parametrize("path, reason", TRICKS)
def test_h1_tunnel_refuses_unplain_paths(rw: ReqWorld, path: str, reason: str) -> None:
    rw.reset()
    before = rw.audit_count()
    answer = h1_in_tunnel(rw, "api.req.test", _h1(path, "api.req.test", rw.tls.port))
    assert answer is not None, "egress closed the connection without an answer"
    assert answer.json()["reason"] == reason
    record = rw.proxy.audit_for(answer.request_id)
    assert (record["decision"], record["reason"], record["method"]) == ("deny", reason, "GET")
    assert rw.audit_after(before) == [record]
    if reason == "path_not_canonical":
        assert record["detail"]  # says which spelling
    assert rw.tls.received() == b""  # the key went nowhere


@pytest.mark.parametrize("path, reason", TRICKS)
def test_h2_tunnel_refuses_unplain_paths(rw: ReqWorld, path: str, reason: str) -> None:
    rw.reset()
    before = rw.audit_count()
    answer = h2_in_tunnel(rw, "h2.req.test", h2_head("h2.req.test", rw.h2.port, path.encode()))
    assert answer.status in (400, 403), answer
    assert answer.json()["reason"] == reason
    assert [r["reason"] for r in rw.audit_after(before)] == [reason]
    assert rw.h2.requests == []


@pytest.mark.parametrize("path, reason", TRICKS)
def test_plain_http_refuses_unplain_paths(rw: ReqWorld, path: str, reason: str) -> None:
    rw.reset()
    before = rw.audit_count()
    port = rw.plain.port
    answer = h1_plain(rw, (
        f"GET http://plain.req.test:{port}{path} HTTP/1.1\r\nHost: plain.req.test:{port}\r\n"
        f"Proxy-Authorization: {rw.auth()}\r\nConnection: close\r\n\r\n").encode())
    assert answer is not None
    assert answer.json()["reason"] == reason
    assert [r["reason"] for r in rw.audit_after(before)] == [reason]
    assert rw.plain.received() == b""


@pytest.mark.parametrize("path", [
    "/v1/invoices", "/v1/invoices/in_1", "/v1/invoices/", "/v1/invoices/caf%C3%A9",
    "/v1/invoices/a%2Bb", "/v1/invoices?next=%2F..%2Fcustomers&x=a/../b",
])
def test_allowed_paths_arrive_byte_for_byte(rw: ReqWorld, path: str) -> None:
    rw.reset()
    answer = h1_in_tunnel(rw, "api.req.test", _h1(path, "api.req.test", rw.tls.port))
    assert answer is not None and answer.status == 200, answer
    assert json.loads(answer.body)["request_line"] == f"GET {path} HTTP/1.1"
    assert wait_for(lambda: rw.tls.request_lines() == [f"GET {path} HTTP/1.1"])
    assert f"Bearer {REAL_KEY}".encode() in rw.tls.received()

    rw.reset()
    h2 = h2_in_tunnel(rw, "h2.req.test", h2_head("h2.req.test", rw.h2.port, path.encode()))
    assert h2.status == 200, h2
    assert rw.h2.paths() == [path.encode()]
    assert rw.h2.requests[0].values("authorization") == [f"Bearer {REAL_KEY}".encode()]


@pytest.mark.parametrize("path", ["/a/../b//c", "/x/%2e%2e/%2f;y", "/a\\b"])
def test_rules_without_paths_forward_any_spelling_unchanged(rw: ReqWorld, path: str) -> None:
    # open.req.test allows any path: the spelling decides nothing, and arrives as sent.
    rw.reset()
    answer = h1_in_tunnel(rw, "open.req.test", _h1(path, "open.req.test", rw.tls.port))
    assert answer is not None and answer.status == 200, answer
    assert wait_for(lambda: rw.tls.request_lines() == [f"GET {path} HTTP/1.1"])


def test_fragment_is_refused_on_rules_without_paths_too(rw: ReqWorld) -> None:
    rw.reset()
    answer = h1_in_tunnel(rw, "open.req.test", _h1("/x#y", "open.req.test", rw.tls.port))
    assert answer is not None and answer.status == 400
    assert answer.json()["reason"] == "bad_request_target"
    assert rw.tls.received() == b""


def test_h2_path_with_a_space_is_refused(rw: ReqWorld) -> None:
    # An HTTP/2 :path may hold a space (h2 only refuses CR, LF, NUL); towards an HTTP/1
    # upstream it would split the request line.
    rw.reset()
    answer = h2_in_tunnel(rw, "h2open.req.test",
                          h2_head("h2open.req.test", rw.h2.port, b"/x HTTP/1.1 /admin"))
    assert answer.status == 400 and answer.json()["reason"] == "bad_request_target"
    assert rw.h2.requests == []
