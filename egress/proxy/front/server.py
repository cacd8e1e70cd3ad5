"""The fast path's listener: accepts every client connection, keeps the books, sweeps limits.

`FrontServer` listens on `egress serve --listen` and gives each connection a FrontConnection
(egress/proxy/front/connection.py). It keeps what operations see and what the connection
limits need, as egress/proxy/connguard.py and connections.py do inside mitmproxy:

  * the connections it holds (a drain waits for them; /metrics counts them by skill), until
    they close or are handed to mitmproxy (whose own books take them from there);
  * connections not authenticated yet, per client IP: past
    `settings.connections.max_unauthenticated_per_address` a new one is refused at accept
    (`unauthenticated_limit`, audited);
  * a sweeper that closes, with one audit line each, connections past a limit of
    `settings.connections` (the rule table is egress/proxy/timeouts.py's, shared with the
    mitmproxy path); relays count as active while their byte counts move;
  * bytes in and out per skill, moved into the metrics when a connection closes and when the
    metrics are read.

Its rate-limit slots (the gate takes one per connection) are given back when a connection
closes; a connection handed to mitmproxy takes its slot along.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from egress.ops.runtime import Runtime
from egress.policy.model import ConnectionSettings
from egress.proxy.deciding import Deciding
from egress.proxy.front.connection import FrontConnection, Phase
from egress.proxy.handover import Handover
from egress.proxy.timeouts import expired, sweep_interval
from egress.reasons import Reason

__all__ = ["Engine", "FrontServer"]

log = logging.getLogger("egress")

BACKLOG = 4096  # bursts of new tunnels wait in the kernel instead of being retried


class Engine(Protocol):
    """mitmproxy, as the fast path sees it (egress/proxy/engine.py)."""

    async def ready(self) -> None: ...

    async def adopt(self, transport: asyncio.Transport, replay: bytes, handover: Handover, *,
                    front_key: object, eof: bool) -> None: ...


class FrontServer:
    def __init__(self, runtime: Callable[[], Runtime | None], deciding: Deciding,
                 engine: Engine) -> None:
        """No I/O here; `start` listens."""
        self.runtime = runtime
        self.deciding = deciding
        self.engine = engine
        self.connections: set[FrontConnection] = set()
        self._unauthenticated: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # at start

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> None:
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(
            lambda: FrontConnection(self), host, port, backlog=BACKLOG, reuse_address=True)
        self._sweeper = self.loop.create_task(self._sweep_forever())

    @property
    def addresses(self) -> list[tuple[str, int]]:
        if self._server is None:
            return []
        return [s.getsockname()[:2] for s in self._server.sockets]

    def stop_accepting(self) -> None:
        """Close the listening sockets; open connections carry on."""
        if self._server is not None:
            self._server.close()

    def close_all(self) -> None:
        """End every connection the fast path holds (after a drain ran out)."""
        for conn in list(self.connections):
            conn.abort()

    async def stop(self) -> None:
        self.stop_accepting()
        self.close_all()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in list(self._tasks):
            task.cancel()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        if not task.done():
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- connections -----------------------------------------------------------------------
    def settings(self) -> ConnectionSettings:
        runtime = self.runtime()
        return runtime.policy.settings.connections if runtime else ConnectionSettings()

    def opened(self, conn: FrontConnection) -> None:
        ip = conn.watch.peer_ip
        if self._unauthenticated[ip] >= self.settings().max_unauthenticated_per_address:
            conn.phase = Phase.CLOSED
            self.deciding.recorder.denied(
                Reason.UNAUTHENTICATED_LIMIT, kind="connection", skill=None, host="", port=0,
                client=conn.peer, detail="too many unauthenticated connections from this address")
            conn.transport.close()
            return
        self._unauthenticated[ip] += 1
        self.connections.add(conn)

    def authenticated(self, conn: FrontConnection) -> None:
        if conn in self.connections:
            self._release(conn.watch.peer_ip)

    def closed(self, conn: FrontConnection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        if not conn.watch.authenticated:
            self._release(conn.watch.peer_ip)
        self.deciding.limiter.release(conn)
        self._count_bytes(conn)

    def handed_over(self, conn: FrontConnection, replayed: int) -> None:
        """mitmproxy takes `conn` (its books count it from now, and the `replayed` bytes)."""
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        if not conn.watch.authenticated:
            self._release(conn.watch.peer_ip)
        conn.received = max(0, conn.received - replayed)
        self._count_bytes(conn)

    def _release(self, ip: str) -> None:
        self._unauthenticated[ip] -= 1
        if self._unauthenticated[ip] <= 0:
            del self._unauthenticated[ip]

    def _count_bytes(self, conn: FrontConnection) -> None:
        skill = conn.skill or ""
        pipe = conn.pipe
        out = conn.received + (pipe.client.received if pipe is not None else 0)
        into = pipe.upstream.received if pipe is not None else 0
        if pipe is not None:
            pipe.client.received = pipe.upstream.received = 0
        conn.received = 0
        conn.swept = 0
        if out:
            self.deciding.metrics.add_bytes(skill, "out", out)
        if into:
            self.deciding.metrics.add_bytes(skill, "in", into)

    # -- what operations read --------------------------------------------------------------
    def open_by_skill(self) -> dict[str, int]:
        """Open connections per skill ("" = not authenticated yet); moves their bytes so far
        into the metrics (this is called when the metrics are read)."""
        counts: Counter[str] = Counter()
        for conn in list(self.connections):
            counts[conn.skill or ""] += 1
            if conn.skill is not None:
                self._count_bytes(conn)
        return dict(counts)

    def unauthenticated(self) -> int:
        return sum(self._unauthenticated.values())

    def open_count(self) -> int:
        return len(self.connections)

    # -- the sweeper -----------------------------------------------------------------------
    def sweep(self, now: float | None = None) -> int:
        """Close every connection past a limit; returns how many were closed."""
        settings = self.settings()
        now = time.monotonic() if now is None else now
        closed = 0
        for conn in list(self.connections):
            watch = conn.watch
            if watch.closing:
                continue
            relayed = conn.relayed
            if relayed != conn.swept:  # a relay moved bytes since the last sweep: active
                conn.swept = relayed
                watch.last_data = now
            broken = expired(watch, settings, now, conn.waiting)
            if broken is not None:
                conn.expire(*broken)
                closed += 1
        return closed

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(sweep_interval(self.settings()))
            try:
                self.sweep()
            except Exception:  # a bug here must not stop the sweeping
                log.exception("egress: error while checking connection timeouts")
