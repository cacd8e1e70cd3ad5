"""A refusal's reply as bytes on the wire, exactly as the engine sends it.

mitmproxy sends a refusal the addon sets (`http.Response.make(status, body, headers)`) as an
HTTP/1.1 status line with the standard reason phrase, the reply's headers in order, then a
`content-length` header it adds itself. The fast path writes the same bytes, so a client sees
no difference between the two paths.
"""

from __future__ import annotations

import functools
from http import HTTPStatus

from egress.responses import Reply

__all__ = ["connect_established", "serialize"]


@functools.cache
def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


def serialize(reply: Reply, *, close: bool = False) -> bytes:
    """`close`: say Connection: close (the fast path closes the connection after it)."""
    head = [_status_line(reply.status)]
    head.extend(f"{name}: {value}\r\n".encode("latin-1") for name, value in reply.headers)
    if close:
        head.append(b"Connection: close\r\n")
    head.append(b"content-length: %d\r\n\r\n" % len(reply.body))
    return b"".join(head) + reply.body


def connect_established(http_version: bytes) -> bytes:
    """mitmproxy's answer to an allowed CONNECT: no headers (some clients choke on them)."""
    return http_version + b" 200 Connection established\r\n\r\n"
