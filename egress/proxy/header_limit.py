"""Cap the size of an HTTP/1 request head before mitmproxy buffers it without limit.

mitmproxy's HTTP/1 server keeps every byte of an unfinished request head in memory (its code
says "FIXME: protect against header size DoS"): any local process, before authenticating,
could grow egress by hundreds of megabytes with one endless header line. egress answers such
a client `431` and closes the connection once the head passes `MAX_HEAD_BYTES`.

This wraps a method of mitmproxy's private `_http1.Http1Server`. `install()` checks that the
method still has the shape it wraps and refuses loudly otherwise (the test suite runs it
against the installed mitmproxy), rather than silently not protecting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Any

__all__ = ["MAX_HEAD_BYTES", "install"]

MAX_HEAD_BYTES = 64 * 1024  # browsers and servers commonly cap heads at 8-64 KiB

log = logging.getLogger("egress")


def install(max_bytes: int = MAX_HEAD_BYTES) -> None:
    from mitmproxy.net.http import status_codes
    from mitmproxy.proxy import commands, events
    from mitmproxy.proxy.layers.http import _http1
    from mitmproxy.utils import human

    server = _http1.Http1Server
    original: Callable[..., Generator[Any, Any, None]] = server.read_headers
    if getattr(original, "_egress_limit", None) == max_bytes:
        return
    original = getattr(original, "_egress_original", original)
    if not callable(original) or not hasattr(_http1, "make_error_response"):
        raise RuntimeError("this mitmproxy version has no Http1Server.read_headers to guard")

    def read_headers(self: Any, event: Any) -> Generator[Any, Any, None]:
        if isinstance(event, events.DataReceived) and len(self.buf) > max_bytes:
            head = bytes(self.buf)[: max_bytes + 4]
            if b"\r\n\r\n" not in head and b"\n\n" not in head:
                self.state = self.done  # nothing more is read from this connection
                # "Bad ..." makes ProtocolErrorAudit write the refusal to the audit log.
                yield commands.Log(f"{human.format_address(self.conn.peername)}: Bad request "
                                   f"head larger than {max_bytes} bytes")
                yield commands.SendData(self.conn, _http1.make_error_response(
                    431, status_codes.RESPONSES.get(431, "Request Header Fields Too Large")))
                yield commands.CloseConnection(self.conn)
                return
        yield from original(self, event)

    read_headers._egress_limit = max_bytes  # type: ignore[attr-defined]
    read_headers._egress_original = original  # type: ignore[attr-defined]
    server.read_headers = read_headers  # type: ignore[method-assign]
