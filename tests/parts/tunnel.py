"""A plain HTTP CONNECT proxy that maps host names to loopback addresses (self-tests only).

Clients reach parts by their real host names (``bucket.s3.aws.test``, with SNI and Host
as in production) without DNS and without egress in between:

    with connect_tunnel({"s3.aws.test": "127.0.0.2", "*.s3.aws.test": "127.0.0.2"}) as proxy:
        boto3.client("s3", endpoint_url=..., config=Config(proxies={"https": proxy.url}))

It only relays bytes after ``CONNECT name:port``; a name it does not know, or a request that
is not CONNECT, gets 403. Each tunnel is bounded: idle 30 s, and it ends with the proxy.
Egress itself is the proxy under test everywhere else; this is not a model of it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.upstream import free_port

__all__ = ["Tunnel", "connect_tunnel"]

IDLE = 30.0  # seconds a tunnel may stay silent
MAX_HEAD = 16 * 1024


@dataclass
class Tunnel:
    host: str
    port: int
    names: dict[str, str]
    connects: list[str] = field(default_factory=list)  # every CONNECT authority, in order

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def resolve(self, name: str) -> str | None:
        name = name.lower().rstrip(".")
        if name in self.names:
            return self.names[name]
        parent = name.partition(".")[2]
        return self.names.get(f"*.{parent}") if parent else None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), IDLE)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
    except (TimeoutError, ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _handle(tunnel: Tunnel, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE)
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        writer.close()
        return
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    method, _, rest = line.partition(" ")
    authority = rest.partition(" ")[0]
    name, _, port = authority.rpartition(":")
    address = tunnel.resolve(name) if method == "CONNECT" and port.isdigit() else None
    if address is None:
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()
        return
    tunnel.connects.append(authority)
    try:
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(address, int(port)), 5)
    except (TimeoutError, OSError):
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()
        return
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await writer.drain()
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


@contextmanager
def connect_tunnel(names: dict[str, str], host: str = "127.0.0.1") -> Iterator[Tunnel]:
    """Run the proxy on host:free-port in a background thread; ``names`` maps a host name
    (or ``*.parent``, one label) to the address to dial."""
    tunnel = Tunnel(host, free_port(host), {k.lower(): v for k, v in names.items()})
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Event | None = None
    writers: set[asyncio.StreamWriter] = set()

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            writers.add(w)
            try:
                await _handle(tunnel, r, w)
            finally:
                writers.discard(w)

        server = await asyncio.start_server(handle, host, tunnel.port, limit=MAX_HEAD)
        started.set()
        await stop.wait()
        server.close()
        for w in list(writers):
            w.transport.abort()
        # Aborted clients end their pipes, which close the upstream side: wait for that.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=5)
        await asyncio.wait_for(server.wait_closed(), 5)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("CONNECT tunnel did not start")
    try:
        yield tunnel
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
