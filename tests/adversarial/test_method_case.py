"""Method spelling: the method is judged exactly as it is forwarded.

Found by the property test: mitmproxy's `request.method` upper-cases, so `get /v1/invoices`
was judged as GET (allowed by a GET-only rule) and forwarded as `get`. Methods are
case-sensitive (RFC 9110 9.1): egress now judges the bytes sent, so `get` is not `GET`; and a
method that is not a token is refused.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.adversarial.reqworld import ReqWorld, h1_in_tunnel, h2_head, h2_in_tunnel, req_world
from tests.adversarial.reqworld import wait_for
from tests.conftest import TestCA


@pytest.fixture(scope="module")
def rw(proxy_path: str, tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[ReqWorld]:
    with req_world(tmp_path_factory.mktemp("method"), test_ca) as world:
        yield world


def _head(method: bytes, host: str, port: int, path: bytes = b"/v1/invoices") -> bytes:
    return (method + b" " + path + b" HTTP/1.1\r\nHost: " + f"{host}:{port}".encode()
            + b"\r\nConnection: close\r\n\r\n")


@pytest.mark.parametrize("method", [b"get", b"Get", b"gET"])
def test_lowercase_method_is_not_the_allowed_method(rw: ReqWorld, method: bytes) -> None:
    rw.reset()
    answer = h1_in_tunnel(rw, "api.req.test", _head(method, "api.req.test", rw.tls.port))
    assert answer is not None and answer.status == 403
    assert answer.json()["reason"] == "method_not_allowed"
    record = rw.proxy.audit_for(answer.request_id)
    assert record["method"] == method.decode()
    assert rw.tls.received() == b""


def test_h2_lowercase_method_is_not_the_allowed_method(rw: ReqWorld) -> None:
    rw.reset()
    answer = h2_in_tunnel(rw, "h2.req.test",
                          h2_head("h2.req.test", rw.h2.port, b"/v1/invoices", method=b"get"))
    assert answer.status == 403 and answer.json()["reason"] == "method_not_allowed"
    assert rw.h2.requests == []


def test_method_is_forwarded_and_audited_as_sent_where_any_method_is_allowed(rw: ReqWorld
                                                                            ) -> None:
    rw.reset()
    answer = h1_in_tunnel(rw, "open.req.test", _head(b"get", "open.req.test", rw.tls.port,
                                                     b"/x"))
    assert answer is not None and answer.status == 200
    assert wait_for(lambda: rw.tls.request_lines() == ["get /x HTTP/1.1"])


@pytest.mark.parametrize("method", [b"G\x00ET", b"GE(T", "G\u00c9T".encode()])
def test_method_that_is_not_a_token_is_refused(rw: ReqWorld, method: bytes) -> None:
    rw.reset()
    before = rw.audit_count()
    answer = h1_in_tunnel(rw, "open.req.test", _head(method, "open.req.test", rw.tls.port, b"/x"))
    assert answer is not None and answer.status == 400
    assert answer.json()["reason"] == "bad_request"
    assert [r["reason"] for r in rw.audit_after(before)] == ["bad_request"]
    assert rw.tls.received() == b""
