"""Audit requests mitmproxy refused before any egress hook saw them.

Bytes that do not parse as HTTP (garbage, a CONNECT without a port, a bad request line) are
answered 400 by mitmproxy's HTTP/1 layer, which only *logs* them: no flow, no hook. Every
refusal must reach the audit log, so this logging handler turns those log lines into audit
records. Only the kind of error is kept: the raw bytes mitmproxy quotes could hold a token
or a query string, and they never reach the audit log.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from egress.audit import AuditRecord
from egress.reasons import Reason

__all__ = ["ProtocolErrorAudit", "RedactRawBytes"]

# "<client address>: <parser error>[: quoted bytes]" from mitmproxy's HTTP/1 read_headers.
_PARSE_ERROR = re.compile(
    r"^(?P<client>\[?[0-9A-Fa-f:.]+\]?:\d+): (?P<what>(Bad|Invalid|Unknown|Malformed|Unexpected)"
    r"[A-Za-z0-9 /-]{0,60})"
)
_INCOMPLETE = "Client closed connection before completing request headers"
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
    def __init__(self, record: Callable[[AuditRecord], None], policy_digest: Callable[[], str]) -> None:
        super().__init__(level=logging.INFO)
        self._record = record
        self._digest = policy_digest

    def emit(self, log_record: logging.LogRecord) -> None:
        try:
            message = log_record.getMessage()
            client: str | None = None
            if message.startswith(_INCOMPLETE):
                what = "client closed the connection before completing request headers"
            else:
                match = _PARSE_ERROR.match(message)
                if match is None:
                    return
                client, what = match["client"], match["what"].strip()
            self._record(AuditRecord(
                decision="deny", reason=Reason.BAD_REQUEST, kind="http", host="", port=0,
                client=client, policy=self._digest(), detail=f"unparsable request: {what}",
            ))
        except Exception:  # a logging handler must never raise into mitmproxy
            self.handleError(log_record)

    def install(self) -> None:
        logger = logging.getLogger("mitmproxy.proxy.server")
        logger.addHandler(self)
        if not any(isinstance(f, RedactRawBytes) for f in logger.filters):
            logger.addFilter(RedactRawBytes())

    def uninstall(self) -> None:
        logging.getLogger("mitmproxy.proxy.server").removeHandler(self)
