"""An HTTP/2 recording upstream: it keeps every request's header block exactly as decoded.

tests/recording.py records raw bytes, which for HTTP/2 are HPACK-compressed frames a test cannot
read. This server speaks HTTP/2 only (TLS, ALPN h2) through the `h2` library with inbound header
validation off, so it records what a lenient upstream would act on: each request's header list
(pseudo-headers included, as bytes) and its body length. It answers every request `200` with a
small JSON body naming the `:path` it saw.

Tests assert on `requests` (what reached the upstream), not on what the client was told.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trustme

from tests.upstream import free_port

__all__ = ["H2Request", "H2RecordingUpstream", "h2_recording_upstream"]


@dataclass
class H2Request:
    headers: list[tuple[bytes, bytes]]
    body: int = 0

    def pseudo(self, name: str) -> bytes | None:
        for k, v in self.headers:
            if k == name.encode():
                return v
        return None

    def values(self, name: str) -> list[bytes]:
        return [v for k, v in self.headers if k == name.lower().encode()]


@dataclass
class H2RecordingUpstream:
    host: str
    port: int
    requests: list[H2Request] = field(default_factory=list)
    connections: int = 0

    def reset(self) -> None:
        self.requests.clear()
        self.connections = 0

    def paths(self) -> list[bytes]:
        return [r.pseudo(":path") or b"" for r in self.requests]


async def _serve(rec: H2RecordingUpstream, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    rec.connections += 1
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=False, header_encoding=None, validate_inbound_headers=False,
        normalize_inbound_headers=False))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    streams: dict[int, H2Request] = {}
    answered: set[int] = set()
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), 30)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    req = H2Request([(bytes(k), bytes(v)) for k, v in event.headers])
                    streams[event.stream_id] = req
                    rec.requests.append(req)
                    if event.stream_ended is not None:
                        _answer(conn, event.stream_id, req)
                        answered.add(event.stream_id)
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    if event.stream_id in streams:
                        streams[event.stream_id].body += len(event.data)
                elif isinstance(event, h2.events.StreamEnded):
                    if event.stream_id in streams and event.stream_id not in answered:
                        _answer(conn, event.stream_id, streams[event.stream_id])
                        answered.add(event.stream_id)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    break
            writer.write(conn.data_to_send())
            await writer.drain()
    except (TimeoutError, ConnectionError, ssl.SSLError, OSError, h2.exceptions.H2Error):
        pass
    finally:
        writer.close()


def _answer(conn: h2.connection.H2Connection, stream_id: int, req: H2Request) -> None:
    try:
        body = json.dumps({"path": (req.pseudo(":path") or b"").decode("latin-1")}).encode()
        head = req.pseudo(":method") == b"HEAD"
        conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/json"),
                                      ("content-length", str(len(body)))], end_stream=head)
        if not head:
            conn.send_data(stream_id, body, end_stream=True)
    except h2.exceptions.H2Error:
        pass  # the stream was reset meanwhile


@contextmanager
def h2_recording_upstream(host: str, *, ca: trustme.CA, names: list[str]
                          ) -> Iterator[H2RecordingUpstream]:
    """Run an H2RecordingUpstream on host:free-port (TLS, one certificate for `names`)."""
    port = free_port(host)
    rec = H2RecordingUpstream(host, port)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*names).configure_cert(context)
    context.set_alpn_protocols(["h2"])
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
                await _serve(rec, r, w)
            finally:
                writers.discard(w)

        server = await asyncio.start_server(handle, host, port, ssl=context)
        started.set()
        await stop.wait()
        server.close()
        for w in list(writers):
            w.transport.abort()
        await asyncio.wait_for(server.wait_closed(), 5)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("HTTP/2 recording upstream did not start")
    try:
        yield rec
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
