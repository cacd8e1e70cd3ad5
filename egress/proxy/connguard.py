"""Timeouts and caps on client connections: nothing slow or idle lives forever.

mitmproxy keeps an unfinished request head, an idle connection that never authenticated or a
tunnel still waiting for its ClientHello until its own inactivity timeout (`tcp_timeout`,
600 s by default, counting any event as activity, and closing without a trace). A few tens of
thousands of those exhaust memory or file descriptors. ConnectionGuard watches every client
connection and closes it, with one audit line each (the addon writes it), when:

    request_head_timeout   an HTTP/1 request head (or a tunnel's request line) is still
                           unfinished this long after its first byte
    clienthello_timeout    a tunnel's first bytes still do not make a complete ClientHello
    idle_before_auth       a connection that has not authenticated carried no data this long
    idle_timeout           an authenticated connection carried no data either way this long
    max_unauthenticated_per_address   more connections from one client IP than this are
                           open and not authenticated yet: the new one is refused at accept

The numbers come from `settings.connections` (egress/policy/model.py, ConnectionSettings) and
are read on every sweep, so a policy reload changes them for open connections too.

How it sees a connection: at `client_connected` the proxyserver addon already holds the
connection's handler; its top layer is wrapped in `ActivityLayer`, which sees every event of
the connection before mitmproxy's layers do (whatever the addon order, mitmdump included).
How it closes one: by cancelling the handler's client task, which is what mitmproxy's own
TimeoutWatchdog does (mitmproxy/proxy/server.py, ConnectionHandler.on_timeout); mitmproxy
then tears the connection down and fires client_disconnected as usual.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import Counter
from collections.abc import Callable, Generator
from typing import Any, Literal

from mitmproxy import connection
from mitmproxy.proxy import events, layer

from egress.policy.model import ConnectionSettings
from egress.proxy.timeouts import Watch, expired, sweep_interval
from egress.reasons import Reason

__all__ = ["ActivityLayer", "ConnectionGuard", "LayerKind", "expired"]

log = logging.getLogger("egress")

# What a tunnel's layer turned out to be, as far as the head clock cares.
LayerKind = Literal["http1", "relay", "tls"]


class ActivityLayer:
    """Wraps a connection's top layer: notes data times, forwards every event unchanged."""

    __slots__ = ("_client", "_watch", "inner")

    def __init__(self, inner: layer.Layer, client: connection.Client, watch: Watch) -> None:
        self.inner = inner
        self._client = client
        self._watch = watch

    def handle_event(self, event: events.Event) -> Generator[Any, Any, None]:
        if isinstance(event, events.DataReceived) and event.data:
            watch = self._watch
            watch.last_data = now = time.monotonic()
            if (event.connection is self._client and watch.awaiting_head
                    and watch.head_started is None):
                watch.head_started = now
        return self.inner.handle_event(event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return repr(self.inner)


OnClose = Callable[[connection.Client, Reason, str], None]


class ConnectionGuard:
    """Watches client connections; closes those past a limit (see the module docstring)."""

    def __init__(self, settings: Callable[[], ConnectionSettings],
                 pending: Callable[[connection.Client], tuple[float, str] | None],
                 on_close: OnClose, proxyserver: Callable[[], Any], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`settings`: the limits in force; `pending`: a tunnel's wait for bytes (LayerChooser);
        `on_close`: audits a connection the guard closed or refused; `proxyserver`: mitmproxy's
        Proxyserver addon (looked up when needed: under mitmdump the first connections can
        arrive before the `running` hook). No I/O here."""
        self._settings = settings
        self._pending = pending
        self._on_close = on_close
        self._clock = clock
        self._watches: weakref.WeakKeyDictionary[connection.Client, Watch] = (
            weakref.WeakKeyDictionary())
        self._unauthenticated: Counter[str] = Counter()
        self._by_peer: weakref.WeakValueDictionary[Any, connection.Client] = (
            weakref.WeakValueDictionary())
        self._proxyserver = proxyserver
        self._warned = False
        self._task: asyncio.Task[None] | None = None

    # -- wiring ----------------------------------------------------------------------------
    def start(self) -> None:
        """Begin sweeping (call inside the running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sweep_forever())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    # -- events from the addon's hooks -----------------------------------------------------
    def connected(self, client: connection.Client, *,
                  authenticated: bool = False) -> Reason | None:
        """Watch a new connection; UNAUTHENTICATED_LIMIT if it must be refused at once.
        `authenticated`: handed over by the fast path, which authenticated it already."""
        settings = self._settings()
        peer_ip = str(client.peername[0]) if client.peername else ""
        if (not authenticated
                and self._unauthenticated[peer_ip] >= settings.max_unauthenticated_per_address):
            return Reason.UNAUTHENTICATED_LIMIT
        watch = Watch(peer_ip, self._clock(), authenticated=authenticated)
        handler = self._handler(client)
        if handler is None or not hasattr(handler, "transports"):
            if not self._warned:  # mitmproxy changed shape: say so loudly, once
                self._warned = True
                log.warning("egress: cannot watch client connections (no proxyserver handler "
                            "for %s): connection timeouts and caps are OFF", client.peername)
            return None
        self._watches[client] = watch
        self._by_peer[client.peername] = client
        if not authenticated:
            self._unauthenticated[peer_ip] += 1
        handler.layer = ActivityLayer(handler.layer, client, watch)
        # mitmproxy's own inactivity timeout closes without an audit line: keep it later.
        watchdog = getattr(handler, "timeout_watchdog", None)
        if watchdog is not None:
            watchdog.timeout = max(watchdog.timeout,
                                   int(max(settings.idle_timeout, settings.idle_before_auth)) + 60)
        return None

    def disconnected(self, client: connection.Client) -> None:
        watch = self._watches.pop(client, None)
        if watch is not None and not watch.authenticated:
            self._release(watch.peer_ip)

    def authenticated(self, client: connection.Client) -> None:
        watch = self._watches.get(client)
        if watch is not None and not watch.authenticated:
            watch.authenticated = True
            self._release(watch.peer_ip)

    def head_complete(self, client: connection.Client) -> None:
        """A request head was parsed (requestheaders, http_connect)."""
        watch = self._watches.get(client)
        if watch is not None:
            watch.awaiting_head = False
            watch.head_started = None

    def exchange_done(self, client: connection.Client, *, upgraded: bool, http2: bool) -> None:
        """A request/response finished: on HTTP/1 the next bytes start a new head."""
        watch = self._watches.get(client)
        if watch is None:
            return
        if upgraded or http2:
            watch.relay = True
        watch.awaiting_head = not watch.relay
        watch.head_started = None

    def layer_chosen(self, client: connection.Client, kind: LayerKind) -> None:
        """A tunnel's layer was decided; its first bytes were a head's only for HTTP/1."""
        watch = self._watches.get(client)
        if watch is None:
            return
        watch.relay = kind == "relay"
        watch.awaiting_head = kind == "http1"
        watch.head_started = self._clock() if kind == "http1" else None

    # -- reading ---------------------------------------------------------------------------
    def client_at(self, peername: Any) -> connection.Client | None:
        """The open client connection from `peername` (mitmproxy's log lines carry it)."""
        try:
            return self._by_peer.get(peername)
        except TypeError:  # not hashable: not a peername
            return None

    def unauthenticated(self) -> int:
        """Open connections that have not authenticated yet (for /metrics)."""
        return sum(self._unauthenticated.values())

    # -- sweeping --------------------------------------------------------------------------
    def sweep(self) -> int:
        """Close every connection past a limit; returns how many were closed."""
        settings = self._settings()
        now = self._clock()
        closed = 0
        for client, watch in list(self._watches.items()):
            if watch.closing:
                continue
            broken = expired(watch, settings, now, self._pending(client))
            if broken is not None and self._close(client):
                watch.closing = True
                closed += 1
                self._on_close(client, *broken)
        return closed

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(sweep_interval(self._settings()))
            try:
                self.sweep()
            except Exception:  # a bug here must not stop the sweeping
                log.exception("egress: error while checking connection timeouts")

    def _handler(self, client: connection.Client) -> Any:
        connections = getattr(self._proxyserver(), "connections", None)
        return connections.get(client.id) if connections is not None else None

    def _close(self, client: connection.Client) -> bool:
        handler = self._handler(client)
        io = handler.transports.get(client) if handler is not None else None
        task = getattr(io, "handler", None)
        if task is None:
            return False
        task.cancel("egress: connection limit")
        return True

    def _release(self, peer_ip: str) -> None:
        self._unauthenticated[peer_ip] -= 1
        if self._unauthenticated[peer_ip] <= 0:
            del self._unauthenticated[peer_ip]
