"""A proxy request head read off the wire exactly as mitmproxy's HTTP/1 server reads it.

One set of bytes must get one verdict, whichever front end reads it, so the fast path does not
bring a parser of its own taste. It reads a head in the engine's steps:

    framing      h11's ReceiveBuffer, the buffer mitmproxy's Http1Server reads heads from:
                 everything up to the first blank line (CRLF or bare LF); a leading blank
                 line is skipped. A head still unfinished past 64 KiB is refused (431), as
                 egress/proxy/header_limit.py makes the engine do.
    grammar      mitmproxy's `read_request_head` (mitmproxy/net/http/http1/read.py): the
                 request line split on whitespace into method, target, version; absolute-form
                 and CONNECT authorities through mitmproxy's own `url.parse_authority` and
                 `url.parse`; header lines `name:value` with obsolete line folding kept as
                 CR LF SP in the value, for egress/proxy/requestcheck.py to refuse.
    validation   mitmproxy's `validate_request` / `validate_headers` (request smuggling:
                 Transfer-Encoding with Content-Length, repeated or malformed lengths,
                 encodings it does not know), then what regular mode does before its
                 requestheaders hook: an origin-form request takes its destination from
                 `Host` (none or an unparsable one: refused), and the authority of an
                 absolute-form target is dropped (it is forwarded in origin-form).

One deliberate difference: a request line whose version is not HTTP/1.0 or HTTP/1.1 is refused
(the engine would read `HTTP/2.0` there as an HTTP/2 request, with other Host rules).

The grammar and validation are ported (about sixty lines) rather than imported, because
importing mitmproxy's reader loads mitmproxy.http and with it ~30 MB of libraries the fast
path does not need; tests/front/test_head.py feeds the same generated heads to this reader
and to mitmproxy's and requires the same answers. What the head then must look like to be
judged at all (method and header bytes, the target, Host) is requestcheck's, on both paths,
called from the gate.

Refusals carry the reason and detail the engine's path audits for the same bytes
(egress/proxy/protocol_audit.py, mitmproxy_refusal), so the audit log does not depend on
which front end read the head.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from h11._receivebuffer import ReceiveBuffer  # mitmproxy's Http1Server buffers with it too
from mitmproxy.net.http import url

from egress.proxy.gate import Arrival
from egress.proxy.header_limit import MAX_HEAD_BYTES
from egress.proxy.requestcheck import RequestHead, header_problem, method_problem
from egress.reasons import Reason

__all__ = ["HOSTLESS", "HeadError", "ProxyHead", "ReceiveBuffer", "read_head"]

HOSTLESS = "Bad request without Host header and in origin-form"  # (as protocol_audit cuts it)
_VERSION = re.compile(rb"^HTTP/\d\.\d$")
_HTTP1 = (b"HTTP/1.1", b"HTTP/1.0")
_VALID_HEADER_NAME = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9a-zA-Z]+$")
_CONTENT_LENGTH = re.compile(rb"^(?:0|[1-9][0-9]*)$")
_TE_SEPARATOR = re.compile(r"[\t ]*,[\t ]*")
_CHUNKED = frozenset({"chunked", "compress,chunked", "deflate,chunked", "gzip,chunked"})
_RESPONSE_ONLY = frozenset({"compress", "deflate", "gzip", "identity"})


@dataclass(frozen=True, slots=True)
class HeadError:
    """A head refused before the gate: audit `reason`/`detail`, answer `status`, close."""

    reason: Reason
    detail: str
    status: int = 400
    head: ProxyHead | None = None  # when the head parsed but failed validation


@dataclass(frozen=True, slots=True)
class ProxyHead:
    """A request head as the engine's requestheaders / http_connect hook would see it."""

    method: bytes  # as received
    http_version: bytes
    connect: bool
    host: str  # the destination as requested: CONNECT or absolute-form authority, or Host
    port: int
    scheme: str  # "" for CONNECT
    path: bytes  # what is forwarded: origin-form path and query ("" for CONNECT)
    fields: tuple[tuple[bytes, bytes], ...] = field(repr=False)  # every header, as read
    body: int | None  # Content-Length of the body, None when chunked
    raw: bytes = field(repr=False)  # the head's bytes as received (replayed at a hand-off)

    def values(self, name: bytes) -> list[bytes]:
        lower = name.lower()
        return [v for k, v in self.fields if k.lower() == lower]

    def joined(self, name: bytes) -> str | None:
        """The header's values joined as mitmproxy's `Headers.get` joins them, or None."""
        found = self.values(name)
        return ", ".join(_text(v) for v in found) if found else None

    @property
    def keep_alive(self) -> bool:
        """mitmproxy's `connection_close` rule, inverted (it compares tokens as sent)."""
        connection = self.joined(b"connection")
        if connection is not None:
            tokens = [t.strip() for t in connection.split(",")]
            if "close" in tokens:
                return False
            if "keep-alive" in tokens:
                return True
        return self.http_version == b"HTTP/1.1"

    def arrival(self, connection: object, peer: str | None, *,
                authenticated_as: str | None) -> Arrival:
        """What flows.arrival reads from the engine's flow at its hook, for the gate."""
        auth = self.joined(b"proxy-authorization")
        if self.connect:
            return Arrival(kind="connect", connection=connection, peer=peer, host=self.host,
                           port=self.port, proxy_authorization=auth)
        fields = tuple((k, v) for k, v in self.fields if k.lower() != b"proxy-authorization")
        head = RequestHead(
            method=self.method.decode("latin-1"), target=self.path, authority="",
            hosts=tuple(_text(v) for k, v in fields if k.lower() == b"host"), fields=fields)
        return Arrival(
            kind="http", connection=connection, peer=peer, host=self.host, port=self.port,
            proxy_authorization=auth, authenticated_as=authenticated_as, head=head,
            scheme=self.scheme, path=_text(self.path),
            headers=tuple((_text(k), _text(v)) for k, v in fields))


def read_head(buf: ReceiveBuffer) -> ProxyHead | HeadError | None:
    """The next head in `buf` (its bytes are taken out), a refusal, or None: not complete."""
    while True:
        if len(buf) > MAX_HEAD_BYTES:
            start = bytes(buf)[:MAX_HEAD_BYTES + 4]
            if b"\r\n\r\n" not in start and b"\n\n" not in start:
                return HeadError(Reason.BAD_REQUEST, "unparsable request: Bad request head "
                                 f"larger than {MAX_HEAD_BYTES} bytes", 431)
        before = bytes(buf)
        lines = buf.maybe_extract_lines()
        if lines is None:
            return None
        if lines:
            raw = before[:len(before) - len(buf)]
            return _parse([bytes(line) for line in lines], raw)
        # a blank line before the request line is skipped, as the engine skips it


def _parse(lines: list[bytes], raw: bytes) -> ProxyHead | HeadError:
    try:
        host, port, method, scheme, path, version = _request_line(lines[0])
    except ValueError:
        return HeadError(Reason.BAD_REQUEST, "unparsable request: Bad HTTP request line")
    if version not in _HTTP1:
        # The engine would read `HTTP/2.0` in an HTTP/1 request line as an HTTP/2 request
        # (other Host rules, the authority kept): one head, two readings. Refused.
        return HeadError(Reason.BAD_REQUEST, "unparsable request: Unknown HTTP version")
    try:
        fields = _headers(lines[1:])
    except _InvalidHeaders as exc:
        return HeadError(Reason.BAD_REQUEST, f"unparsable request: {exc}")
    connect = method == b"CONNECT"
    head = ProxyHead(method, version, connect, host, port, scheme, path, fields, 0, raw)
    try:
        body = _validate(head)
    except ValueError as exc:
        # The engine: validate_request refuses it and egress audits mitmproxy's refusal,
        # naming the bytes egress itself refuses (bad_header, ...) where it can.
        problem = method_problem(method.decode("latin-1")) or header_problem(fields)
        if problem is not None:
            return HeadError(problem.reason, problem.detail, head=head)
        return HeadError(Reason.BAD_REQUEST, f"smuggling-prone request refused: {exc}"[:200],
                         head=head)
    if connect:
        if body != 0:
            return HeadError(Reason.BAD_REQUEST, "CONNECT request with a body", head=head)
        return head
    if not host:  # origin-form: the destination is the Host header's (regular mode)
        try:
            host, given = url.parse_authority(head.joined(b"host") or "", check=True)
        except ValueError:
            return HeadError(Reason.BAD_REQUEST, f"unparsable request: {HOSTLESS}")
        port, scheme = given or 80, "http"
    return ProxyHead(method, version, False, host, port, scheme, path, fields, body, raw)


def _request_line(line: bytes) -> tuple[str, int, bytes, str, bytes, bytes]:
    """mitmproxy's _read_request_line: (host, port, method, scheme, path, version)."""
    method, target, version = line.split()
    port: int | None
    if target == b"*" or target.startswith(b"/"):
        scheme, path, host, port = b"", target, "", 0
    elif method == b"CONNECT":
        scheme, path = b"", b""
        host, port = url.parse_authority(target, check=True)
        if not port:
            raise ValueError
    else:
        scheme, rest = target.split(b"://", maxsplit=1)
        scheme = scheme.lower()
        authority, _, rest_path = rest.partition(b"/")
        path = b"/" + rest_path
        host, port = url.parse_authority(authority, check=True)
        port = port or url.default_port(scheme)
        if not port:
            raise ValueError
        url.parse(target)
    if not _VERSION.match(version):
        raise ValueError
    return host, port, method, scheme.decode("latin-1"), path, version


class _InvalidHeaders(ValueError):
    pass


def _headers(lines: list[bytes]) -> tuple[tuple[bytes, bytes], ...]:
    """mitmproxy's _read_headers: folded lines join the previous value with CR LF SP."""
    fields: list[tuple[bytes, bytes]] = []
    for line in lines:
        if line[0] in b" \t":
            if not fields:
                raise _InvalidHeaders("Invalid headers")
            fields[-1] = (fields[-1][0], fields[-1][1] + b"\r\n " + line.strip())
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name:
            raise _InvalidHeaders("Invalid header line")
        fields.append((name, value.strip()))
    return tuple(fields)


def _validate(head: ProxyHead) -> int | None:
    """mitmproxy's validate_request and validate_headers for a request; the body's size
    (None: chunked). Raises ValueError as they do."""
    if head.scheme not in ("http", "https", ""):
        raise ValueError(f"Invalid request scheme: {head.scheme[:16]}")
    te: list[bytes] = []
    cl: list[bytes] = []
    for name, value in head.fields:
        if not _VALID_HEADER_NAME.match(name):
            raise ValueError("invalid header name")
        lower = name.lower()
        if lower == b"transfer-encoding":
            te.append(value)
        elif lower == b"content-length":
            cl.append(value)
    if te and cl:
        raise ValueError("message with both transfer-encoding and content-length headers")
    if te:
        if len(te) > 1:
            raise ValueError("multiple transfer-encoding headers")
        if head.http_version != b"HTTP/1.1":
            raise ValueError("unexpected HTTP transfer-encoding for this HTTP version")
        if not te[0].isascii():
            raise ValueError("invalid transfer-encoding header")
        coding = _TE_SEPARATOR.sub(",", te[0].decode().lower())
        if coding in _CHUNKED:
            return None
        if coding in _RESPONSE_ONLY:
            raise ValueError("unexpected HTTP transfer-encoding for request")
        raise ValueError("unknown transfer-encoding header")
    if cl:
        if len(cl) > 1:
            raise ValueError("multiple content-length headers")
        if not _CONTENT_LENGTH.match(cl[0]):
            raise ValueError("invalid content-length header")
        return int(cl[0])
    return 0


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")
