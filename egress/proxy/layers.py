"""egress decides the protocol layer of every approved tunnel; nothing is relayed on a guess.

mitmproxy's NextLayer addon guesses a connection's protocol from whatever bytes have arrived.
Given the first byte of a ClientHello alone, or `POS` without the rest of its request line,
it guessed "raw TCP" and relayed everything after unjudged: no SNI check, no interception, no
request checks. So for a connection with an approved CONNECT, egress chooses the layer itself
and waits, bounded in bytes (here) and time (egress/proxy/connguard.py), for bytes that prove it:

    position                 bytes / ALPN                          layer
    tunnel start             complete ClientHello, SNI == host     passthrough (TCP, ignored)
                                                                    or intercept (TLS layers)
                             complete HTTP/1 request line          HTTP (judged per request)
                             anything else                         refused, or raw TCP where a
                                                                    rule says `raw_tcp: true`
    inside intercepted TLS   ALPN h2 / http/1.1 / http/1.0         HTTP
                             no ALPN, complete HTTP/1 request line HTTP
                             anything else                         refused (never raw TCP)

Hook order: under `egress serve` mitmproxy's NextLayer addon runs first (egress overrides its
choice and removes the layers it stacked); under `mitmdump -s`, script addons run *before*
NextLayer, so while egress waits it stops the hook chain (AddonHalt) to keep NextLayer from
guessing. Deferring works by leaving `nextlayer.layer` None: mitmproxy keeps the events and
asks again when more data arrives (mitmproxy/proxy/layer.py, NextLayer._ask).
"""

from __future__ import annotations

import logging
import re
import time
import weakref
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Literal

from mitmproxy import connection
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.layers import ClientTLSLayer, HttpLayer, ServerTLSLayer, TCPLayer
from mitmproxy.proxy.layers.http import HTTPMode, HttpStream
from mitmproxy.proxy.layers.tls import parse_client_hello
from mitmproxy.tls import ClientHello

from egress.audit.records import AuditKind
from egress.proxy.tunnels import Tunnel, sni_matches
from egress.reasons import Reason

__all__ = ["MAX_CLIENTHELLO_BYTES", "MAX_REQUEST_LINE_BYTES", "ClosingLayer", "LayerChooser",
           "Pending", "Refusal", "Sniffed", "request_line", "sniff"]

log = logging.getLogger("egress")

MAX_CLIENTHELLO_BYTES = 64 * 1024  # real ClientHellos are 0.5-2 KiB (post-quantum shares: ~2)
MAX_REQUEST_LINE_BYTES = 8 * 1024  # as nginx's default large_client_header_buffers line
_HTTP_ALPNS = (b"h2", b"http/1.1", b"http/1.0")
_TCHAR = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}\Z")
_TARGET = re.compile(rb"[\x21-\x7e]+\Z")  # visible ASCII, no space
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")


# -- pure: what the bytes are ------------------------------------------------------------------

LineState = Literal["complete", "partial", "invalid"]


def request_line(data: bytes) -> LineState:
    """Whether `data` starts with an HTTP/1 request line: `METHOD SP target SP HTTP/1.x CRLF`.

    "partial" while every byte so far could still become one (so a client that sends `POS`,
    pauses, then `T /x HTTP/1.1` is waited for), "invalid" as soon as one cannot.
    """
    end = data.find(b"\n", 0, MAX_REQUEST_LINE_BYTES + 1)
    complete = end != -1
    line = data[:end] if complete else data[:MAX_REQUEST_LINE_BYTES + 1]
    if line.endswith(b"\r"):
        line = line[:-1]
    if len(line) > MAX_REQUEST_LINE_BYTES:
        return "invalid"
    parts = line.split(b" ")
    if len(parts) > 3 or any(not p for p in parts[:-1]):
        return "invalid"
    method = parts[0]
    if method and not _TCHAR.match(method):
        return "invalid"
    if len(parts) >= 2 and parts[1] and not _TARGET.match(parts[1]):
        return "invalid"
    if len(parts) == 3 and not any(v.startswith(parts[2]) for v in _VERSIONS):
        return "invalid"
    if not complete:
        return "partial"
    return "complete" if len(parts) == 3 and parts[2] in _VERSIONS else "invalid"


@dataclass(frozen=True)
class Sniffed:
    """What a tunnel's first bytes are. `what`: tls (hello set), http1, wait_tls, wait_http,
    bad_tls (starts like TLS but is no ClientHello) or other."""

    what: Literal["tls", "http1", "wait_tls", "wait_http", "bad_tls", "other"]
    hello: ClientHello | None = None


def _could_be_tls(data: bytes) -> bool:
    """The bytes so far are a prefix of a TLS handshake record (type 22, version 3.x)."""
    return (data[0] == 0x16 and (len(data) < 2 or data[1] == 0x03)
            and (len(data) < 3 or data[2] <= 0x03))


def sniff(data: bytes) -> Sniffed:
    if not data:
        return Sniffed("wait_http")
    if _could_be_tls(data):
        if len(data) < 3:
            return Sniffed("wait_tls")
        try:
            hello = parse_client_hello(data)
        except ValueError:
            return Sniffed("bad_tls")
        if hello is None:
            return Sniffed("bad_tls" if len(data) > MAX_CLIENTHELLO_BYTES else "wait_tls")
        return Sniffed("tls", hello)
    state = request_line(data)
    if state == "complete":
        return Sniffed("http1")
    return Sniffed("wait_http" if state == "partial" else "other")


# -- mitmproxy glue --------------------------------------------------------------------------

@dataclass(frozen=True)
class Refusal:
    """A tunnel egress refuses: the addon audits it and closes the client connection."""

    reason: Reason
    kind: AuditKind  # tls (the ClientHello) or tunnel (what the tunnel carried)
    detail: str


WaitingFor = Literal["clienthello", "request line"]


@dataclass
class Pending:
    """A tunnel whose layer waits for more bytes: since when, and for what."""

    since: float  # time.monotonic()
    waiting_for: WaitingFor


class ClosingLayer(layer.Layer):
    """Closes the client connection at its first event; relays nothing."""

    closed = False

    def _handle_event(self, event: events.Event) -> Generator[commands.Command, Any, None]:
        if not self.closed:
            self.closed = True
            yield commands.CloseConnection(self.context.client)


class LayerChooser:
    """Chooses the layer for the positions egress owns; remembers tunnels that wait."""

    def __init__(self) -> None:
        self.pending: weakref.WeakKeyDictionary[connection.Client, Pending] = (
            weakref.WeakKeyDictionary())

    def choose(self, nextlayer: layer.NextLayer, tunnel: Tunnel | None
               ) -> layer.Layer | Refusal | Literal["wait"] | None:
        """A layer, a refusal, "wait" for more bytes, or None: not egress's position."""
        if tunnel is None:
            return None
        stack = nextlayer.context.layers
        cut = _base_length(nextlayer)
        base = stack[:cut]
        if _is_tunnel_start(base):
            decide = self._tunnel_start
        elif _is_inside_intercepted_tls(base):
            decide = self._inside_tls
        else:
            return None
        del stack[cut:]  # drop what another addon stacked before our layers are built
        outcome = decide(nextlayer, tunnel)
        client = nextlayer.context.client
        if isinstance(outcome, tuple):
            self.pending.setdefault(client, Pending(time.monotonic(), outcome[1]))
            return "wait"
        self.pending.pop(client, None)
        return outcome

    def waiting(self, client: connection.Client) -> tuple[float, str] | None:
        """(since, "clienthello" | "request line") while the client's tunnel waits for bytes."""
        pending = self.pending.get(client)
        return None if pending is None else (pending.since, pending.waiting_for)

    @staticmethod
    def kind(chosen: layer.Layer, client: connection.Client) -> Literal["http1", "relay", "tls"]:
        """What a chosen layer means for request-head timing (egress/proxy/connguard.py)."""
        if isinstance(chosen, HttpLayer):
            return "relay" if client.alpn == b"h2" else "http1"  # HTTP/2: no HTTP/1 heads
        return "tls" if isinstance(chosen, ServerTLSLayer) else "relay"

    def _tunnel_start(self, nextlayer: layer.NextLayer, tunnel: Tunnel
                      ) -> layer.Layer | Refusal | tuple[str, WaitingFor]:
        context = nextlayer.context
        if context.server.address != (tunnel.address, tunnel.port):
            return Refusal(Reason.INTERNAL_ERROR, "tunnel",
                           "tunnel's upstream address is not the vetted one")
        sniffed = sniff(nextlayer.data_client())
        if sniffed.what == "wait_tls":
            return ("wait", "clienthello")
        if sniffed.what == "wait_http":
            return ("wait", "request line")
        if sniffed.what == "tls":
            assert sniffed.hello is not None
            sni = sniffed.hello.sni
            if not sni_matches(tunnel, sni):
                return Refusal(Reason.HOST_MISMATCH, "tls",
                               f"TLS SNI {sni[:100]!r} differs from CONNECT host" if sni
                               else "no TLS SNI")
            if not tunnel.decision.intercept:
                # Passthrough, TLS end to end. Chosen here rather than in tls_clienthello: by
                # then mitmproxy has stacked two TLS layers that relay every chunk of the
                # tunnel (measured: 15-35% more CPU per keep-alive request).
                log.debug("egress: passthrough %s:%d for %s", tunnel.host, tunnel.port,
                          tunnel.skill)
                return TCPLayer(context, ignore=True)
            server_tls = ServerTLSLayer(context)
            server_tls.child_layer = ClientTLSLayer(context)
            return server_tls
        if sniffed.what == "http1":
            return HttpLayer(context, HTTPMode.transparent)
        if sniffed.what == "bad_tls":
            return Refusal(Reason.BAD_REQUEST, "tls", "tunnel carried a malformed TLS ClientHello")
        if tunnel.decision.raw_tcp:
            return TCPLayer(context, ignore=True)  # the rule allows raw TCP here
        return Refusal(Reason.PROTOCOL_NOT_ALLOWED, "tunnel",
                       "tunnel carried neither TLS nor an HTTP/1 request (no rule allows "
                       "raw_tcp here)")

    def _inside_tls(self, nextlayer: layer.NextLayer, tunnel: Tunnel
                    ) -> layer.Layer | Refusal | tuple[str, WaitingFor]:
        context = nextlayer.context
        alpn = context.client.alpn
        if alpn in _HTTP_ALPNS:
            return HttpLayer(context, HTTPMode.transparent)
        if alpn:
            return Refusal(Reason.PROTOCOL_NOT_ALLOWED, "tunnel",
                           f"TLS ALPN {alpn[:40]!r} is not HTTP")
        state = request_line(nextlayer.data_client())
        if state == "complete":
            return HttpLayer(context, HTTPMode.transparent)
        if state == "partial":
            return ("wait", "request line")
        return Refusal(Reason.PROTOCOL_NOT_ALLOWED, "tunnel",
                       "intercepted TLS carried something other than an HTTP/1 request")


def _base_length(nextlayer: layer.NextLayer) -> int:
    """How many layers sit above this decision point: context.layers without those another
    addon already stacked for it (mitmproxy's NextLayer appends the layers it builds)."""
    stack = nextlayer.context.layers
    chosen = nextlayer.layer
    inner = getattr(chosen, "inner", chosen)  # egress's byte counter wraps layers
    return stack.index(inner) if inner is not None and inner in stack else len(stack)


def _is_connect_stream(base: list[layer.Layer], end: int) -> bool:
    """base[:end] ends in the proxy's own HTTP layer and the stream of a CONNECT request."""
    if end < 2 or not isinstance(base[end - 1], HttpStream):
        return False
    http_layer = base[end - 2]
    return isinstance(http_layer, HttpLayer) and http_layer.mode is HTTPMode.regular


def _is_tunnel_start(base: list[layer.Layer]) -> bool:
    """Directly below a CONNECT: the tunnel's first bytes."""
    return _is_connect_stream(base, len(base))


def _is_inside_intercepted_tls(base: list[layer.Layer]) -> bool:
    """Below the client TLS layer egress stacked on a tunnel: the decrypted bytes."""
    return (len(base) >= 4 and isinstance(base[-1], ClientTLSLayer)
            and isinstance(base[-2], ServerTLSLayer) and _is_connect_stream(base, len(base) - 2))
