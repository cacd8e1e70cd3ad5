"""Syslog over TCP (optionally TLS): RFC 5424 messages in octet-counted frames (RFC 6587).

    <PRI>1 TIMESTAMP HOSTNAME egress PROCID MSGID - MSG

PRI is facility 13 ("log audit") with a severity from the decision (deny: warning, report:
notice, allow and audit events: informational); TIMESTAMP the line's `ts`; MSGID the
decision (or the event, for `kind: audit` lines); no structured data; MSG the audit line
exactly as written (ASCII JSON), so what a receiver stores can be checked with
`egress audit verify`.

Plain syslog has no acknowledgements. A line counts as delivered once (1) TCP acknowledged
its bytes (plain TCP: the socket's unsent and unacknowledged queue is past it) and (2) the
connection is still open CONFIRM_DELAY after it was written; a receiver that dies closes the
connection well within that. Lines written to a connection that then broke are sent again
on the next one, so a receiver that crashes can get the last lines before its crash twice
(`seq` tells them apart); one that restarts cleanly gets every line once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import socket
import ssl
import struct
import termios
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from egress.audit.ship.lane import ShipError
from egress.policy.ship_settings import SyslogDestination

__all__ = ["CONFIRM_DELAY", "SyslogSender", "frame"]

CONFIRM_DELAY = 0.5  # seconds a connection must stay open after a line was written
CONNECT_TIMEOUT = 10.0
FACILITY = 13  # log audit
_SEVERITY = {"deny": 4, "report": 5, "allow": 6}


def _hostname() -> str:
    name = socket.gethostname() or "-"
    return "".join(c for c in name if 33 <= ord(c) <= 126)[:255] or "-"


def frame(line: bytes, *, hostname: str, procid: str) -> bytes:
    """One audit line (with or without its newline) as an octet-counted RFC 5424 frame."""
    text = line.rstrip(b"\n")
    try:
        record = json.loads(text)
    except ValueError:
        record = {}
    if not isinstance(record, dict):
        record = {}
    decision = record.get("decision")
    severity = _SEVERITY.get(str(decision), 6)
    msgid = str(decision or record.get("event") or "-")
    msgid = "".join(c for c in msgid if 33 <= ord(c) <= 126)[:32] or "-"
    ts = str(record.get("ts") or "-")
    if not ts.isascii() or " " in ts:
        ts = "-"
    head = f"<{FACILITY * 8 + severity}>1 {ts} {hostname} egress {procid} {msgid} - ".encode()
    message = head + text
    return str(len(message)).encode() + b" " + message


@dataclass
class _Sent:
    lines: int
    end: int  # bytes written on this connection up to and with these lines
    at: float


class SyslogSender:
    """One connection at a time; `send` writes, `confirmed` says how many lines arrived."""

    confirms_on_send = False

    def __init__(self, dest: SyslogDestination, *, clock: Any = time.monotonic) -> None:
        self.dest = dest
        self._clock = clock
        self._hostname = _hostname()
        self._procid = str(__import__("os").getpid())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._written = 0
        self._window: deque[_Sent] = deque()

    async def _connect(self) -> None:
        context = None
        if self.dest.tls:
            context = ssl.create_default_context(cafile=self.dest.ca)
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.dest.host, self.dest.port, ssl=context,
                                        server_hostname=self.dest.host if context else None),
                CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise ShipError(f"cannot connect: {_describe(exc)}") from None
        self._written = 0
        self._window.clear()

    def _alive(self) -> bool:
        w, r = self._writer, self._reader
        return w is not None and r is not None and not w.is_closing() and not r.at_eof() \
            and r.exception() is None

    async def send(self, lines: list[bytes]) -> None:
        """Write `lines`; raises ShipError when the connection cannot take them (every line
        written since the last confirmation must then be sent again)."""
        if not self._alive():
            had = self._writer is not None
            await self.close()
            if had:
                raise ShipError("the receiver closed the connection")
            await self._connect()
        assert self._writer is not None
        data = b"".join(frame(line, hostname=self._hostname, procid=self._procid)
                        for line in lines)
        try:
            self._writer.write(data)
            await asyncio.wait_for(self._writer.drain(), 30.0)
        except (OSError, TimeoutError, ssl.SSLError, RuntimeError) as exc:
            await self.close()
            raise ShipError(f"write failed: {_describe(exc)}") from None
        self._written += len(data)
        self._window.append(_Sent(len(lines), self._written, self._clock()))

    def pending(self) -> int:
        """Lines written but not yet confirmed."""
        return sum(s.lines for s in self._window)

    async def confirmed(self) -> int:
        """How many more of the written lines (oldest first) count as delivered now. Raises
        ShipError when the connection broke with lines unconfirmed."""
        if not self._window:
            return 0
        if not self._alive():
            await self.close()
            raise ShipError("the connection broke before the receiver confirmed the last lines")
        acked = self._acked()
        now = self._clock()
        done = 0
        while self._window and self._window[0].at <= now - CONFIRM_DELAY \
                and self._window[0].end <= acked:
            done += self._window.popleft().lines
        return done

    def _acked(self) -> int:
        """Bytes of this connection the receiver's TCP acknowledged (plain TCP), or all
        written bytes where that cannot be known (TLS: the socket holds other bytes)."""
        w = self._writer
        if w is None:
            return 0
        buffered = int(w.transport.get_write_buffer_size())
        if self.dest.tls:
            return self._written if buffered == 0 else 0
        sock = w.get_extra_info("socket")
        try:
            raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
            unacked = int(struct.unpack("i", raw)[0])
        except (OSError, AttributeError, ValueError):
            unacked = 0
        return self._written - buffered - unacked

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        self._window.clear()
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)


def _describe(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
    return f"{type(exc).__name__}: {text}"[:200]
