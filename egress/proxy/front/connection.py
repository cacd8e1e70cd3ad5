"""One client connection on the fast path, from its first byte until it closes or is handed over.

    phase        what arrives                        what happens
    HEAD         a proxy request head                read (head.py); refused at once if it
                                                     cannot be judged, else DECIDING
    DECIDING     (held, bounded)                     the gate decides: a refusal is answered
                                                     (the connection stays if HTTP keep-alive
                                                     allows); an allowed passthrough CONNECT is
                                                     answered 200 and goes to TUNNEL; what needs
                                                     mitmproxy is handed over (HANDING)
    TUNNEL       the tunnel's first bytes            sniffed (egress/proxy/sniff.py): a complete
                                                     ClientHello whose SNI names the CONNECT host
                                                     -> CONNECTING; a complete HTTP/1 request line
                                                     -> handed over (requests are judged one by
                                                     one inside mitmproxy); raw bytes -> relay
                                                     only where a rule says raw_tcp; the rest
                                                     refused and audited
    CONNECTING   (held, bounded)                     the upstream, at the vetted address only
    RELAY        bytes                               egress/proxy/front/relay.py
    HANDING      (held, bounded)                     mitmproxy starts if it has not yet; the
                                                     connection and every byte read so far go
                                                     to it with the admission (egress/proxy/
                                                     engine.py, egress/proxy/handover.py)

Every refusal goes through the gate's Recorder (egress/proxy/record.py) once, with the reason,
detail and audit kind the mitmproxy path writes for the same bytes. Nothing is forwarded before
the gate has admitted it, and no upstream connection is opened before the ClientHello checked
out (deny before connect).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from enum import IntEnum
from typing import TYPE_CHECKING

from egress.audit.records import AuditKind, new_request_id
from egress.policy.decide import Destination
from egress.proxy.front.head import HeadError, ProxyHead, ReceiveBuffer, read_head
from egress.proxy.front.relay import Pipe
from egress.proxy.front.replies import connect_established, serialize
from egress.proxy.gate import Admitted, Arrival, Refused
from egress.proxy.handover import Handover
from egress.proxy.record import RequestLine
from egress.proxy.sniff import sniff
from egress.proxy.timeouts import Watch
from egress.proxy.tunnels import Tunnel, sni_matches
from egress.reasons import Reason
from egress.responses import refusal

if TYPE_CHECKING:
    from egress.proxy.front.server import FrontServer

__all__ = ["FrontConnection", "Phase"]

log = logging.getLogger("egress")

# Bytes held while a decision, an upstream connection or mitmproxy's start is awaited; past
# this the client is not read from until that is done (its TCP window fills instead).
HOLD_BYTES = 256 * 1024


class Phase(IntEnum):
    HEAD = 1
    DECIDING = 2
    TUNNEL = 3
    CONNECTING = 4
    RELAY = 5
    HANDING = 6
    CLOSED = 7


class FrontConnection(asyncio.Protocol):
    __slots__ = ("admission", "buf", "eof", "pending", "peer", "phase", "pipe", "received",
                 "server", "skill", "swept", "transport", "tunnel", "waiting", "watch")

    def __init__(self, server: FrontServer) -> None:
        self.server = server
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer: str | None = None
        self.phase = Phase.HEAD
        self.buf: ReceiveBuffer | None = ReceiveBuffer()
        self.pending: bytearray | None = None  # a tunnel's first bytes (TUNNEL, CONNECTING)
        self.skill: str | None = None  # authenticated as
        self.tunnel: Tunnel | None = None
        self.admission: tuple[ProxyHead, Arrival, Admitted] | None = None  # the tunnel's CONNECT
        self.pipe: Pipe | None = None
        self.waiting: tuple[float, str] | None = None  # (since, what) a tunnel waits for
        self.watch = Watch("", time.monotonic())
        self.received = 0  # bytes from the client before the relay (and not handed over)
        self.swept = 0  # relay bytes seen by the last sweep
        self.eof = False

    # -- asyncio -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            host = str(peer[0])
            self.peer = f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
            self.watch.peer_ip = host
        self.server.opened(self)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.watch.last_data = now
        self.received += len(data)
        phase = self.phase
        if phase is Phase.HEAD:
            assert self.buf is not None
            if self.watch.head_started is None:
                self.watch.head_started = now
            self.buf += data
            self._read_heads()
        elif phase is Phase.TUNNEL:
            assert self.pending is not None
            self.pending += data
            self._sniff(now)
        elif phase in (Phase.DECIDING, Phase.CONNECTING, Phase.HANDING):
            if self.pending is not None:
                self.pending += data
                held = len(self.pending)
            else:
                assert self.buf is not None
                self.buf += data
                held = len(self.buf)
            if held > HOLD_BYTES:
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        if self.phase is Phase.HEAD:
            if self.buf is not None and bytes(self.buf).strip():
                self._audit(Reason.BAD_REQUEST, "http", "unparsable request: client closed the "
                            "connection before completing request headers")
            return False  # nothing to answer: close
        # A decision, an upstream connection or mitmproxy is still to answer or relay.
        return self.phase in (Phase.DECIDING, Phase.CONNECTING, Phase.HANDING)

    def connection_lost(self, exc: Exception | None) -> None:
        # (Never called once the relay or mitmproxy owns the transport: they took its protocol.)
        self.phase = Phase.CLOSED
        self.server.closed(self)

    # -- HEAD: reading and judging request heads -----------------------------------------
    def _read_heads(self) -> None:
        assert self.buf is not None
        got = read_head(self.buf)
        if got is None:
            if not self.buf:
                self.watch.head_started = None  # only blank lines so far
            return
        self.watch.head_started = None
        if isinstance(got, HeadError):
            self._refuse_head(got)
            return
        self.phase = Phase.DECIDING
        self.server.spawn(self._decide(got))

    async def _decide(self, head: ProxyHead) -> None:
        arrival = head.arrival(self, self.peer, authenticated_as=self.skill)
        try:
            outcome = await self.server.deciding.gate.admit(arrival)
        except Exception:
            log.exception("egress: internal error deciding a request; refusing it")
            outcome = Refused(Reason.INTERNAL_ERROR, "internal error", self.skill,
                              _requested(head), new_request_id())
        if self.phase is Phase.CLOSED:
            self.server.deciding.limiter.release(self)  # a slot the gate took after the close
            return
        if outcome.skill is not None:
            self._authenticated(outcome.skill)
        try:
            if isinstance(outcome, Refused):
                reply = self.server.deciding.recorder.refused(arrival, outcome)
                # Say so where HTTP would have kept the connection (a body egress does not
                # read, a client that half-closed).
                close = head.keep_alive and not self._keeps(head)
                self._answer_refusal(serialize(reply, close=close), head)
            elif head.connect and not outcome.decision.intercept:
                self._open_tunnel(head, arrival, outcome)
            else:  # intercepted tunnels and plain HTTP: mitmproxy's, with this admission
                await self._hand_over(head.raw, Handover(arrival, outcome))
        except Exception:
            log.exception("egress: internal error applying a decision; closing the connection")
            self.abort()

    def _keeps(self, head: ProxyHead) -> bool:
        """The connection stays open after a refusal: HTTP keep-alive, and no body to skip."""
        return head.keep_alive and head.body == 0 and not self.eof

    def _answer_refusal(self, data: bytes, head: ProxyHead | None) -> None:
        self.transport.write(data)
        if head is None or not self._keeps(head):
            self.transport.close()
            return
        self.phase = Phase.HEAD
        self.transport.resume_reading()
        if self.buf:  # pipelined: the next head (scheduled, so a long pipeline cannot recurse)
            self.server.loop.call_soon(self._next_head)

    def _next_head(self) -> None:
        if self.phase is Phase.HEAD:
            self.watch.head_started = time.monotonic()
            self._read_heads()

    def _refuse_head(self, error: HeadError) -> None:
        """A head that cannot be judged: audited as the engine audits it, answered, closed."""
        head = error.head
        host, port = (head.host, head.port) if head is not None else ("", 0)
        rid = new_request_id()
        line = (RequestLine.of(head.method.decode("latin-1"), head.scheme or None,
                               head.path.decode("utf-8", "surrogateescape"))
                if head is not None and not head.connect else None)
        self.server.deciding.recorder.denied(
            error.reason, kind="http", skill=self.skill, host=host, port=port, client=self.peer,
            detail=error.detail, request=line, request_id=rid)
        reply = refusal(error.reason, skill=self.skill, host=host, port=port, request_id=rid)
        if error.status != reply.status:
            reply = dataclasses.replace(reply, status=error.status)
        self.phase = Phase.DECIDING  # nothing more is read
        self._answer_refusal(serialize(reply, close=True), None)

    def _authenticated(self, skill: str) -> None:
        if self.skill is None:
            self.skill = skill
            self.watch.authenticated = True
            self.server.authenticated(self)

    # -- TUNNEL: what the tunnel carries -------------------------------------------------
    def _open_tunnel(self, head: ProxyHead, arrival: Arrival, admitted: Admitted) -> None:
        assert admitted.address is not None and self.buf is not None
        dest = admitted.dest
        address = str(admitted.address)
        self.tunnel = Tunnel(admitted.skill, dest.host, dest.port, admitted.decision, address)
        self.admission = (head, arrival, admitted)
        self.server.deciding.recorder.allowed(arrival, admitted, address)
        self.transport.write(connect_established(head.http_version))
        self.pending = bytearray(bytes(self.buf))
        self.buf = None
        self.watch.awaiting_head = False
        self.phase = Phase.TUNNEL
        self.transport.resume_reading()
        if self.pending:
            self._sniff(time.monotonic())
        elif self.eof:
            self.transport.close()

    def _sniff(self, now: float) -> None:
        tunnel = self.tunnel
        assert tunnel is not None and self.pending is not None
        sniffed = sniff(bytes(self.pending))
        what = sniffed.what
        if what in ("wait_tls", "wait_http"):
            if self.waiting is None:
                self.waiting = (now, "clienthello" if what == "wait_tls" else "request line")
            if self.eof:
                self.transport.close()  # the client gave up before its first message
            return
        self.waiting = None
        if what == "tls":
            assert sniffed.hello is not None
            sni = sniffed.hello.sni
            if sni_matches(tunnel, sni):
                log.debug("egress: passthrough %s:%d for %s", tunnel.host, tunnel.port,
                          tunnel.skill)
                self._connect()
            else:
                self._refuse_tunnel(Reason.HOST_MISMATCH, "tls",
                                    f"TLS SNI {sni[:100]!r} differs from CONNECT host" if sni
                                    else "no TLS SNI")
        elif what == "http1":
            # Plain HTTP inside the tunnel: mitmproxy judges it request by request.
            assert self.admission is not None
            head, arrival, admitted = self.admission
            self.phase = Phase.HANDING
            self.server.spawn(self._hand_over(head.raw, Handover(arrival, admitted,
                                                                 recorded=True)))
        elif what == "bad_tls":
            self._refuse_tunnel(Reason.BAD_REQUEST, "tls",
                                "tunnel carried a malformed TLS ClientHello")
        elif tunnel.decision.raw_tcp:
            self._connect()  # the rule allows raw TCP here
        else:
            self._refuse_tunnel(Reason.PROTOCOL_NOT_ALLOWED, "tunnel",
                                "tunnel carried neither TLS nor an HTTP/1 request (no rule "
                                "allows raw_tcp here)")

    def _refuse_tunnel(self, reason: Reason, kind: AuditKind, detail: str) -> None:
        tunnel = self.tunnel
        assert tunnel is not None
        tunnel.refused = reason
        self._audit(reason, kind, detail)
        self.phase = Phase.CLOSED
        self.transport.close()

    # -- CONNECTING and RELAY ------------------------------------------------------------
    def _connect(self) -> None:
        self.phase = Phase.CONNECTING
        self.watch.relay = True
        self.server.spawn(self._dial())

    async def _dial(self) -> None:
        tunnel, admission = self.tunnel, self.admission
        assert tunnel is not None and admission is not None and tunnel.address is not None
        address = admission[2].address
        runtime = self.server.runtime()
        # Last line, as the addon's server_connect: only the address the gate vetted.
        if runtime is None or address is None or not runtime.guard.was_vetted(address,
                                                                              tunnel.port):
            self._audit(Reason.BLOCKED_ADDRESS, "connect",
                        "upstream connection to an address that was not vetted")
            self.abort()
            return
        pipe = Pipe(self._relay_closed)
        try:
            await self.server.loop.create_connection(lambda: pipe.upstream, tunnel.address,
                                                     tunnel.port)
        except OSError as exc:
            log.debug("egress: passthrough %s:%d: cannot connect to %s: %s", tunnel.host,
                      tunnel.port, tunnel.address, exc)
            # The allow was audited; that nothing went through is audited too (not an allow).
            self._audit(Reason.UPSTREAM_UNREACHABLE, "connect",
                        f"cannot connect to {tunnel.address}: {_connect_error(exc)}")
            self.abort()
            return
        if self.phase is Phase.CLOSED:
            pipe.upstream.transport.close()
            return
        self.pipe = pipe
        self.admission = None  # needed no more: keep idle tunnels small
        client = pipe.client
        client.transport = self.transport
        self.transport.set_protocol(client)
        self.phase = Phase.RELAY
        upstream = pipe.upstream.transport
        assert self.pending is not None
        if self.pending:
            upstream.write(bytes(self.pending))
        self.pending = None
        if self.eof:
            client.eof_received()
        self.transport.resume_reading()

    def _relay_closed(self) -> None:
        self.phase = Phase.CLOSED
        self.server.closed(self)

    # -- HANDING: to mitmproxy -----------------------------------------------------------
    async def _hand_over(self, first: bytes, handover: Handover) -> None:
        self.phase = Phase.HANDING
        engine = self.server.engine
        try:
            await engine.ready()
        except Exception:
            log.exception("egress: mitmproxy could not start; refusing what needs it")
            if self.phase is not Phase.CLOSED:
                self._fail(handover)
            return
        if self.phase is Phase.CLOSED:
            return
        held = self.pending if self.pending is not None else self.buf
        replay = first + (bytes(held) if held else b"")
        self.buf = self.pending = None
        self.server.handed_over(self, len(replay))
        await engine.adopt(self.transport, replay, handover, front_key=self, eof=self.eof)

    def _fail(self, handover: Handover) -> None:
        """mitmproxy is needed and cannot run: refuse (500), audited, instead of admitting."""
        admitted = handover.admitted
        rid = admitted.request_id
        self.server.deciding.recorder.denied(
            Reason.INTERNAL_ERROR, kind="connect" if handover.arrival.kind == "connect"
            else "http", skill=admitted.skill, host=admitted.dest.host, port=admitted.dest.port,
            client=self.peer, detail="mitmproxy could not start", request_id=rid)
        if handover.recorded:  # a tunnel answered 200 already: nothing to reply
            self.abort()
            return
        reply = refusal(Reason.INTERNAL_ERROR, skill=admitted.skill, host=admitted.dest.host,
                        port=admitted.dest.port, request_id=rid)
        self._answer_refusal(serialize(reply, close=True), None)

    # -- ending ----------------------------------------------------------------------------
    def _audit(self, reason: Reason, kind: AuditKind, detail: str) -> None:
        tunnel = self.tunnel
        self.server.deciding.recorder.denied(
            reason, kind=kind, skill=tunnel.skill if tunnel else self.skill,
            host=tunnel.host if tunnel else "", port=tunnel.port if tunnel else 0,
            client=self.peer, detail=detail)

    def expire(self, reason: Reason, detail: str) -> None:
        """A connection limit ran out (the server's sweeper): audited, closed."""
        self.watch.closing = True
        self._audit(reason, "connection", detail)
        self.close()

    def close(self) -> None:
        if self.pipe is not None:
            self.pipe.close()
        else:
            self.transport.close()

    def abort(self) -> None:
        if self.pipe is not None:
            self.pipe.abort()
        else:
            self.transport.abort()


    @property
    def relayed(self) -> int:
        return self.pipe.received if self.pipe is not None else 0


def _requested(head: ProxyHead) -> Destination:
    return Destination(head.host[:253], head.port)


def _connect_error(exc: OSError) -> str:
    """What went wrong dialling, in a few words (never more than the OS said)."""
    return (exc.strerror or type(exc).__name__)[:100]
