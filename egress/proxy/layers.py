"""egress decides the protocol layer of every approved tunnel; nothing is relayed on a guess.

mitmproxy's NextLayer addon guesses a connection's protocol from whatever bytes have arrived.
Given the first byte of a ClientHello alone, or `POS` without the rest of its request line,
it guessed "raw TCP" and relayed everything after unjudged: no SNI check, no interception, no
request checks. So for a connection with an approved CONNECT, egress chooses the layer itself
and waits, bounded in bytes (egress/proxy/sniff.py, shared with the fast path) and time
(egress/proxy/connguard.py), for bytes that prove it:

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
import time
import weakref
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Literal

from mitmproxy import connection
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.layers import ClientTLSLayer, HttpLayer, ServerTLSLayer, TCPLayer
from mitmproxy.proxy.layers.http import HTTPMode, HttpStream

from egress.audit.records import AuditKind
from egress.proxy.sniff import (
    MAX_CLIENTHELLO_BYTES,
    MAX_REQUEST_LINE_BYTES,
    Sniffed,
    request_line,
    sniff,
)
from egress.proxy.tunnels import Tunnel, sni_matches
from egress.reasons import Reason

__all__ = ["MAX_CLIENTHELLO_BYTES", "MAX_REQUEST_LINE_BYTES", "ClosingLayer", "LayerChooser",
           "Pending", "Refusal", "Sniffed", "request_line", "sniff"]

log = logging.getLogger("egress")

_HTTP_ALPNS = (b"h2", b"http/1.1", b"http/1.0")


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
