"""WebSocket abuse: retained messages, unbounded messages, keys carried away in messages.

Issue 17: mitmproxy kept every message of a WebSocket on the flow for the life of the
connection and buffered unfinished messages without limit (64 MiB of messages took egress from
93 MB to 231 MB, not returned after close), and nothing looked for a placeholder or key inside
messages. Now messages stream through and are dropped as they pass; a message larger than
`settings.websocket.max_message` (1 MiB here), finished, fragmented and unfinished, or
compressed, closes the connection with 1009 and one audit line; a client message that carries a
placeholder or the real key to a host the credential is not bound to closes it with 1008 and one
audit line. Real clients (`websockets`) through a real egress to a recording WebSocket upstream.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import AcceptConnection, CloseConnection, Message, Request

from tests.clients import basic, read_response
from tests.conftest import UPSTREAM_IP, TestCA, write_policy
from tests.dnsserver import DnsServer
from tests.proxy import Proxy, run_proxy
from tests.wsupstream import WsUpstream, ws_upstream

ONE_PATH = ("what is checked happens inside intercepted traffic, mitmproxy's on both"
            " paths (this runs on the fast path, which hands it over)")

NAMES = ["wss.ws.test", "bound.ws.test", "plainws.ws.test"]
REAL_KEY = "ws_REAL_" + os.urandom(12).hex()
PLACEHOLDER = "ws_placeholder_0000000000000"
LIMIT = 2**20  # settings.websocket.max_message in this world
SKILL = "wsk"


@dataclass
class WsWorld:
    proxy: Proxy
    tls: WsUpstream
    plain: WsUpstream
    bundle: str

    def url(self, host: str, path: str = "/ws") -> str:
        if host.startswith("plain"):
            return f"ws://{host}:{self.plain.port}{path}"
        return f"wss://{host}:{self.tls.port}{path}"

    def reset(self) -> None:
        self.tls.reset()
        self.plain.reset()

    def audit_after(self, count: int, want: int = 1, wait: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + wait
        while True:
            new = self.proxy.audit()[count:]
            if len(new) >= want or time.monotonic() > deadline:
                return new
            time.sleep(0.05)


@pytest.fixture(scope="module")
def ww(proxy_path: str, tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[WsWorld]:
    tmp = tmp_path_factory.mktemp("ws")
    key_file = tmp / "key"
    key_file.write_text(REAL_KEY + "\n")
    key_file.chmod(0o600)
    with DnsServer() as dns, ws_upstream(UPSTREAM_IP, ca=test_ca.ca, names=NAMES) as tls, \
            ws_upstream(UPSTREAM_IP) as plain:
        for name in NAMES:
            dns.set(name, [UPSTREAM_IP], ttl=300)
        policies = tmp / "policies"
        policies.mkdir()
        shutil.copy(test_ca.path, policies / "upstream-ca.pem")
        write_policy(policies, f"""
            settings:
              dns: {{nameservers: ["{dns.address}"], timeout: 2}}
              networks: {{allow: ["{UPSTREAM_IP}/32"]}}
              upstream_ca: upstream-ca.pem
              websocket: {{max_message: 1MiB}}
            skills:
              {SKILL}:
                allow:
                  - host: wss.ws.test
                    ports: [{tls.port}]
                    methods: [GET]
                  - host: bound.ws.test
                    ports: [{tls.port}]
                    paths: ["/ws"]
                    credential: key
                  - host: plainws.ws.test
                    ports: [{plain.port}]
                credentials:
                  key:
                    secret: "file:{key_file}"
                    placeholder: {PLACEHOLDER}
            """)
        with run_proxy(policies, tmp / "data", [SKILL]) as proxy:
            bundle = tmp / "bundle.pem"
            egress_ca = (tmp / "data" / "ca" / "mitmproxy-ca-cert.pem").read_text()
            bundle.write_text(egress_ca + Path(test_ca.path).read_text())
            yield WsWorld(proxy, tls, plain, str(bundle))


def _connect(ww: WsWorld, host: str, *, compression: str | None = None,
             headers: dict[str, str] | None = None) -> Any:
    url = ww.url(host)
    ctx = ssl.create_default_context(cafile=ww.bundle) if url.startswith("wss") else None
    return connect(url, ssl=ctx, proxy=ww.proxy.url(SKILL), open_timeout=10, max_size=None,
                   compression=compression, ping_interval=None, close_timeout=5,
                   additional_headers=headers)


def run(coro: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _closed_code(ws: ClientConnection) -> int | None:
    """Wait for the proxy to close the connection; the close code the client got."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None


def _only_deny(ww: WsWorld, before: int, reason: str, host: str) -> dict[str, Any]:
    records = ww.audit_after(before)
    assert [(r["decision"], r["reason"], r["kind"]) for r in records] == [
        ("deny", reason, "websocket")], records
    assert (records[0]["skill"], records[0]["host"], records[0]["path"]) == (SKILL, host, "/ws")
    return records[0]


# -- messages pass, and are not kept --------------------------------------------------------

@pytest.mark.parametrize("host", ["wss.ws.test", "plainws.ws.test"])
def test_messages_pass_both_ways(ww: WsWorld, host: str) -> None:
    ww.reset()

    async def talk() -> list[str]:
        async with _connect(ww, host) as ws:
            await ws.send("hello")
            first = str(await ws.recv())
            await ws.send(b"\x00\x01binary")
            second = str(await ws.recv())
            await ws.send(b"x" * LIMIT)  # exactly the limit is allowed
            third = str(await ws.recv())
            return [first, second, third]

    assert run(talk()) == ["ack 1 5", "ack 2 8", f"ack 3 {LIMIT}"]
    upstream = ww.plain if host.startswith("plain") else ww.tls
    assert upstream.connections[0].sizes == [5, 8, LIMIT]


# -- the size cap ------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["wss.ws.test", "plainws.ws.test"])
def test_client_message_over_the_limit_closes_with_1009(ww: WsWorld, host: str) -> None:
    ww.reset()
    before = len(ww.proxy.audit())

    async def talk() -> int | None:
        async with _connect(ww, host) as ws:
            await ws.send("small")
            await ws.recv()
            await ws.send(b"x" * (LIMIT + 1))
            return await _closed_code(ws)

    assert run(talk()) == 1009
    record = _only_deny(ww, before, "websocket_message_too_big", host)
    assert "the client sent a 1048577-byte message" in record["detail"]
    upstream = ww.plain if host.startswith("plain") else ww.tls
    assert upstream.connections[0].sizes == [5]  # the big message never arrived
    deadline = time.monotonic() + 5
    while not upstream.connections[0].closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.connections[0].close_code == 1001


def _raw_ws(ww: WsWorld, host: str) -> tuple[ssl.SSLSocket, WSConnection]:
    """A WebSocket over a raw TLS tunnel (wsproto), for frames a library would not send."""
    port = ww.tls.port
    raw = socket.create_connection((ww.proxy.host, ww.proxy.port), timeout=10)
    raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Proxy-Authorization: {basic(SKILL, ww.proxy.tokens[SKILL])}\r\n\r\n".encode())
    assert read_response(raw, head_only=True).status == 200
    ctx = ssl.create_default_context(cafile=ww.bundle)
    ctx.set_alpn_protocols(["http/1.1"])
    sock = ctx.wrap_socket(raw, server_hostname=host)
    conn = WSConnection(ConnectionType.CLIENT)
    sock.sendall(conn.send(Request(host=f"{host}:{port}", target="/ws")))
    while True:
        data = sock.recv(65536)
        assert data, "closed during the handshake"
        conn.receive_data(data)
        if any(isinstance(e, AcceptConnection) for e in conn.events()):
            return sock, conn


def _close_code(sock: socket.socket, conn: WSConnection | Connection) -> int | None:
    """Read until egress ends the connection; the code of the close frame received. Fails
    unless egress really closes the socket (a close frame alone leaves the client hanging)."""
    code = None
    sock.settimeout(10)
    for _ in range(10_000):
        try:
            data = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"egress sent close code {code} but kept the socket open")
        except (ConnectionError, ssl.SSLError, OSError):
            break
        if not data:
            break
        conn.receive_data(data)
        for event in conn.events():
            if isinstance(event, CloseConnection):
                code = event.code
    return code


def _plain_proxy_ws(ww: WsWorld) -> tuple[socket.socket, Connection]:
    """A ws:// handshake sent to the proxy in absolute-form (plain HTTP proxying, no CONNECT)."""
    port = ww.plain.port
    sock = socket.create_connection((ww.proxy.host, ww.proxy.port), timeout=10)
    sock.sendall((f"GET http://plainws.ws.test:{port}/ws HTTP/1.1\r\n"
                  f"Host: plainws.ws.test:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n"
                  f"Proxy-Authorization: {basic(SKILL, ww.proxy.tokens[SKILL])}\r\n\r\n").encode())
    head = read_response(sock, head_only=True)
    assert head.status == 101, head
    return sock, Connection(ConnectionType.CLIENT)


@pytest.mark.parametrize("message, code, reason", [
    pytest.param(b"p" * (LIMIT + 1), 1009, "websocket_message_too_big", id="too big"),
    pytest.param(PLACEHOLDER.encode(), 1008, "credential_exfiltration", id="placeholder"),
])
def test_plain_http_proxied_websocket_is_guarded_too(ww: WsWorld, message: bytes, code: int,
                                                     reason: str) -> None:
    ww.reset()
    before = len(ww.proxy.audit())
    sock, conn = _plain_proxy_ws(ww)
    with sock:
        sock.sendall(conn.send(Message(data=b"ok")))
        sock.sendall(conn.send(Message(data=message)))
        assert _close_code(sock, conn) == code
    _only_deny(ww, before, reason, "plainws.ws.test")
    assert ww.plain.connections[0].sizes == [2]


def test_unfinished_fragmented_client_message_over_the_limit_closes(ww: WsWorld) -> None:
    ww.reset()
    before = len(ww.proxy.audit())
    sock, conn = _raw_ws(ww, "wss.ws.test")
    with sock:
        chunk = b"f" * 65536
        for _ in range(LIMIT // len(chunk) + 4):  # a little past the limit, never finished
            try:
                sock.sendall(conn.send(Message(data=chunk, message_finished=False)))
            except (ConnectionError, ssl.SSLError, OSError):
                break
        assert _close_code(sock, conn) == 1009
    record = _only_deny(ww, before, "websocket_message_too_big", "wss.ws.test")
    assert "unfinished message" in record["detail"]
    assert ww.tls.connections[0].sizes == []


def test_many_small_fragments_count_towards_the_limit(ww: WsWorld) -> None:
    ww.reset()
    before = len(ww.proxy.audit())
    sock, conn = _raw_ws(ww, "wss.ws.test")
    with sock:
        data = b""
        for _ in range(LIMIT // 4096 + 64):  # 4 KiB frames of one message
            data += conn.send(Message(data=b"g" * 4096, message_finished=False))
        try:
            sock.sendall(data)
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        assert _close_code(sock, conn) == 1009
    _only_deny(ww, before, "websocket_message_too_big", "wss.ws.test")
    assert ww.tls.connections[0].sizes == []


@pytest.mark.parametrize("command", ["send 1048577", "dribble 1200000"])
def test_server_message_over_the_limit_closes(ww: WsWorld, command: str) -> None:
    ww.reset()
    before = len(ww.proxy.audit())

    async def talk() -> tuple[int | None, int]:
        got = 0
        async with _connect(ww, "wss.ws.test") as ws:
            await ws.send(command)
            try:
                while True:
                    got += len(await ws.recv())
            except ConnectionClosed as exc:
                return (exc.rcvd.code if exc.rcvd else None), got

    code, got = run(talk())
    assert (code, got) == (1001, 0)  # the client is told egress went away; it got nothing
    record = _only_deny(ww, before, "websocket_message_too_big", "wss.ws.test")
    assert record["detail"].startswith("the server sent")


def test_compressed_message_is_judged_by_its_inflated_size(ww: WsWorld) -> None:
    # 4 MiB of zeros deflate to a few KiB on the wire; egress holds the inflated message.
    ww.reset()
    before = len(ww.proxy.audit())

    async def talk() -> tuple[str, int | None]:
        async with _connect(ww, "wss.ws.test", compression="deflate") as ws:
            await ws.send(b"\x00" * 1000)
            small = str(await ws.recv())
            await ws.send(b"\x00" * (4 * LIMIT))
            return small, await _closed_code(ws)

    assert run(talk()) == ("ack 1 1000", 1009)
    _only_deny(ww, before, "websocket_message_too_big", "wss.ws.test")
    assert ww.tls.connections[0].sizes == [1000]


# -- keys in messages --------------------------------------------------------------------------

@pytest.mark.parametrize("host, message", [
    pytest.param("wss.ws.test", f'{{"token": "{PLACEHOLDER}"}}', id="placeholder, text"),
    pytest.param("wss.ws.test", b"\x00\x01" + PLACEHOLDER.encode() + b"\xff",
                 id="placeholder, binary"),
    pytest.param("plainws.ws.test", PLACEHOLDER, id="placeholder over plain ws"),
])
def test_placeholder_in_a_message_to_an_unbound_host_closes(ww: WsWorld, host: str,
                                                            message: str | bytes) -> None:
    ww.reset()
    before = len(ww.proxy.audit())

    async def talk() -> int | None:
        async with _connect(ww, host) as ws:
            await ws.send("fine")
            await ws.recv()
            await ws.send(message)
            return await _closed_code(ws)

    assert run(talk()) == 1008
    record = _only_deny(ww, before, "credential_exfiltration", host)
    assert "credential key" in record["detail"]
    upstream = ww.plain if host.startswith("plain") else ww.tls
    assert upstream.connections[0].sizes == [4]
    assert PLACEHOLDER.encode() not in upstream.received()


def test_real_key_in_a_message_to_an_unbound_host_closes(ww: WsWorld) -> None:
    ww.reset()

    async def fetch_key() -> str:
        # The upgrade to the bound host gets the real key injected: egress now knows it.
        async with _connect(ww, "bound.ws.test",
                            headers={"Authorization": f"Bearer {PLACEHOLDER}"}) as ws:
            await ws.send("x")
            return str(await ws.recv())

    assert run(fetch_key()) == "ack 1 1"
    assert ww.tls.connections[0].headers["authorization"] == f"Bearer {REAL_KEY}"
    before = len(ww.proxy.audit())

    async def leak() -> int | None:
        async with _connect(ww, "wss.ws.test") as ws:
            await ws.send(b"key=" + REAL_KEY.encode())
            return await _closed_code(ws)

    assert run(leak()) == 1008
    record = _only_deny(ww, before, "credential_exfiltration", "wss.ws.test")
    assert REAL_KEY not in str(record)
    leak = ww.tls.connections[1]
    assert leak.path == "/ws" and leak.sizes == []  # the message never reached the upstream


def test_placeholder_to_the_bound_host_passes(ww: WsWorld) -> None:
    ww.reset()

    async def talk() -> str:
        async with _connect(ww, "bound.ws.test") as ws:
            await ws.send(PLACEHOLDER)
            return str(await ws.recv())

    assert run(talk()) == f"ack 1 {len(PLACEHOLDER)}"
    assert ww.tls.connections[0].kept == [PLACEHOLDER.encode()]


# -- memory --------------------------------------------------------------------------------

def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_256_mib_of_messages_do_not_stay_in_memory(ww: WsWorld) -> None:
    """256 MiB through one intercepted connection: RSS growth stays bounded while it runs
    and is given back after close. Generous bounds (not timing-based): keeping the messages,
    as mitmproxy does by default, would add 256 MiB."""
    ww.reset()
    pid = ww.proxy.process.pid
    size, count = 512 * 1024, 512  # 256 MiB in messages half the limit
    block = os.urandom(size)

    async def warm_up() -> None:
        async with _connect(ww, "wss.ws.test") as ws:
            for _ in range(8):
                await ws.send(block)
                await ws.recv()

    run(warm_up())
    time.sleep(0.5)
    base = _rss_mib(pid)
    peak = base

    async def relay() -> int:
        nonlocal peak
        acked = 0
        async with _connect(ww, "wss.ws.test") as ws:
            for i in range(count):
                await ws.send(block)
                if str(await ws.recv()).startswith("ack"):
                    acked += 1
                if i % 32 == 0:
                    peak = max(peak, _rss_mib(pid))
        return acked

    assert run(relay(), timeout=300) == count
    peak = max(peak, _rss_mib(pid))
    assert ww.tls.connections[-1].total == size * count
    time.sleep(1.0)
    after = _rss_mib(pid)
    print(f"egress RSS: base {base:.1f} MiB, peak {peak:.1f} MiB, after close {after:.1f} MiB")
    assert peak - base < 64, f"RSS grew {peak - base:.0f} MiB while relaying 256 MiB"
    assert after - base < 32, f"RSS still {after - base:.0f} MiB above the start after close"
