"""An aiohttp application served on loopback from a background thread, with test controls.

    app = web.Application(); app.router.add_get("/x", handler)
    with serve_api(app, ca=test_ca.ca, names=["api.vendor.test"]) as server:
        server.url                       # https://127.0.0.2:PORT (the certificate names it)
        server.url_for("api.vendor.test")   # https://api.vendor.test:PORT (needs DNS/proxy)
        server.delay = 2.0               # every response waits 2 s ("slow")
        server.fail(503)                 # every request answers 503 until server.fail(None)
        server.down(); server.up()       # stop listening (connection refused), listen again
        server.received                  # every request: method, path, query, headers, body

The vendor parts (oauth2, onepassword, doppler, loki) are one ``web.Application`` each,
served by this. The controls sit in a middleware in front of the vendor's handlers, so a
request that is failed or delayed is still recorded. Everything on the server's event loop
runs in its own thread; the controls are safe to call from the test's thread.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import trustme
from aiohttp import web

from tests.upstream import free_port

__all__ = ["ApiServer", "Received", "serve_api"]

LOOP_TIMEOUT = 10.0  # seconds any control may take on the server's loop
MAX_RECEIVED = 10_000  # requests kept; older ones are dropped
MAX_DELAY = 120.0  # a "slow" server still answers within this (every wait is bounded)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Received:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]  # last value of each parameter
    headers: dict[str, str]  # lowercased names; a repeated header keeps its last value
    body: bytes
    at: float  # time.time() when it arrived


@dataclass
class _Failure:
    status: int
    body: bytes
    content_type: str


@dataclass
class ApiServer:
    """One served application. Use ``serve_api`` so it is always stopped."""

    app: web.Application
    host: str
    port: int
    context: ssl.SSLContext | None
    received: list[Received] = field(default_factory=list)
    _delay: float = 0.0
    _failure: _Failure | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _site: web.TCPSite | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- addresses ---------------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self.context is not None else "http"

    @property
    def url(self) -> str:
        """Base URL by address, e.g. https://127.0.0.2:40123 (the certificate names it)."""
        return f"{self.scheme}://{self.host}:{self.port}"

    def url_for(self, name: str) -> str:
        """Base URL by a host name the certificate names (reached through DNS or a proxy)."""
        return f"{self.scheme}://{name}:{self.port}"

    # -- controls ----------------------------------------------------------------------------

    @property
    def delay(self) -> float:
        return self._delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        """Make every response wait ``seconds`` (0 = answer at once); bounded by MAX_DELAY."""
        if not 0 <= seconds <= MAX_DELAY:
            raise ValueError(f"delay must be within 0..{MAX_DELAY} s")
        self._delay = seconds

    def fail(self, status: int | None, body: bytes | str = b"",
             content_type: str = "text/plain") -> None:
        """Answer every request with ``status`` (and body) until ``fail(None)``."""
        if status is None:
            self._failure = None
            return
        raw = body.encode() if isinstance(body, str) else body
        self._failure = _Failure(status, raw, content_type)

    @property
    def listening(self) -> bool:
        return self._site is not None

    def down(self) -> None:
        """Stop listening and cut every open connection: clients get connection refused."""
        self._call(self._down())

    def up(self) -> None:
        """Listen again on the same address and port."""
        self._call(self._up())

    def requests_to(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def clear(self) -> None:
        with self._lock:
            self.received.clear()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.app.middlewares.insert(0, self._controls)
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, daemon=True,
                                        name=f"apiserver-{self.port}")
        self._thread.start()
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0,
                                     handle_signals=False)
        self._call(self._runner.setup())
        self._call(self._up())

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if self._runner is not None:
                self._call(self._runner.cleanup())
        finally:
            self._site = None
            loop.call_soon_threadsafe(loop.stop)
            thread.join(LOOP_TIMEOUT)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = None

    # -- internals ---------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        assert self._loop is not None, "server not started"
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(LOOP_TIMEOUT)

    async def _up(self) -> None:
        if self._site is not None:
            return
        assert self._runner is not None
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.context,
                           reuse_address=True)
        await site.start()
        self._site = site

    async def _down(self) -> None:
        site, self._site = self._site, None
        if site is not None:
            await site.stop()
        assert self._runner is not None and self._runner.server is not None
        for conn in self._runner.server.connections:
            conn.force_close()

    @web.middleware
    async def _controls(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        entry = Received(request.method, request.path, dict(request.query.items()),
                         {k.lower(): v for k, v in request.headers.items()}, body, time.time())
        with self._lock:
            if len(self.received) >= MAX_RECEIVED:
                del self.received[0]
            self.received.append(entry)
        if self._delay:
            await asyncio.sleep(self._delay)
        failure = self._failure
        if failure is not None:
            return web.Response(status=failure.status, body=failure.body,
                                content_type=failure.content_type)
        return await handler(request)


@contextmanager
def serve_api(app: web.Application, *, ca: trustme.CA | None, names: list[str] | None = None,
              host: str = "127.0.0.2", port: int | None = None) -> Iterator[ApiServer]:
    """Serve ``app`` on host:free-port (TLS with a certificate for ``names`` and ``host``
    when ``ca`` is given); stop it on the way out, whatever happened."""
    context = None
    if ca is not None:
        from tests.parts.tlsfiles import server_context

        context = server_context(ca, [*(names or []), host])
    server = ApiServer(app, host, port or free_port(host), context)
    try:
        server.start()
        yield server
    finally:
        server.stop()
