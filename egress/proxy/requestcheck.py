"""The shape a request head must have before egress judges it: pure checks on plain data.

Every request egress judges (plain HTTP and inside tunnels, HTTP/1.1 and HTTP/2) passes these
checks first, so that what the policy judges is byte for byte what is forwarded:

  * the method     a token, judged exactly as sent: methods are case-sensitive (RFC 9110
                   9.1), and mitmproxy's `request.method` upper-cases, so `get` was judged as
                   `GET` and forwarded as `get`.
  * header bytes   names are tokens; values hold no CR, LF, NUL or other control character
                   (HTAB aside). A lone CR is a line end to some upstreams, so
                   `X-A: a\\rTransfer-Encoding: chunked` would be a header egress never judged;
                   obsolete line folding (a value continued on the next line) is CR LF too.
  * the target     origin-form: starts with '/' ('*' for OPTIONS), no '#', no space or control
                   character. An HTTP/2 `:path` that is not origin-form would become an
                   absolute-form request line on the way to an HTTP/1 upstream.
  * the authority  exactly one Host header (or `:authority`), naming the destination that was
                   judged; an absolute-form target (HTTP/1 inside a tunnel) must name it too.
                   Servers route on an absolute-form target and ignore Host (RFC 9112 3.2.2).

Path *spelling* (dot segments, escapes) is judged by the policy itself, on rules with paths
(egress.policy.match.path_spelling_problem). Details never quote a header value: it could be
a secret.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from egress.policy.hosts import authority
from egress.reasons import Problem, Reason

if TYPE_CHECKING:
    from mitmproxy import http

__all__ = ["Problem", "RequestHead", "authority_problem", "check_head", "header_problem",
           "judged_path", "method_problem", "read_head", "target_problem"]

# Regular expressions, not Python loops: every request head egress judges passes here.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2 tchar
# Control characters a field value may not hold: all but HTAB (RFC 9110 5.5).
_VALUE_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET_FORBIDDEN = re.compile(rb"[\x00-\x20\x7f#]")


@dataclass(frozen=True)
class RequestHead:
    """What egress reads of a request head, as received."""

    method: str  # as received (mitmproxy's request.method is upper-cased)
    target: bytes  # HTTP/1 origin-form path and query (absolute-form: the part after the
    #                authority), or the HTTP/2 :path
    authority: str  # HTTP/1 absolute-form authority or the HTTP/2 :authority; "" if none
    hosts: tuple[str, ...]  # every Host header value
    fields: Sequence[tuple[bytes, bytes]]
    http2: bool = False


def read_head(request: http.Request) -> RequestHead:
    """The request head as mitmproxy parsed it (called in `requestheaders`, before any change)."""
    http2 = request.is_http2 or request.is_http3
    return RequestHead(
        method=request.data.method.decode("latin-1"), target=request.data.path,
        authority=request.authority,
        hosts=tuple(request.headers.get_all("Host")), fields=request.headers.fields, http2=http2)


def header_problem(fields: Sequence[tuple[bytes, bytes]]) -> Problem | None:
    for name, value in fields:
        if not _TOKEN.fullmatch(name):
            return Problem(Reason.BAD_HEADER, f"header name {_show(name)} is not a token")
        if _VALUE_CONTROL.search(value):
            return Problem(Reason.BAD_HEADER, f"header {_show(name)}: {_what_control(value)}")
    return None


def _what_control(value: bytes) -> str:
    if b"\r\n" in value:
        return "obsolete line folding (a value continued on the next line)"
    if b"\r" in value:
        return "bare CR in the value"
    if b"\n" in value:
        return "LF in the value"
    if b"\x00" in value:
        return "NUL in the value"
    return "control character in the value"


def method_problem(method: str) -> Problem | None:
    if not _TOKEN.fullmatch(method.encode("latin-1", "replace")):
        return Problem(Reason.BAD_REQUEST, f"method {ascii(method[:16])} is not a token")
    return None


def target_problem(method: str, target: bytes) -> Problem | None:
    if target == b"*" and method == "OPTIONS":
        return None
    if not target.startswith(b"/"):
        return Problem(Reason.BAD_REQUEST_TARGET,
                       "request target is not an origin-form path (it must start with '/')")
    if b"#" in target:
        return Problem(Reason.BAD_REQUEST_TARGET,
                       "request target holds a fragment ('#'); clients never send one")
    if _TARGET_FORBIDDEN.search(target):
        return Problem(Reason.BAD_REQUEST_TARGET,
                       "request target holds a space or control character")
    return None


def authority_problem(head: RequestHead, host: str, port: int, *,
                      require_host: bool) -> Problem | None:
    """Host header(s) and any target authority must name (host, port), the judged destination.
    A name without a port takes `port` (as Host headers of non-default ports are written)."""
    if len(head.hosts) > 1:
        return Problem(Reason.BAD_HEADER, "more than one Host header")
    named: list[tuple[str, str]] = [("Host header", h) for h in head.hosts]
    if head.authority:
        named.append((":authority" if head.http2 else "request target authority",
                      head.authority))
    # HTTP/1.1 needs Host (RFC 9112 3.2), also beside an absolute-form target, which egress
    # forwards in origin-form; HTTP/2 may carry :authority alone.
    if require_host and not head.hosts and not (head.http2 and head.authority):
        return Problem(Reason.HOST_MISMATCH, "no Host header")
    for what, value in named:
        if authority(value, port) != (host, port):
            return Problem(Reason.HOST_MISMATCH,
                           f"{what} {value[:100]!r} differs from the destination {host}:{port}")
    return None


def check_head(head: RequestHead, host: str, port: int, *, require_host: bool) -> Problem | None:
    """The first problem of a request head to (host, port), or None: the method, header
    bytes, the target, then the authority."""
    return (method_problem(head.method) or header_problem(head.fields)
            or target_problem(head.method, head.target)
            or authority_problem(head, host, port, require_host=require_host))


def judged_path(target: str) -> str:
    """The path egress judges: the target up to '?', exactly as it is forwarded."""
    return target.split("?", 1)[0]


def _show(name: bytes) -> str:
    return ascii(name[:64].decode("latin-1"))
