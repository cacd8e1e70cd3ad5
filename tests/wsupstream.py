"""A recording WebSocket upstream (the `websockets` library), for the WebSocket abuse suites.

It accepts any path, keeps what every connection sent (message sizes, and the bytes of small
messages) and the close code it got, and answers each message with a short text ack
`ack <count> <bytes>`, so a client can pace itself without an echo doubling the traffic.
Commands sent as text messages make it misbehave on purpose:
  `send N`      answer with one binary message of N bytes
  `dribble N`   start a fragmented binary message and send N bytes of it, never finishing
  `bye`         close the connection (1000)
No size limit: the point is to see what egress lets through.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import trustme
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from tests.upstream import free_port

__all__ = ["WsConnection", "WsUpstream", "ws_upstream"]

_KEEP = 64 * 1024  # bytes of a message kept for assertions


@dataclass
class WsConnection:
    path: str
    headers: dict[str, str]
    sizes: list[int] = field(default_factory=list)
    kept: list[bytes] = field(default_factory=list)  # first _KEEP bytes of each message
    close_code: int | None = None
    closed: bool = False

    @property
    def total(self) -> int:
        return sum(self.sizes)


@dataclass
class WsUpstream:
    host: str
    port: int
    tls: bool
    connections: list[WsConnection] = field(default_factory=list)

    def reset(self) -> None:
        self.connections.clear()

    def received(self) -> bytes:
        return b"".join(b"".join(c.kept) for c in self.connections)


async def _handle(rec: WsUpstream, ws: ServerConnection) -> None:
    assert ws.request is not None
    conn = WsConnection(ws.request.path, {k.lower(): v for k, v in ws.request.headers.raw_items()})
    rec.connections.append(conn)
    try:
        async for message in ws:
            data = message.encode() if isinstance(message, str) else message
            conn.sizes.append(len(data))
            conn.kept.append(data[:_KEEP])
            if isinstance(message, str) and message.startswith("send "):
                await ws.send(b"s" * int(message.split()[1]))
            elif message == "bye":
                await ws.close(1000, "bye")
            elif isinstance(message, str) and message.startswith("dribble "):
                await ws.send(_dribble(ws, int(message.split()[1])))
            else:
                await ws.send(f"ack {len(conn.sizes)} {len(data)}")
    except ConnectionClosed:
        pass
    finally:
        conn.close_code = ws.close_code
        conn.closed = True


async def _dribble(ws: ServerConnection, n: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < n:
        chunk = b"d" * min(65536, n - sent)
        sent += len(chunk)
        yield chunk
    for _ in range(600):  # never finish the message (until the connection goes, <= 60 s)
        if ws.state is not State.OPEN:
            break
        await asyncio.sleep(0.1)
    yield b""


@contextmanager
def ws_upstream(host: str, *, ca: trustme.CA | None = None, names: list[str] | None = None
                ) -> Iterator[WsUpstream]:
    port = free_port(host)
    rec = WsUpstream(host, port, ca is not None)
    context: ssl.SSLContext | None = None
    if ca is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(*(names or ["localhost"])).configure_cert(context)
        context.set_alpn_protocols(["http/1.1"])
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        # permessage-deflate is accepted when a client offers it (a compressed message is
        # judged by its inflated size).
        async with serve(lambda ws: _handle(rec, ws), host, port, ssl=context, max_size=None,
                         ping_interval=None):
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("WebSocket upstream did not start")
    try:
        yield rec
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
        loop.close()
