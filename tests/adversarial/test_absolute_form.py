"""Absolute-form inside a tunnel: the request target must name the CONNECT host.

RFC 9112 tells a server to route on an absolute-form target and ignore `Host` (nginx and CDNs
do), so `GET https://other/... ` with `Host: <CONNECT host>` inside an intercepted tunnel would
take the injected key to another host. egress refuses a target whose authority differs from the
CONNECT host (host_mismatch), and forwards an agreeing one in origin-form: the upstream sees
exactly the judged host (Host header) and path. HTTP/2 has no absolute-form, but a `:path` that
is not origin-form would become one on the way to an HTTP/1 upstream: refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adversarial.reqworld import (
    REAL_KEY,
    ReqWorld,
    h1_in_tunnel,
    h1_plain,
    h2_head,
    h2_in_tunnel,
    open_tunnel,
    req_world,
    wait_for,
)
from tests.clients import read_response
from tests.conftest import TestCA


@pytest.fixture(scope="module")
def rw(proxy_path: str, tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[ReqWorld]:
    with req_world(tmp_path_factory.mktemp("absform"), test_ca) as world:
        yield world


def _head(target: str, host: str, *, auth: bool = True) -> bytes:
    extra = "Authorization: Bearer req_placeholder_000000000000\r\n" if auth else ""
    return (f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n").encode()


@pytest.mark.parametrize("host, target", [
    pytest.param("api.req.test", "https://other.req.test/v1/invoices",
                 id="other host, path rule"),
    pytest.param("api.req.test", "https://other.req.test:{port}/v1/invoices",
                 id="other host with the tunnel's port"),
    pytest.param("api.req.test", "https://api.req.test.other.req.test/v1/invoices",
                 id="CONNECT host as a prefix of another name"),
    pytest.param("api.req.test", "https://api.req.test:1/v1/invoices", id="same host, other port"),
    pytest.param("open.req.test", "https://other.req.test/anything", id="other host, no path rule"),
    pytest.param("open.req.test", "http://other.req.test/anything", id="http scheme, other host"),
])
def test_absolute_form_naming_another_host_is_refused(rw: ReqWorld, host: str, target: str) -> None:
    rw.reset()
    before = rw.audit_count()
    port = rw.port_of(host)
    answer = h1_in_tunnel(rw, host, _head(target.format(port=port), f"{host}:{port}"))
    assert answer is not None and answer.status == 403, answer
    assert answer.json()["reason"] == "host_mismatch"
    record = rw.proxy.audit_for(answer.request_id)
    assert (record["decision"], record["reason"], record["host"]) == ("deny", "host_mismatch", host)
    assert rw.audit_after(before) == [record]  # exactly one line
    assert rw.tls.received() == b""  # nothing reached any upstream, the key least of all


@pytest.mark.parametrize("target", [
    pytest.param("https://api.req.test:{port}/v1/invoices", id="https, explicit port"),
    pytest.param("https://API.req.test.:{port}/v1/invoices/in_1", id="case and trailing dot"),
])
def test_agreeing_absolute_form_is_forwarded_in_origin_form(rw: ReqWorld, target: str) -> None:
    rw.reset()
    port = rw.tls.port
    full = target.format(port=port)
    answer = h1_in_tunnel(rw, "api.req.test", _head(full, f"api.req.test:{port}"))
    assert answer is not None and answer.status == 200, answer
    path = "/" + full.split("/", 3)[3]
    assert wait_for(lambda: rw.tls.request_lines() == [f"GET {path} HTTP/1.1"])
    received = rw.tls.received()
    assert f"Host: api.req.test:{port}\r\n".encode() in received
    assert f"Bearer {REAL_KEY}".encode() in received
    assert b"://" not in received.split(b"\r\n", 1)[0]


def test_absolute_form_without_host_is_refused(rw: ReqWorld) -> None:
    # Found by the property test: forwarded in origin-form, it would reach the upstream with no
    # host at all.
    rw.reset()
    port = rw.tls.port
    answer = h1_in_tunnel(rw, "open.req.test", (
        f"GET https://open.req.test:{port}/x HTTP/1.1\r\nConnection: close\r\n\r\n").encode())
    assert answer is not None and answer.status == 403
    assert answer.json()["reason"] == "host_mismatch"
    assert rw.tls.received() == b""


def test_absolute_form_judged_path_is_the_forwarded_path(rw: ReqWorld) -> None:
    rw.reset()
    port = rw.tls.port
    answer = h1_in_tunnel(rw, "api.req.test", _head(
        f"https://api.req.test:{port}/v1/customers", f"api.req.test:{port}"))
    assert answer is not None and answer.status == 403
    assert answer.json()["reason"] == "path_not_allowed"
    assert rw.tls.received() == b""


def test_absolute_form_in_a_plain_tunnel_is_refused(rw: ReqWorld) -> None:
    rw.reset()
    before = rw.audit_count()
    port = rw.plain.port
    with open_tunnel(rw, "plainopen.req.test") as s:
        s.sendall(_head(f"http://other.req.test:{port}/x", f"plainopen.req.test:{port}",
                        auth=False))
        answer = read_response(s)
    assert answer.status == 403 and answer.json()["reason"] == "host_mismatch"
    assert [r["reason"] for r in rw.audit_after(before)] == ["host_mismatch"]
    assert rw.plain.received() == b""


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_plain_http_without_host_goes_out_with_the_judged_host(rw: ReqWorld, version: str
                                                               ) -> None:
    # mitmproxy forwards plain HTTP in origin-form; without a Host header the upstream would
    # not learn the host that was judged at all.
    rw.reset()
    port = rw.plain.port
    answer = h1_plain(rw, (f"GET http://PlainOpen.req.test.:{port}/x {version}\r\n"
                           f"Proxy-Authorization: {rw.auth()}\r\nConnection: close\r\n\r\n"
                           ).encode())
    assert answer is not None and answer.status == 200
    assert wait_for(lambda: rw.plain.request_lines() == [f"GET /x {version}"])
    assert f"\r\nHost: plainopen.req.test:{port}\r\n".encode() in rw.plain.received()


def test_plain_tunnel_agreeing_absolute_form_goes_out_origin_form(rw: ReqWorld) -> None:
    rw.reset()
    port = rw.plain.port
    with open_tunnel(rw, "plainopen.req.test") as s:
        s.sendall(_head(f"http://plainopen.req.test:{port}/x?y=1", f"plainopen.req.test:{port}",
                        auth=False))
        assert read_response(s).status == 200
    assert wait_for(lambda: rw.plain.request_lines() == ["GET /x?y=1 HTTP/1.1"])


# -- HTTP/2 --------------------------------------------------------------------------------

def test_h2_authority_naming_another_host_is_refused(rw: ReqWorld) -> None:
    rw.reset()
    before = rw.audit_count()
    answer = h2_in_tunnel(rw, "h2open.req.test",
                          h2_head("other.req.test", rw.h2.port, b"/anything"))
    assert answer.status == 403 and answer.json()["reason"] == "host_mismatch"
    assert [r["reason"] for r in rw.audit_after(before)] == ["host_mismatch"]
    assert rw.h2.requests == []


@pytest.mark.parametrize("host, path", [
    pytest.param("h2open.req.test", b"https://other.req.test/anything", id="no path rule"),
    pytest.param("h2.req.test", b"https://h2.req.test/v1/invoices", id="path rule, own host"),
    pytest.param("h2open.req.test", b"other.req.test:443", id="authority-form path"),
    pytest.param("h2open.req.test", b"v1/invoices", id="relative path"),
])
def test_h2_path_that_is_not_origin_form_is_refused(rw: ReqWorld, host: str, path: bytes) -> None:
    rw.reset()
    before = rw.audit_count()
    answer = h2_in_tunnel(rw, host, h2_head(host, rw.h2.port, path))
    assert answer.status == 400, answer
    assert answer.json()["reason"] == "bad_request_target"
    assert [r["reason"] for r in rw.audit_after(before)] == ["bad_request_target"]
    assert rw.h2.requests == []


def test_h2_origin_form_arrives_as_judged(rw: ReqWorld) -> None:
    rw.reset()
    answer = h2_in_tunnel(rw, "h2.req.test", h2_head("h2.req.test", rw.h2.port, b"/v1/invoices"))
    assert answer.status == 200, answer
    assert wait_for(lambda: len(rw.h2.requests) == 1)
    got = rw.h2.requests[0]
    assert got.pseudo(":path") == b"/v1/invoices"
    assert got.pseudo(":authority") == f"h2.req.test:{rw.h2.port}".encode()
    assert got.values("authorization") == [f"Bearer {REAL_KEY}".encode()]
