"""The shipping thread: its own event loop, one lane per destination.

Shipping never runs on the proxy's event loop: the request path only appends a line to the
spool (egress/audit/spool.py). This thread reads the spool, formats, connects, retries and
waits; a slow or dead destination slows nothing but its own lane. `configure` (a policy
reload) and `stop` (shutdown: lanes send what is left for up to `timeout` seconds; what is
not confirmed stays in the spool for the next start) may be called from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Mapping

from egress.audit.ship.lane import DestinationStats, Lane, Sender
from egress.audit.spool import Spool
from egress.policy.secret_settings import SecretSettings
from egress.policy.ship_settings import Destination, HttpDestination, SyslogDestination
from egress.secrets.cache import SecretCache, build_secret_cache

__all__ = ["Shipper"]

log = logging.getLogger("egress.audit")


class Shipper:
    def __init__(self, spool: Spool, destinations: tuple[Destination, ...],
                 secrets: SecretSettings | None) -> None:
        """No thread, no I/O: `start` begins shipping."""
        self.spool = spool
        self._config: tuple[tuple[Destination, ...], SecretSettings | None] = (
            destinations, secrets)
        self.stats: dict[str, DestinationStats] = {d.name: DestinationStats(d.name)
                                                   for d in destinations}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._lanes: dict[str, tuple[Destination, asyncio.Task[None]]] = {}
        self._secrets: SecretCache | None = None
        self._secret_settings: SecretSettings | None = None

    # -- any thread ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="egress-audit-ship",
                                        daemon=True)
        self._thread.start()
        self._started.wait(5.0)

    def configure(self, destinations: tuple[Destination, ...],
                  secrets: SecretSettings | None) -> None:
        """New destinations (a policy reload): lanes added, removed or restarted."""
        self._config = (destinations, secrets)
        self.spool.register({d.name for d in destinations})
        for d in destinations:
            self.stats.setdefault(d.name, DestinationStats(d.name))
        for name in set(self.stats) - {d.name for d in destinations}:
            del self.stats[name]
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._apply)

    def stop(self, timeout: float = 3.0) -> None:
        """Let lanes send what they can for up to `timeout` seconds, then end the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._begin_stop, timeout)
        thread.join(timeout + 2.0)
        if thread.is_alive():
            log.warning("egress: audit shipping did not stop in time; unshipped lines stay "
                        "in the spool for the next start")
        self._thread = None

    # -- the shipping thread ------------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:  # never take the process down; lines stay in the spool
            log.exception("egress: audit shipping stopped by an error")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._done = asyncio.Event()
        self._started.set()
        self._apply()
        await self._done.wait()

    def _begin_stop(self, timeout: float) -> None:
        assert self._stopping is not None
        self._stopping.set()
        asyncio.get_running_loop().create_task(self._finish(timeout))

    async def _finish(self, timeout: float) -> None:
        tasks = [task for _, task in self._lanes.values()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=2.0)
        if self._secrets is not None:
            with contextlib.suppress(Exception):
                await self._secrets.close()
        self._done.set()

    def _apply(self) -> None:
        destinations, secrets = self._config
        renewed = False
        if secrets != self._secret_settings or self._secrets is None:
            old, self._secrets = self._secrets, build_secret_cache(secrets or SecretSettings())
            self._secret_settings = secrets
            if old is not None:
                renewed = True  # lanes holding the old cache start again with the new one
                asyncio.get_running_loop().create_task(old.close())
        wanted = {d.name: d for d in destinations}
        for name, (dest, task) in list(self._lanes.items()):
            if wanted.get(name) != dest or (renewed and isinstance(dest, HttpDestination)):
                task.cancel()
                del self._lanes[name]
        assert self._stopping is not None
        for name, dest in wanted.items():
            if name in self._lanes:
                continue
            stats = self.stats.setdefault(name, DestinationStats(name))
            lane = Lane(name, self.spool, self._sender(dest), stats,
                        batch=dest.batch if isinstance(dest, HttpDestination) else 1000)
            task = asyncio.get_running_loop().create_task(lane.run(self._stopping),
                                                          name=f"egress ship {name}")
            self._lanes[name] = (dest, task)

    def _sender(self, dest: Destination) -> Sender:
        if isinstance(dest, SyslogDestination):
            from egress.audit.ship.syslog import SyslogSender

            return SyslogSender(dest)
        from egress.audit.ship.http import HttpSender

        return HttpSender(dest, self._secrets)

    def snapshot(self) -> Mapping[str, DestinationStats]:
        return dict(self.stats)
