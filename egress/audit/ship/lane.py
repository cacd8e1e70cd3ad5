"""One destination's lane: read from its spool cursor, send, confirm, move the cursor.

The lane keeps two places in the spool: the cursor (every line before it is confirmed by the
destination; kept on disk by the spool) and how far it has sent. When sending fails, or a
connection breaks before its lines were confirmed, it goes back to the cursor and sends from
there again after a backoff (0.2 s doubling to MAX_BACKOFF), so lines arrive in order and
none is skipped. Counters for metrics live in `DestinationStats`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from egress.audit.spool import Position, Spool

__all__ = ["DestinationStats", "Lane", "Sender", "ShipError"]

log = logging.getLogger("egress.audit")

MIN_BACKOFF = 0.2
MAX_BACKOFF = 5.0
POLL = 0.1  # seconds between looks at the spool when there is nothing to send
_TS = re.compile(rb'"ts":"([^"]{10,40})"')


class ShipError(Exception):
    """A destination did not take a batch (down, refused, answered an error). The message is
    safe to log: no token, no line content."""


class Sender(Protocol):
    confirms_on_send: bool  # True: a send that returns was delivered (HTTP 2xx)

    async def send(self, lines: list[bytes]) -> None: ...

    async def confirmed(self) -> int:
        """Lines (of those sent, oldest first) confirmed since the last call."""
        ...

    def pending(self) -> int: ...

    async def close(self) -> None: ...


@dataclass
class DestinationStats:
    """What /metrics and /readyz show of one destination (written by its lane)."""

    name: str
    shipped: int = 0  # lines confirmed
    failed: int = 0  # attempts that failed (each retried)
    oldest: float | None = None  # unix time of the oldest line not yet confirmed
    last_error: str | None = None


@dataclass
class _Unconfirmed:
    end: Position
    lines: int
    first: float | None  # unix time of its first line


class Lane:
    def __init__(self, name: str, spool: Spool, sender: Sender, stats: DestinationStats,
                 *, batch: int = 500) -> None:
        self.name, self.spool, self.sender, self.stats = name, spool, sender, stats
        self.batch = batch
        self._unconfirmed: deque[_Unconfirmed] = deque()
        self._failing = False

    async def run(self, stopping: asyncio.Event) -> None:
        pos: Position | None = None
        backoff = MIN_BACKOFF
        try:
            while True:
                cursor = self.spool.cursor(self.name)
                if cursor is None:
                    return  # no longer configured
                if pos is None or cursor.index > pos.index:
                    pos = cursor  # a start, or the spool dropped lines under us
                    self._unconfirmed.clear()
                try:
                    self._confirm(await self.sender.confirmed())
                    batch = getattr(self.sender, "batch", self.batch)
                    lines, after = self.spool.read(pos, batch)
                    self._note_oldest(lines)
                    if lines:
                        await self.sender.send(lines)
                        self._sent(lines, after)
                        pos = after
                        backoff = MIN_BACKOFF
                        continue
                    if stopping.is_set() and not self.sender.pending():
                        return
                    await asyncio.sleep(POLL)
                except ShipError as exc:
                    self._failed(exc)
                    pos = None  # send again from the cursor
                    if stopping.is_set():
                        return
                    await _sleep(backoff, stopping)
                    backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            await self.sender.close()

    def _sent(self, lines: list[bytes], after: Position) -> None:
        if self._failing:
            self._failing = False
            log.info("egress: audit shipping to %s works again", self.name)
        if self.sender.confirms_on_send:
            self.spool.commit(self.name, after)
            self.stats.shipped += len(lines)
        else:
            self._unconfirmed.append(_Unconfirmed(after, len(lines), _time(lines[0])))

    def _confirm(self, count: int) -> None:
        last: Position | None = None
        while count > 0 and self._unconfirmed:
            entry = self._unconfirmed.popleft()
            count -= entry.lines
            self.stats.shipped += entry.lines
            last = entry.end
        if last is not None:
            self.spool.commit(self.name, last)

    def _note_oldest(self, read: list[bytes]) -> None:
        if self._unconfirmed:
            self.stats.oldest = self._unconfirmed[0].first
        elif read:
            self.stats.oldest = _time(read[0])
        elif self.spool.depth(self.name) == 0:
            self.stats.oldest = None

    def _failed(self, exc: ShipError) -> None:
        self.stats.failed += 1
        self.stats.last_error = str(exc)
        self._unconfirmed.clear()
        if not self._failing:
            self._failing = True
            log.warning("egress: audit shipping to %s failed (%s); lines wait in the spool "
                        "and are retried", self.name, exc)


async def _sleep(seconds: float, stopping: asyncio.Event) -> None:
    """Sleep, or less when egress is stopping."""
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
    except TimeoutError:
        pass


def _time(line: bytes) -> float | None:
    match = _TS.search(line)
    if match is None:
        return None
    try:
        return datetime.fromisoformat(match.group(1).decode()).timestamp()
    except ValueError:
        return time.time()
