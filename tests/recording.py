"""A recording upstream: it keeps every byte each connection sent it, for adversarial tests.

The hypercorn upstream in tests/upstream.py parses what it receives, so it cannot show what an
attacker smuggled past egress. This one is a bare TCP (optionally TLS) server on loopback: it
records the raw bytes of every connection and the TLS SNI the client sent, and answers each
HTTP/1.1 request head it finds with `200` and a small JSON body naming the request line it saw.
With `upgrade=True` it answers a request carrying `Upgrade:` with `101 Switching Protocols` and
then only records (as a server that speaks h2c or WebSocket would keep reading).

Tests assert on `received()` / `request_lines()`: what actually reached the upstream, not what
the client was told.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import trustme

from tests.upstream import free_port

__all__ = ["Recorded", "RecordingUpstream", "recording_upstream"]

_MAX_RECORD = 64 * 2**20  # per connection; a runaway test must not eat the machine


@dataclass
class Recorded:
    """One accepted connection: its SNI (TLS only) and every byte it sent."""

    sni: str | None = None
    data: bytearray = field(default_factory=bytearray)
    closed: bool = False


@dataclass
class RecordingUpstream:
    host: str
    port: int
    tls: bool
    connections: list[Recorded] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.connections)

    def received(self) -> bytes:
        """Everything every connection sent, in accept order."""
        return b"".join(bytes(c.data) for c in self.connections)

    def request_lines(self) -> list[str]:
        """The first line of every HTTP/1 request head seen (best effort, for assertions)."""
        lines: list[str] = []
        for conn in self.connections:
            for head in _heads(bytes(conn.data)):
                lines.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
        return lines

    def snis(self) -> list[str | None]:
        return [c.sni for c in self.connections]

    def reset(self) -> None:
        self.connections.clear()


def _heads(data: bytes) -> Iterator[bytes]:
    """Request heads in a byte stream, skipping Content-Length bodies (no chunked support:
    the recorder only has to show request lines, not be a correct server)."""
    pos = 0
    for _ in range(10_000):
        end = data.find(b"\r\n\r\n", pos)
        if end == -1:
            return
        head = data[pos:end]
        yield head
        pos = end + 4 + _content_length(head)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return 0


async def _serve_connection(rec: RecordingUpstream, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter, upgrade: bool) -> None:
    conn = Recorded()
    ssl_object = writer.get_extra_info("ssl_object")
    if ssl_object is not None:
        conn.sni = getattr(ssl_object, "egress_test_sni", None)
    rec.connections.append(conn)
    pending = b""
    upgraded = False
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 30)
            if not chunk:
                break
            if len(conn.data) < _MAX_RECORD:
                conn.data += chunk
            if upgraded:
                continue
            pending += chunk
            while (end := pending.find(b"\r\n\r\n")) != -1:
                head = pending[:end]
                length = _content_length(head)
                if len(pending) < end + 4 + length:
                    break
                pending = pending[end + 4 + length:]
                line = head.split(b"\r\n", 1)[0].decode("latin-1")
                if upgrade and any(h.lower().startswith(b"upgrade:") for h in head.split(b"\r\n")):
                    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                                 b"Upgrade: h2c\r\n\r\n")
                    upgraded = True
                    break
                body = json.dumps({"request_line": line}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        conn.closed = True
        writer.close()


@contextmanager
def recording_upstream(host: str = "127.0.0.2", *, ca: trustme.CA | None = None,
                       names: list[str] | None = None, upgrade: bool = False,
                       alpn: tuple[str, ...] = ("http/1.1",)) -> Iterator[RecordingUpstream]:
    """Run a RecordingUpstream on host:free-port in a background thread (TLS when `ca` given,
    with one certificate for all `names`, ALPN `alpn`: offering h2 makes clients of an
    intercepting proxy get h2 too, though the recorder itself only answers HTTP/1)."""
    port = free_port(host)
    rec = RecordingUpstream(host, port, ca is not None)
    writers: set[asyncio.StreamWriter] = set()
    context: ssl.SSLContext | None = None
    if ca is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(*(names or ["localhost"])).configure_cert(context)
        context.set_alpn_protocols(list(alpn))

        def remember_sni(sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            sock.egress_test_sni = name  # type: ignore[attr-defined]

        context.sni_callback = remember_sni  # type: ignore[assignment]
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            writers.add(w)
            try:
                await _serve_connection(rec, r, w, upgrade)
            finally:
                writers.discard(w)

        server = await asyncio.start_server(handle, host, port, ssl=context)
        started.set()
        await stop.wait()
        server.close()
        for w in list(writers):  # connections still open end with the server
            w.transport.abort()
        await asyncio.wait_for(server.wait_closed(), 5)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("recording upstream did not start")
    try:
        yield rec
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
