"""Make a connection mitmproxy was told to close really close.

mitmproxy closes a connection by cancelling its handler task, which then closes the socket.
When the close is decided while that very task is handling the connection's own data (egress
refusing an oversized WebSocket message as it arrives), the cancellation lands at the task's
next `await`; if that is the wait for mitmproxy's event lock (another task, such as a hook,
holds it) and more data from the peer is already buffered, the CancelledError escapes
`handle_connection` before it closes the socket. The client is told it was closed (a WebSocket
close frame) but the TCP connection stays open, the descriptor leaked, for as long as the
client likes (reproduced: tests/adversarial/test_websocket_abuse.py, fragmented message).

`install()` wraps `ConnectionHandler.handle_connection` so that a handler ending that way
still closes its socket. Like header_limit, it checks the shape of what it wraps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["install"]


def install() -> None:
    from mitmproxy.proxy import server

    handler_class = server.ConnectionHandler
    original: Callable[..., Coroutine[Any, Any, None]] = handler_class.handle_connection
    if getattr(original, "_egress_wrapped", False):
        return
    if not asyncio.iscoroutinefunction(original) or not hasattr(server, "ConnectionIO"):
        raise RuntimeError("this mitmproxy version has no ConnectionHandler.handle_connection "
                           "to guard")

    async def handle_connection(self: Any, connection: Any) -> None:
        try:
            await original(self, connection)
        except asyncio.CancelledError:
            io = self.transports.get(connection)
            if io is not None and io.writer is not None:
                # Cancelled before mitmproxy closed the socket: close it here.
                try:
                    io.writer.close()
                except OSError:
                    pass
                self.transports.pop(connection, None)
            raise

    handle_connection._egress_wrapped = True  # type: ignore[attr-defined]
    handle_connection._egress_original = original  # type: ignore[attr-defined]
    handler_class.handle_connection = handle_connection  # type: ignore[method-assign]
