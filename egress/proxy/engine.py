"""mitmproxy as the engine behind the fast path: started when first needed, fed connections.

The fast path (egress/proxy/front/) hands mitmproxy what needs it: intercepted tunnels,
allowed plain-HTTP requests, HTTP/1 inside a tunnel. The hand-over is in-process: the client's
transport gets a StreamReader/StreamWriter pair with every byte the fast path read replayed
into the reader, and a mitmproxy connection handler runs on it exactly as if mitmproxy's own
listener had accepted it (regular mode: mitmproxy parses the same CONNECT or request head
again). The EgressAddon is told the admission first (`adopt`), so its hook applies it instead
of asking the gate again. No second socket, no second relay: once handed over, mitmproxy reads
the client's socket directly. (An internal listener on a Unix socket was the alternative: it
would put the fast path's relay, one more socket pair and a token exchange in front of every
intercepted byte; bench/RESULTS.md has the measurement.)

A CONNECT the fast path already answered (HTTP/1 turned up inside a passthrough tunnel) is
replayed too, and mitmproxy's own `200 Connection established` for it is dropped on its way out
(`AnsweredConnect`): the client got one from the fast path. If mitmproxy answered anything but
a 200 there, the connection is aborted instead: never relay what the engine refused.

mitmproxy starts on first need (its import alone is ~1.4 s and ~45 MB, which a proxy serving
only passthrough tunnels and refusals never pays), or at start-up when the policy intercepts a
host, so that the first intercepted request does not wait. The import runs in a worker thread
so the fast path keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from typing import Any

from egress.proxy.deciding import Deciding
from egress.proxy.handover import Handover

__all__ = ["AnsweredConnect", "Engine"]

log = logging.getLogger("egress")

_STARTUP_SECONDS = 30.0
_MAX_ANSWER = 16 * 1024


class AnsweredConnect(asyncio.StreamWriter):
    """Drops mitmproxy's reply to a replayed CONNECT the client already had a 200 for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._answer: bytearray | None = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        answer = self._answer
        if answer is not None:
            answer += data
            end = answer.find(b"\r\n\r\n")
            if end < 0:
                if len(answer) > _MAX_ANSWER:
                    self._refused()
                return
            head, data = bytes(answer[:end + 4]), bytes(answer[end + 4:])
            self._answer = None
            if not (head.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 "))):
                self._refused()
                return
            if not data:
                return
        super().write(data)

    def _refused(self) -> None:
        log.error("egress: mitmproxy refused a tunnel the fast path had admitted; closing it")
        self._answer = None
        self.transport.abort()


class Engine:
    def __init__(self, build: Callable[[], Any], deciding: Deciding) -> None:
        """`build()` returns a mitmproxy Master whose EgressAddon shares `deciding` (called on
        the event loop, after mitmproxy was imported). No I/O here."""
        self._build = build
        self._deciding = deciding
        self._starting: asyncio.Task[None] | None = None
        self._run: asyncio.Task[None] | None = None
        self.master: Any = None
        self.addon: Any = None
        self._instance: Any = None

    @property
    def started(self) -> bool:
        return self._starting is not None

    def start_soon(self) -> None:
        """Start in the background (a policy that intercepts was loaded)."""
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start())
            self._starting.add_done_callback(_log_failure)

    async def ready(self) -> None:
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(self._starting)
        if self._run is not None and self._run.done():
            raise RuntimeError("mitmproxy has stopped")

    async def _start(self) -> None:
        await asyncio.to_thread(importlib.import_module, "egress.proxy.master")
        from mitmproxy.proxy.mode_servers import ServerInstance

        self.master = self._build()
        self.addon = self.master.addons.get("egressaddon")
        proxyserver = self.master.addons.get("proxyserver")
        self._run = asyncio.get_running_loop().create_task(self.master.run())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STARTUP_SECONDS
        while not proxyserver.is_running:  # set by its `running` hook
            if self._run.done():
                self._run.result()  # raises what stopped it
                raise RuntimeError("mitmproxy stopped while starting")
            if loop.time() > deadline:
                raise RuntimeError("mitmproxy did not start")
            await asyncio.sleep(0.01)
        self._instance = ServerInstance.make("regular", proxyserver)
        log.info("mitmproxy engine started (intercepted tunnels, plain HTTP)")

    async def adopt(self, transport: asyncio.Transport, replay: bytes, handover: Handover, *,
                    front_key: object, eof: bool) -> None:
        """Run mitmproxy on `transport` until the connection ends, `replay` read first."""
        from mitmproxy import ctx
        from mitmproxy.proxy.mode_servers import ProxyConnectionHandler

        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2 ** 16, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if replay:
            reader.feed_data(replay)
        if eof:
            reader.feed_eof()
        writer_class = AnsweredConnect if handover.recorded else asyncio.StreamWriter
        writer = writer_class(transport, protocol, reader, loop)
        transport.resume_reading()
        handler = ProxyConnectionHandler(self.master, reader, writer, ctx.options,
                                         self._instance.mode)
        handler.layer = self._instance.make_top_layer(handler.layer.context)
        client = handler.client
        self.addon.adopt(client, handover)
        self._deciding.limiter.rekey(front_key, client.id)  # its slot goes along
        proxyserver = self.master.addons.get("proxyserver")
        with proxyserver.register_connection(client.id, handler):
            await handler.handle_client()

    def connection_count(self) -> int:
        if self.master is None:
            return 0
        return len(self.master.addons.get("proxyserver").connections)

    def open_by_skill(self) -> dict[str, int]:
        return dict(self.addon.open_connections()) if self.addon is not None else {}

    def unauthenticated(self) -> int:
        return self.addon.guard.unauthenticated() if self.addon is not None else 0

    async def stop(self) -> None:
        if self.master is not None:
            self.master.shutdown()
        if self._run is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._run), 10)
            except Exception:
                log.exception("egress: mitmproxy did not stop cleanly")


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("egress: mitmproxy failed to start: %s", task.exception())
