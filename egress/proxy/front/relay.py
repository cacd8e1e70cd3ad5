"""The byte relay of an approved passthrough tunnel: client <-> upstream, nothing in between.

Each end of a tunnel gets a `Side` (an asyncio Protocol) whose bytes are written to the other
end's transport as they arrive. The rules:

    flow control  when the transport towards a peer holds more than its high-water mark
                  (asyncio's default, 64 KiB) the transport calls `pause_writing` on its
                  protocol, and the relay stops reading from the *other* end until
                  `resume_writing`: a slow reader holds back its sender, and egress buffers at
                  most one high-water mark plus one read per direction (tests/front/
                  test_relay.py: a 1 GiB transfer to a client that reads slowly).
    half-close    an end that sends EOF (FIN) gets its FIN passed on once everything before it
                  was written; the other direction keeps flowing until it ends too, then both
                  sockets close.
    reset         an end that breaks with an error (RST, a failed write) makes the relay reset
                  the other end (SO_LINGER 0, then close: the kernel sends RST), so a peer that
                  was reset is not mistaken by the other for one that finished cleanly.
    idle          nothing here: the fast path's sweeper reads `received` and closes relays that
                  moved no byte for `settings.connections.idle_timeout`.

Per chunk the relay does one length addition and one write: no clock, no lookup, no hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable

__all__ = ["Pipe", "Side", "reset"]

_LINGER_ZERO = struct.pack("ii", 1, 0)


def reset(transport: asyncio.BaseTransport) -> None:
    """Close `transport` with a TCP RST instead of a FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    else:
        transport.close()


class Side(asyncio.Protocol):
    """One end of a relay: bytes that arrive here are written to `peer`'s transport."""

    __slots__ = ("closed", "eof", "peer", "pipe", "received", "transport")

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set at connect
        self.peer: Side = None  # type: ignore[assignment]  # set by Pipe
        self.received = 0
        self.eof = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        self.pipe.half_closed(self)
        return True  # keep our transport open: the other direction may still be flowing

    def pause_writing(self) -> None:
        # Our transport holds too much for its socket: stop reading what feeds it.
        if not self.peer.closed:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.peer.closed:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pipe.lost(self, exc)


class Pipe:
    """A tunnel's two Sides. `on_closed` runs once, when both ends are gone."""

    __slots__ = ("client", "done", "on_closed", "upstream")

    def __init__(self, on_closed: Callable[[], None]) -> None:
        self.client = Side(self)
        self.upstream = Side(self)
        self.client.peer, self.upstream.peer = self.upstream, self.client
        self.on_closed = on_closed
        self.done = False

    @property
    def received(self) -> int:
        """Bytes relayed so far, both directions (the sweeper's activity measure)."""
        return self.client.received + self.upstream.received

    def half_closed(self, side: Side) -> None:
        peer = side.peer
        if peer.closed:
            return
        if peer.eof:  # both directions ended: close once the buffers are written
            side.transport.close()
            peer.transport.close()
        elif peer.transport.can_write_eof():
            peer.transport.write_eof()  # after what is still buffered
        else:
            peer.transport.close()

    def lost(self, side: Side, exc: Exception | None) -> None:
        peer = side.peer
        if not peer.closed:
            if exc is not None:
                reset(peer.transport)
            else:
                peer.transport.close()
        if side.closed and peer.closed and not self.done:
            self.done = True
            self.on_closed()

    def close(self) -> None:
        """End the tunnel now (a timeout, a drain): both sockets close."""
        for side in (self.client, self.upstream):
            if not side.closed and side.transport is not None:
                side.transport.close()

    def abort(self) -> None:
        for side in (self.client, self.upstream):
            if not side.closed and side.transport is not None:
                side.transport.abort()
