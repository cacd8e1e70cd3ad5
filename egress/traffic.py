"""Byte counts of each client connection, for the `egress_bytes_total` metric.

mitmproxy fires no hook for the bytes of a passthrough TLS tunnel (an ignored connection has
no flow), and passthrough is how most skill traffic flows. So egress wraps the first layer
mitmproxy chooses for a client connection (in the `next_layer` hook) in `CountingLayer`,
which sees every event of that connection before the real layer does: each `DataReceived`
from the client is bytes out, from an upstream bytes in. The wrapper stays out of
`context.layers`, so the layer stack mitmproxy inspects is unchanged, and it only reads
events: it never changes or delays one.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from mitmproxy import connection
from mitmproxy.proxy import events

__all__ = ["CountingLayer"]


class CountingLayer:
    """Forwards every event to `inner`, calling `on_bytes(from_client, size)` for data."""

    __slots__ = ("_client", "_on_bytes", "inner")

    def __init__(self, inner: Any, client: connection.Client,
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
        return self.inner.handle_event(event)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return repr(self.inner)
