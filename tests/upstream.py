"""Real upstream servers for end-to-end tests: HTTP/1.1, HTTP/2, TLS, WebSocket and SSE.

One small ASGI app served by hypercorn in a background thread, on a loopback address the test
chooses (127.0.0.2, ...), with a certificate from a throwaway test CA (trustme). It answers:
  /echo            JSON: method, path, query, headers received, body length, HTTP version
                   (any other path answers the same; "X-Echo-Back: NAME" reflects header NAME)
  /sse?n=N&gap=S   text/event-stream: N events, S seconds apart
  /bytes?n=N       N bytes of b"x", streamed in 64 KiB chunks
  websocket /ws    echoes every message
A CountingListener is a bare TCP listener that only counts accepted connections: it proves
that egress never connected somewhere it must not.

egress redacts a brokered key wherever an upstream echoes it back, so the echo cannot show a
test what the upstream received. Every echo therefore carries "seen": an id under which the
upstream kept the headers it received, in this (the test) process: `upstream_headers(id)`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import trustme
from hypercorn.asyncio import serve
from hypercorn.config import Config


_SEEN: dict[str, list[tuple[str, str]]] = {}  # echo id -> request headers as received
_SEEN_MAX = 10_000


def _remember(headers: list[tuple[bytes, bytes]]) -> str:
    rid = secrets.token_hex(8)
    if len(_SEEN) >= _SEEN_MAX:
        del _SEEN[next(iter(_SEEN))]
    _SEEN[rid] = [(k.decode(), v.decode()) for k, v in headers]
    return rid


def upstream_headers(seen: str) -> dict[str, str]:
    """The request headers the upstream received for the echo with this "seen" id
    (lowercased names), as they arrived -- not as egress let the client see them."""
    return {k.lower(): v for k, v in _SEEN[seen]}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        seen = _remember(scope["headers"])
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps({"headers": headers,
                                                                   "seen": seen})})
        for _ in range(10_000):
            msg = await receive()
            if msg["type"] != "websocket.receive":
                return
            await send({"type": "websocket.send", "text": msg.get("text"), "bytes": msg.get("bytes")})
        return
    query = parse_qs(scope.get("query_string", b"").decode())
    path = scope["path"]
    body_len = 0
    while True:
        msg = await receive()
        body_len += len(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    if path == "/sse":
        n, gap = int(query.get("n", ["3"])[0]), float(query.get("gap", ["0.5"])[0])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        for i in range(n):
            await send({"type": "http.response.body", "body": f"data: event {i}\n\n".encode(), "more_body": True})
            await asyncio.sleep(gap)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if path == "/bytes":
        n = int(query.get("n", ["0"])[0])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"),
                                (b"content-length", str(n).encode())]})
        chunk = b"x" * 65536
        while n > 0:
            part = chunk[: min(n, len(chunk))]
            n -= len(part)
            await send({"type": "http.response.body", "body": part, "more_body": n > 0})
        if not int(query.get("n", ["0"])[0]):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    body = json.dumps({
        "method": scope["method"], "path": path, "query": scope.get("query_string", b"").decode(),
        "http_version": scope["http_version"], "body_length": body_len,
        "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
        "seen": _remember(scope["headers"]),
    }).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    # "X-Echo-Back: NAME" makes the response carry request header NAME back as X-Echoed:
    # an upstream that reflects a credential, for the redaction test.
    wanted = dict(scope["headers"]).get(b"x-echo-back")
    if wanted:
        headers += [(b"x-echoed", v) for k, v in scope["headers"] if k == wanted.lower()]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass
class Upstream:
    host: str
    port: int
    tls: bool
    _stop: Any = field(default=None, repr=False)


@contextmanager
def run_upstream(host: str, *, ca: trustme.CA | None, names: list[str], tmp: str) -> Iterator[Upstream]:
    """Serve `app` on host:free-port (TLS with a cert for `names` when `ca` is given)."""
    port = free_port(host)
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.loglevel = "WARNING"
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1
    config.keep_alive_timeout = 5
    if ca is not None:
        cert = ca.issue_cert(*names)
        cert_path, key_path = f"{tmp}/{host}-{port}.pem", f"{tmp}/{host}-{port}.key"
        cert.private_key_pem.write_to_path(key_path)
        cert.cert_chain_pems[0].write_to_path(cert_path)
        config.certfile, config.keyfile = cert_path, key_path
        config.alpn_protocols = ["h2", "http/1.1"]
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        ready.set()
        await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(10)
    _wait_listening(host, port)
    try:
        yield Upstream(host, port, ca is not None)
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def _wait_listening(host: str, port: int, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{host}:{port} did not start listening")


class CountingListener:
    """A TCP listener that accepts and immediately closes, counting every connection."""

    def __init__(self, host: str, port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.host, self.port = host, int(self.sock.getsockname()[1])
        self.accepted = 0
        self._running = True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while self._running:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._running = False
        self._thread.join(5)
        self.sock.close()


def ssl_context(ca_path: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_path)
    return ctx
