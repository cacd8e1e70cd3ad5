"""Client connections as operations sees them: open counts, bytes, and their rate-limit slots.

`ConnectionTracker` is fed by EgressAddon's `client_connected`, `client_disconnected` and
`next_layer` hooks. It knows which connections are open (for the open-connections gauge and
for SIGTERM draining), gives a closed connection's rate-limit slots back, and counts bytes.

Bytes: mitmproxy fires no hook for the bytes of a passthrough TLS tunnel (an ignored
connection has no flow), and passthrough is how most skill traffic flows. So the first layer
mitmproxy chooses for a client connection is wrapped in `CountingLayer`, which sees every
event of that connection before the real layer does: each `DataReceived` from the client is
bytes out, from an upstream bytes in (TLS tunnels: the encrypted bytes). The wrapper stays
out of `context.layers`, so the layer stack mitmproxy inspects is unchanged, and it only
reads events: it never changes, drops or delays one.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable, Generator
from typing import Any

from mitmproxy import connection
from mitmproxy.proxy import events, layer

from egress.ops.metrics import Metrics
from egress.ops.ratelimit import RateLimiter

__all__ = ["ConnectionTracker", "CountingLayer"]


class CountingLayer:
    """Forwards every event to `inner`, calling `on_bytes(from_client, size)` for data."""

    __slots__ = ("_client", "_on_bytes", "inner")

    def __init__(self, inner: layer.Layer, client: connection.Client,
                 on_bytes: Callable[[bool, int], None]) -> None:
        self.inner = inner
        self._client = client
        self._on_bytes = on_bytes

    def handle_event(self, event: events.Event) -> Generator[Any, Any, None]:
        if isinstance(event, events.DataReceived) and event.data:
            try:
                self._on_bytes(event.connection is self._client, len(event.data))
            except Exception:  # counting must never disturb the traffic
                pass
        return self.inner.handle_event(event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return repr(self.inner)


class _Conn:
    """Bytes of one open connection not yet moved into the metrics."""

    __slots__ = ("counted", "pending_in", "pending_out")

    def __init__(self) -> None:
        self.counted = False  # its outermost layer is wrapped
        self.pending_in = 0
        self.pending_out = 0


class ConnectionTracker:
    """Open client connections, their skill (once authenticated) and their byte counts."""

    def __init__(self, metrics: Metrics, limiter: RateLimiter,
                 skill_of: Callable[[connection.Client], str | None]) -> None:
        self.metrics = metrics
        self.limiter = limiter
        self._skill_of = skill_of
        self._open: weakref.WeakKeyDictionary[connection.Client, _Conn] = (
            weakref.WeakKeyDictionary())

    def connected(self, client: connection.Client) -> None:
        self._open[client] = _Conn()

    def disconnected(self, client: connection.Client) -> None:
        conn = self._open.pop(client, None)
        if conn is not None:
            self._flush(conn, self._skill_of(client) or "")
        self.limiter.release(client.id)

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        """Wrap the outermost layer of each client connection, once, to count its bytes."""
        client = nextlayer.context.client
        conn = self._open.get(client)
        if nextlayer.layer is None or conn is None or conn.counted:
            return  # undecided yet, not a connection we saw open, or already counted
        conn.counted = True

        def on_bytes(from_client: bool, size: int) -> None:
            # Per chunk only an addition (this runs for every read of every tunnel); bytes
            # reach the metrics when the connection closes or the metrics are read.
            if from_client:
                conn.pending_out += size
            else:
                conn.pending_in += size

        wrapped = CountingLayer(nextlayer.layer, client, on_bytes)
        nextlayer.layer = wrapped  # type: ignore[assignment]

    def _flush(self, conn: _Conn, skill: str) -> None:
        if conn.pending_out:
            self.metrics.add_bytes(skill, "out", conn.pending_out)
        if conn.pending_in:
            self.metrics.add_bytes(skill, "in", conn.pending_in)
        conn.pending_in = conn.pending_out = 0

    def open_by_skill(self) -> dict[str, int]:
        """Open connections per skill; "" for those not authenticated (yet). Also moves the
        bytes counted so far into the metrics, as this is called when metrics are read."""
        counts: Counter[str] = Counter()
        for client, conn in list(self._open.items()):
            skill = self._skill_of(client)
            counts[skill or ""] += 1
            if skill is not None:  # bytes before authentication wait until there is a skill
                self._flush(conn, skill)
        return dict(counts)
