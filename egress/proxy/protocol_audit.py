"""Audit requests mitmproxy refused before any egress hook saw them.

Bytes that do not parse as HTTP (garbage, a CONNECT without a port, a bad request line) are
answered 400 by mitmproxy's HTTP/1 layer, which only *logs* them: no flow, no hook. HTTP/2
protocol errors inside intercepted tunnels (`:authority` differing from `host`, a malformed
header block, extended CONNECT) are logged the same way and end the connection. Every refusal
must reach the audit log, so this logging handler turns those log lines into audit records
(HTTP/1: bad_request, HTTP/2: protocol_error), with the skill and tunnel host when the log
line's client connection has one. Only the kind of error is kept: the raw bytes mitmproxy
quotes could hold a token or a query string, and they never reach the audit log.

One refusal mitmproxy does not even log: an origin-form request without `Host` (it cannot
tell where to send it and answers 400 itself). `install_hostless_log` makes mitmproxy log it
in the same "Bad ..." form, so it is audited like the others.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from egress.proxy.flows import spell_address
from egress.proxy.record import Recorder
from egress.proxy.requestcheck import header_problem, method_problem, read_head
from egress.reasons import Problem, Reason

if TYPE_CHECKING:
    from mitmproxy import http

__all__ = ["ProtocolErrorAudit", "RedactRawBytes", "install_hostless_log", "mitmproxy_refusal"]

# "<client address>: <parser error>[: quoted bytes]" from mitmproxy's HTTP/1 read_headers.
_PARSE_ERROR = re.compile(
    r"^(?P<client>\[?[0-9A-Fa-f:.]+\]?:\d+): (?P<what>(Bad|Invalid|Unknown|Malformed|Unexpected)"
    r"[A-Za-z0-9 /-]{0,60})"
)
# "<client address>: <HTTP/2 error>: ..." from mitmproxy's HTTP/2 layer (Http2Connection).
_H2_ERROR = re.compile(
    r"^(?P<client>\[?[0-9A-Fa-f:.]+\]?:\d+): (?P<what>HTTP/2 protocol error|Invalid HTTP/2 "
    r"request headers|Received HTTP/2 data frame, expected headers)"
)
_INCOMPLETE = "Client closed connection before completing request headers"
HOSTLESS = "Bad request without Host header and in origin-form (destination unknown)"
# (skill, host, port) of the connection a log line is about, when egress knows it.
Describe = Callable[[Any], tuple[str | None, str, int] | None]
# A Python bytes repr, as mitmproxy quotes raw request data in these log lines.
_BYTES_REPR = re.compile(r"""b(?:'(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?)""", re.DOTALL)


class RedactRawBytes(logging.Filter):
    """Replace raw request bytes in mitmproxy's log lines with their length.

    mitmproxy quotes what it could not parse (`Bad HTTP request line: b'...'`, `Client closed
    connection before completing request headers: b'...'`). Those bytes can hold a skill's
    Proxy-Authorization token, a credential or a query string, and no secret may reach a log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "b'" in message or 'b"' in message:
            record.msg = _BYTES_REPR.sub(lambda m: f"<{len(m.group(0))} bytes redacted>", message)
            record.args = ()
        return True


class ProtocolErrorAudit(logging.Handler):
    def __init__(self, recorder: Recorder, describe: Describe | None = None) -> None:
        super().__init__(level=logging.INFO)
        self._recorder = recorder
        self._describe = describe

    def emit(self, log_record: logging.LogRecord) -> None:
        try:
            message = log_record.getMessage()
            client: str | None = None
            reason = Reason.BAD_REQUEST
            if message.startswith(_INCOMPLETE):
                detail = "unparsable request: client closed the connection before completing " \
                         "request headers"
            elif (h2 := _H2_ERROR.match(message)) is not None:
                client, reason = h2["client"], Reason.PROTOCOL_ERROR
                detail = h2["what"]
            else:
                match = _PARSE_ERROR.match(message)
                if match is None:
                    return
                client = match["client"]
                detail = f"unparsable request: {match['what'].strip()}"
            peer = getattr(log_record, "client", None)  # mitmproxy's peername of the line
            known = self._describe(peer) if self._describe else None
            skill, host, port = known if known is not None else (None, "", 0)
            self._recorder.denied(reason, kind="http", skill=skill, host=host, port=port,
                                  client=client or spell_address(peer), detail=detail)
        except Exception:  # a logging handler must never raise into mitmproxy
            self.handleError(log_record)

    def install(self) -> None:
        logger = logging.getLogger("mitmproxy.proxy.server")
        logger.addHandler(self)
        if not any(isinstance(f, RedactRawBytes) for f in logger.filters):
            logger.addFilter(RedactRawBytes())

    def uninstall(self) -> None:
        logging.getLogger("mitmproxy.proxy.server").removeHandler(self)


def install_hostless_log() -> None:
    """Make mitmproxy log the 400 it sends for an origin-form request without `Host`.

    mitmproxy answers it from HttpStream (ErrorCode.DESTINATION_UNKNOWN) without a hook or a
    log line. This wraps the private `_http1.Http1Server.send` to add one log line in the
    "Bad ..." form ProtocolErrorAudit audits; the reply itself is unchanged. Refuses loudly if
    mitmproxy's shape changed (the test suite runs it against the installed mitmproxy).
    """
    from mitmproxy.proxy import commands
    from mitmproxy.proxy.layers.http import _http1
    from mitmproxy.proxy.layers.http._events import ErrorCode, ResponseProtocolError
    from mitmproxy.utils import human

    server = _http1.Http1Server
    original = server.send
    if getattr(original, "_egress_hostless", False):
        return
    if not hasattr(ErrorCode, "DESTINATION_UNKNOWN"):
        raise RuntimeError("this mitmproxy version has no ErrorCode.DESTINATION_UNKNOWN")

    def send(self: Any, event: Any) -> Generator[Any, Any, None]:
        if (isinstance(event, ResponseProtocolError)
                and event.code is ErrorCode.DESTINATION_UNKNOWN):
            yield commands.Log(f"{human.format_address(self.conn.peername)}: {HOSTLESS}")
        yield from original(self, event)

    send._egress_hostless = True  # type: ignore[attr-defined]
    server.send = send  # type: ignore[method-assign]


def mitmproxy_refusal(request: http.Request, error: str) -> Problem:
    """Why mitmproxy refused a request it parsed (check_invalid: smuggling-prone headers, a
    CONNECT inside a tunnel), in egress's reasons where egress would refuse the same bytes."""
    nested = request.method.upper().startswith("CONNECT")
    reason = Reason.NESTED_CONNECT if nested else Reason.BAD_REQUEST
    what = "".join(c for c in error.split(":", 1)[0][:80] if c.isprintable())
    if not nested:  # name the bytes egress refuses itself (bad_header, ...) where it can
        head = read_head(request)
        problem = method_problem(head.method) or header_problem(head.fields)
        if problem is not None:
            reason, what = problem.reason, problem.detail or what
    return Problem(reason, f"mitmproxy refused the request: {what}")
