"""Bodies around a brokered credential: mitmproxy glue for egress/credentials/detect.py.

* Responses to a request egress put a key into are redacted while they stream: every form of
  the key (egress/credentials/detect.py `echo_forms`) becomes a same-length marker, so Content-Length
  and HTTP/2 framing stay right and nothing is buffered beyond a possible start of the key.
  A response egress cannot read (a `Content-Encoding` other than identity, which the upstream
  sent although egress asked for `Accept-Encoding: identity`) is refused: the flow is killed.
* WebSocket messages from the upstream on such a flow are redacted the same way.
* Request bodies of a skill that holds credentials, to a destination a credential is not
  bound to, are scanned while they stream. The chunk that holds a placeholder or a key is
  never forwarded: egress aborts the upstream connection at once (its unsent buffer with it),
  so the upstream never sees a complete request, and the client's request fails.

Only this module reaches into mitmproxy's connection handler (to abort one upstream socket);
tests/adversarial/test_credential_echo.py checks it against the installed mitmproxy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from mitmproxy import ctx, http

from egress.credentials.broker import redact
from egress.credentials.detect import BodyRedactor, BodyScanner, echo_forms, encoded_forms
from egress.secrets import Secret

__all__ = ["ENCODED", "abort_upstream", "carried_in_body", "install_response_guard",
           "redact_message", "request_scanner", "response_redactor", "unreadable_encoding"]

log = logging.getLogger("egress")

ENCODED = "content-encoding"
_READABLE = ("", "identity")


def unreadable_encoding(response: http.Response, method: str) -> str | None:
    """The Content-Encoding that hides a response body from redaction, or None."""
    if method == "HEAD" or response.status_code in (204, 304):
        return None  # no body at all
    value = response.headers.get(ENCODED, "").strip().lower()
    return None if value in _READABLE else value[:40]


def install_response_guard(flow: http.HTTPFlow, secrets: Sequence[Secret]) -> str | None:
    """Stream `flow`'s response; through the redactor when egress put `secrets` into the
    request (headers redacted now). Returns why it must be refused (an encoding egress cannot
    read), or None."""
    assert flow.response is not None
    flow.response.stream = True
    if not secrets:
        return None
    fields = [(k, v) for k, v in flow.response.headers.items(multi=True)]
    changed = False
    for secret in secrets:
        cleaned = redact(fields, secret.reveal())
        if cleaned is not None:
            fields, changed = cleaned, True
    if changed:
        flow.response.headers = http.Headers([(k.encode(), v.encode()) for k, v in fields])
    encoding = unreadable_encoding(flow.response, flow.request.method)
    if encoding is not None:
        return f"response Content-Encoding {encoding!r}"
    flow.response.stream = response_redactor(*(s.reveal() for s in secrets))
    return None


def response_redactor(*secrets: str) -> Callable[[bytes], bytes]:
    """A `flow.response.stream` callable that redacts `secrets` in every form they may take."""
    redactor = BodyRedactor([f for secret in secrets for f in echo_forms(secret)])

    def stream(chunk: bytes) -> bytes:
        return redactor.feed(chunk) if chunk else redactor.finish()

    return stream


def redact_message(content: bytes, *secrets: str) -> bytes | None:
    """A whole WebSocket message with `secrets` redacted, or None when it holds none."""
    redactor = BodyRedactor([f for secret in secrets for f in echo_forms(secret)])
    out = redactor.feed(content) + redactor.finish()
    return out if redactor.redacted else None


def request_scanner(flow: http.HTTPFlow, needles: Mapping[str, Sequence[str]],
                    on_found: Callable[[str], None]) -> Callable[[bytes], bytes]:
    """A `flow.request.stream` callable that forwards a body until it shows one of `needles`
    (credential name -> values), then aborts the upstream connection and calls on_found."""
    scanner = BodyScanner({name: [f for v in values for f in encoded_forms(v)]
                           for name, values in needles.items()})

    def stream(chunk: bytes) -> bytes:
        tripped = scanner.found is not None
        out = scanner.feed(chunk) if chunk else scanner.finish()
        if scanner.found is not None and not tripped:
            abort_upstream(flow)  # before mitmproxy writes anything more, end of message too
            on_found(scanner.found)
        if scanner.found is not None:
            abort_upstream(flow)  # every later call too: nothing may follow
        return out

    return stream


def carried_in_body(body: bytes, needles: Mapping[str, Sequence[str]]) -> str | None:
    """The credential a whole (buffered) request body carries, or None."""
    scanner = BodyScanner({name: [f for v in values for f in encoded_forms(v)]
                           for name, values in needles.items()})
    scanner.feed(body)
    scanner.finish()
    return scanner.found


def abort_upstream(flow: http.HTTPFlow) -> None:
    """Close the flow's upstream socket now, discarding what it has not sent yet.

    Raises if the socket cannot be found: the exception stops mitmproxy's handling of this
    event (nothing more is forwarded) rather than letting the request complete."""
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = proxyserver.connections.get(flow.client_conn.id) if proxyserver else None
    io = handler.transports.get(flow.server_conn) if handler is not None else None
    writer = getattr(io, "writer", None)
    transport = getattr(writer, "transport", None)
    if transport is None:
        if handler is not None and flow.server_conn not in handler.transports:
            return  # already closed
        raise RuntimeError("egress: cannot abort the upstream connection; refusing to go on")
    transport.abort()
