"""End to end: a real egress (`egress serve`) between real clients and real upstreams."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
import ssl
import time

import httpx
import pytest
import websockets

from egress.identity import TokenStore
from tests.clients import basic, connect, read_response, send_raw
from tests.conftest import World


def https(world: World, skill: str, host: str, path: str = "/echo", *, http2: bool = False,
          token: str | None = None) -> httpx.Response:
    with httpx.Client(proxy=world.proxy.url(skill, token), verify=ssl.create_default_context(
            cafile=world.ca.path), http2=http2, timeout=10, trust_env=False) as client:
        return client.get(f"https://{host}:{world.tls.port}{path}")


def audit_line(world: World, request_id: str) -> dict[str, object]:
    return world.proxy.audit_for(request_id)


# -- allowed traffic -------------------------------------------------------------------

def test_allowed_host_reaches_upstream_with_its_own_certificate(world: World) -> None:
    # The client trusts only the test CA: success proves egress did not intercept TLS.
    resp = https(world, "alpha", "api.allowed.test")
    assert resp.status_code == 200
    assert resp.json()["path"] == "/echo"


def test_http2_inside_an_allowed_tunnel(world: World) -> None:
    resp = https(world, "alpha", "api.allowed.test", http2=True)
    assert resp.status_code == 200
    assert resp.http_version == "HTTP/2"
    assert resp.json()["http_version"] == "2"


def test_websocket_inside_an_allowed_tunnel(world: World) -> None:
    async def talk() -> list[str]:
        ctx = ssl.create_default_context(cafile=world.ca.path)
        uri = f"wss://www.allowed.test:{world.tls.port}/ws"
        async with websockets.connect(uri, ssl=ctx, proxy=world.proxy.url("alpha"),
                                      open_timeout=10) as ws:
            first = json.loads(await ws.recv())
            await ws.send("ping")
            return [first["headers"]["host"], await ws.recv()]

    host, echoed = asyncio.run(talk())
    assert echoed == "ping"
    assert host.startswith("www.allowed.test")


def test_wildcard_matches_a_deep_subdomain(world: World) -> None:
    assert https(world, "alpha", "deep.sub.allowed.test").status_code == 200


def test_host_is_normalised_before_matching(world: World) -> None:
    resp = connect(world.proxy_addr, f"API.Allowed.TEST.:{world.tls.port}",
                   basic("alpha", world.proxy.tokens["alpha"]))
    assert resp.status == 200


def test_plain_http_allowed_and_proxy_credentials_not_forwarded(world: World) -> None:
    with httpx.Client(proxy=world.proxy.url("alpha"), timeout=10, trust_env=False) as client:
        resp = client.get(f"http://plain.allowed.test:{world.plain.port}/echo?secret=1")
    assert resp.status_code == 200
    names = [k.lower() for k, _ in resp.json()["headers"]]
    assert "proxy-authorization" not in names
    assert resp.json()["query"] == "secret=1"


# -- denials ---------------------------------------------------------------------------

@pytest.mark.parametrize("skill, target, reason", [
    pytest.param("alpha", "evil.example.test:{tls}", "host_not_allowed", id="unlisted host"),
    pytest.param("alpha", "allowed.test:{tls}", "host_not_allowed", id="wildcard never matches the apex"),
    pytest.param("alpha", "evilallowed.test:{tls}", "host_not_allowed", id="suffix without a dot is another domain"),
    pytest.param("alpha", "allowed.test.evil.test:{tls}", "host_not_allowed", id="allowed name as a prefix of another domain"),
    pytest.param("alpha", "api.allowed.test:{plain}", "port_not_allowed", id="allowed host on another port"),
    pytest.param("beta", "api.allowed.test:{tls}", "host_not_allowed", id="skill A's host denied to skill B"),
    pytest.param("idle", "api.allowed.test:{tls}", "host_not_allowed", id="skill without rules"),
    pytest.param("ghost", "api.allowed.test:{tls}", "unknown_skill", id="valid token but no policy"),
])
def test_connect_denied_with_json_and_audit(world: World, skill: str, target: str, reason: str) -> None:
    target = target.format(tls=world.tls.port, plain=world.plain.port)
    resp = connect(world.proxy_addr, target, basic(skill, world.proxy.tokens[skill]))
    assert resp.status == 403
    body = resp.json()
    assert body["error"] == "egress_denied"
    assert body["reason"] == reason
    assert body["skill"] == skill
    assert set(body) == {"error", "skill", "host", "port", "reason", "message", "request_id"}
    assert "ask the operator" in body["message"] or reason == "unknown_skill"
    record = audit_line(world, body["request_id"])
    assert record["decision"] == "deny"
    assert record["reason"] == reason
    assert record["skill"] == skill
    assert record["kind"] == "connect"
    assert record["port"] == int(target.rsplit(":", 1)[1])
    assert "resolved" not in record  # denied before any lookup or connection


@pytest.mark.parametrize("auth, reason", [
    pytest.param(None, "auth_required", id="no credentials"),
    pytest.param(basic("alpha", "egr_wrong"), "auth_invalid", id="wrong token"),
    pytest.param("BEAR", "auth_invalid", id="malformed header"),
    pytest.param("Basic !!!notbase64", "auth_invalid", id="bad base64"),
])
def test_missing_or_wrong_credentials_get_407(world: World, auth: str | None, reason: str) -> None:
    with socket.create_connection(world.proxy_addr, timeout=10) as s:
        target = f"api.allowed.test:{world.tls.port}"
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if auth:
            head += f"Proxy-Authorization: {auth}\r\n"
        s.sendall((head + "\r\n").encode())
        resp = read_response(s)
    assert resp.status == 407
    assert resp.headers["proxy-authenticate"] == 'Basic realm="egress"'
    record = audit_line(world, resp.request_id)
    assert (record["decision"], record["reason"], record["skill"]) == ("deny", reason, None)


def test_token_of_another_skill_is_refused(world: World) -> None:
    resp = connect(world.proxy_addr, f"api.allowed.test:{world.tls.port}",
                   basic("alpha", world.proxy.tokens["beta"]))
    assert resp.status == 407


def test_plain_http_denied_host(world: World) -> None:
    with httpx.Client(proxy=world.proxy.url("beta"), timeout=10, trust_env=False) as client:
        resp = client.get(f"http://plain.allowed.test:{world.plain.port}/echo?token=abc")
    assert resp.status_code == 403
    body = resp.json()
    assert body["reason"] == "host_not_allowed"
    record = audit_line(world, body["request_id"])
    assert record["kind"] == "http" and record["method"] == "GET" and record["path"] == "/echo"
    assert "token=abc" not in json.dumps(record)  # never a query string in the audit log


def test_plain_http_host_header_must_match_uri(world: World) -> None:
    auth = basic("alpha", world.proxy.tokens["alpha"])
    resp = send_raw(world.proxy_addr, (
        f"GET http://plain.allowed.test:{world.plain.port}/echo HTTP/1.1\r\n"
        f"Host: evil.example.test\r\nProxy-Authorization: {auth}\r\n\r\n").encode())
    assert resp.status == 403
    assert resp.json()["reason"] == "host_mismatch"
    assert audit_line(world, resp.request_id)["reason"] == "host_mismatch"


def test_tls_sni_must_match_connect_host(world: World) -> None:
    auth = basic("alpha", world.proxy.tokens["alpha"])
    target = f"api.allowed.test:{world.tls.port}"
    raw = socket.create_connection(world.proxy_addr, timeout=10)
    try:
        raw.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
                    f"Proxy-Authorization: {auth}\r\n\r\n".encode())
        assert read_response(raw, head_only=True).status == 200
        ctx = ssl.create_default_context(cafile=world.ca.path)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            with ctx.wrap_socket(raw, server_hostname="other.test") as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n")
                if not tls.recv(100):
                    raise ConnectionError("closed")
    finally:
        raw.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any(r["reason"] == "host_mismatch" and r["kind"] == "tls" for r in world.proxy.audit()):
            break
        time.sleep(0.05)
    else:
        pytest.fail("no host_mismatch audit record for the SNI mismatch")


def test_revoked_token_stops_working_without_restart(world: World) -> None:
    store = TokenStore(world.proxy.data_dir)
    token = store.issue("revocable")
    target = f"api.allowed.test:{world.tls.port}"
    assert connect(world.proxy_addr, target, basic("revocable", token)).status == 403  # known, no policy
    store.revoke("revocable")
    assert connect(world.proxy_addr, target, basic("revocable", token)).status == 407


# -- malformed input never crashes egress nor falls open ----------------------------------

@pytest.mark.parametrize("data", [
    pytest.param(b"\x00\xff\x16garbage\r\n\r\n", id="garbage bytes"),
    pytest.param(b"CONNECT api.allowed.test HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n", id="CONNECT without a port"),
    pytest.param(b"GET http://plain.allowed.test/ HTTP/1.1\r\nX: " + b"a" * 300_000 + b"\r\n\r\n", id="oversized header"),
    pytest.param(b"GET /echo HTTP/1.1\r\nHost: plain.allowed.test\r\n\r\n", id="origin-form request to the proxy"),
])
def test_malformed_requests_are_refused_and_proxy_keeps_serving(world: World, data: bytes) -> None:
    try:
        with socket.create_connection(world.proxy_addr, timeout=10) as s:
            s.sendall(data)
            s.settimeout(5)
            answer = s.recv(4096)
    except OSError:
        answer = b""
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert world.proxy.alive()
    assert https(world, "alpha", "api.allowed.test").status_code == 200
    # Refused and audited, whether mitmproxy's parser or egress refused it.
    assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 407", b"HTTP/1.1 403",
                              b"HTTP/1.1 431")), answer[:100]


def test_endless_request_head_is_cut_off_at_64_kib(world: World) -> None:
    # mitmproxy alone would buffer an unfinished head without limit (memory DoS).
    with socket.create_connection(world.proxy_addr, timeout=10) as s:
        s.sendall(b"GET http://plain.allowed.test/ HTTP/1.1\r\nX-Filler: ")
        answer = b""
        try:
            for _ in range(64):  # up to 4 MiB, stopping as soon as egress answers
                s.sendall(b"a" * 65536)
        except OSError:
            pass
        s.settimeout(5)
        try:
            answer = s.recv(200)
        except OSError:
            pass
    assert answer.startswith(b"HTTP/1.1 431"), answer
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any("head larger than 65536 bytes" in str(r.get("detail"))
               for r in world.proxy.audit()):
            break
        time.sleep(0.05)
    else:
        pytest.fail("no audit record for the oversized request head")
    assert world.proxy.alive()


def test_unparsable_requests_are_audited_without_their_bytes(world: World) -> None:
    with socket.create_connection(world.proxy_addr, timeout=10) as s:
        s.sendall(b"\x00\xffGET http://x/?token=SECRET123 garbage\r\n\r\n")
        s.settimeout(5)
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    deadline = time.monotonic() + 5
    records: list[dict[str, object]] = []
    while time.monotonic() < deadline and not records:
        records = [r for r in world.proxy.audit() if r["reason"] == "bad_request" and
                   str(r["detail"]).startswith("unparsable request: Bad HTTP request line")]
        time.sleep(0.05)
    assert records and records[-1]["decision"] == "deny"
    assert "SECRET123" not in world.proxy.audit_path.read_text()


def _address(s: socket.socket) -> str:
    """A client socket's address as audit lines spell `client`."""
    host, port = s.getsockname()[:2]
    return f"{host}:{port}"


def _audited_from(world: World, clients: set[str], want: int) -> list[str]:
    """Reasons of the audit lines from `clients` (waits briefly for `want` of them): lines
    of other tests' connections, written when those closed, may land meanwhile."""
    deadline = time.monotonic() + 5
    while True:
        reasons = sorted(r["reason"] for r in world.proxy.audit() if r.get("client") in clients)
        if len(reasons) >= want or time.monotonic() > deadline:
            return reasons
        time.sleep(0.05)


def test_half_open_connection_does_not_block_others(world: World) -> None:
    s = socket.create_connection(world.proxy_addr, timeout=10)
    client = _address(s)
    try:
        s.sendall(b"CONNECT api.allowed.test:1 HTTP/1.1\r\n")  # never finished
        assert https(world, "alpha", "api.allowed.test").status_code == 200
    finally:
        s.close()
    assert world.proxy.alive()
    assert _audited_from(world, {client}, 1) == ["bad_request"]  # the unfinished head, once


def test_raw_bytes_of_refused_requests_never_reach_the_process_log(world: World) -> None:
    token = world.proxy.tokens["alpha"]
    clients = set()
    with socket.create_connection(world.proxy_addr, timeout=10) as s:  # closes mid-head
        clients.add(_address(s))
        s.sendall(f"CONNECT api.allowed.test:1 HTTP/1.1\r\nProxy-Authorization: "
                  f"{basic('alpha', token)}\r\n".encode())
    with socket.create_connection(world.proxy_addr, timeout=10) as s:  # unparsable line
        clients.add(_address(s))
        s.sendall(f"\x00GET http://x/?key={token} HTTP/1.1\r\n\r\n".encode())
        s.settimeout(5)
        s.recv(100)
    # Both refusals audited once (the second reads as a request without credentials),
    # neither quoting the bytes.
    assert _audited_from(world, clients, 2) == ["auth_required", "bad_request"]
    log = world.proxy.log()
    if not world.proxy.front:  # mitmproxy quotes what it could not parse: egress redacts it
        assert "bytes redacted" in log
    assert token not in log and basic("alpha", token).split()[1] not in log
    assert token not in world.proxy.audit_path.read_text()


def test_audit_line_survives_a_killed_proxy(tmp_path: Path, world: World) -> None:
    """A line written is a line kept: SIGKILL right after a denial loses nothing."""
    import signal

    from tests.proxy import run_proxy

    with run_proxy(world.proxy.policies, tmp_path / "data", ["alpha"]) as proxy:
        resp = connect((proxy.host, proxy.port), "nowhere.test:443",
                       basic("alpha", proxy.tokens["alpha"]))
        assert resp.status == 403
        proxy.process.send_signal(signal.SIGKILL)
        proxy.process.wait(10)
        assert proxy.process.returncode == -signal.SIGKILL
        records = proxy.audit()
    assert [r["id"] for r in records] == [resp.request_id]


def test_approved_passthrough_takes_the_fast_path(tmp_path: Path, world: World) -> None:
    """An approved passthrough tunnel gets a raw TCP layer in next_layer (no TLS layers),
    and a mismatching SNI still goes the slow way and is refused."""
    from tests.proxy import run_proxy

    with run_proxy(world.proxy.policies, tmp_path / "data", ["alpha"],
                   args=["--log-level", "debug"]) as proxy:
        with httpx.Client(proxy=proxy.url("alpha"), timeout=10, trust_env=False,
                          verify=ssl.create_default_context(cafile=world.ca.path)) as client:
            assert client.get(f"https://api.allowed.test:{world.tls.port}/echo").status_code == 200
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "passthrough api.allowed.test" not in proxy.log():
            time.sleep(0.05)
        assert f"egress: passthrough api.allowed.test:{world.tls.port} for alpha" in proxy.log()


def test_an_allowed_upstream_that_cannot_be_reached_is_audited_as_such(world: World) -> None:
    # The allow line alone would say the skill reached it; one upstream_unreachable line per
    # attempt says it did not (a tunnel, and a plain-HTTP request), on both paths.
    port, before = world.closed_port, len(world.proxy.audit())
    with socket.create_connection(world.proxy_addr, timeout=10) as s:
        auth = basic("alpha", world.proxy.tokens["alpha"])
        s.sendall(f"CONNECT closed.allowed.test:{port} HTTP/1.1\r\nHost: closed.allowed.test:"
                  f"{port}\r\nProxy-Authorization: {auth}\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        ctx = ssl.create_default_context(cafile=world.ca.path)
        with pytest.raises((ssl.SSLError, OSError)):
            with ctx.wrap_socket(s, server_hostname="closed.allowed.test") as tls:
                tls.recv(1)
    with httpx.Client(proxy=world.proxy.url("alpha"), trust_env=False, timeout=10) as c:
        answer = c.get(f"http://closed.allowed.test:{port}/x")
    assert answer.status_code == 502
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [r for r in world.proxy.audit()[before:] if r["reason"] == "upstream_unreachable"]
        if len(lines) >= 2:
            break
        time.sleep(0.05)
    assert [(r["decision"], r["skill"], r["kind"]) for r in lines] == [
        ("deny", "alpha", "connect"), ("deny", "alpha", "http")]
    assert lines[0]["host"] == "closed.allowed.test" and lines[0]["port"] == port
    assert all("cannot connect to 127.0.0.2" in r["detail"] for r in lines)
