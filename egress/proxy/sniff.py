"""What a tunnel's first bytes are: a complete TLS ClientHello (and its SNI), an HTTP/1 request
line, something else, or not enough bytes yet. Pure functions, shared by both front ends.

egress/proxy/layers.py (inside mitmproxy) and the fast path (egress/proxy/front/) choose a
tunnel's layer from the same answer, so one set of bytes gets one verdict on either path.

The ClientHello is read exactly as mitmproxy's `parse_client_hello`
(mitmproxy/proxy/layers/tls.py) reads it: the handshake records are joined until the message
length they announce is complete, then mitmproxy's own generated parser
(mitmproxy.contrib.kaitaistruct.tls_client_hello) decodes it, and the SNI is mitmproxy's
`ClientHello.sni` rule (one host_name entry that is a valid host). Only those small modules are
imported: `mitmproxy.tls` pulls in pyOpenSSL, cryptography and mitmproxy's whole proxy core
(~30 MB of RSS), which the fast path does not otherwise need. tests/test_sniff.py holds the two
readers to the same answers.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass
from typing import Literal

from kaitaistruct import KaitaiStream  # type: ignore[import-untyped]
from mitmproxy.contrib.kaitaistruct import tls_client_hello
from mitmproxy.net import check

__all__ = ["MAX_CLIENTHELLO_BYTES", "MAX_REQUEST_LINE_BYTES", "Hello", "LineState", "Sniffed",
           "parse_client_hello", "request_line", "sniff"]

MAX_CLIENTHELLO_BYTES = 64 * 1024  # real ClientHellos are 0.5-2 KiB (post-quantum shares: ~2)
MAX_REQUEST_LINE_BYTES = 8 * 1024  # as nginx's default large_client_header_buffers line
_TCHAR = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}\Z")
_TARGET = re.compile(rb"[\x21-\x7e]+\Z")  # visible ASCII, no space
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")

LineState = Literal["complete", "partial", "invalid"]


def request_line(data: bytes) -> LineState:
    """Whether `data` starts with an HTTP/1 request line: `METHOD SP target SP HTTP/1.x CRLF`.

    "partial" while every byte so far could still become one (so a client that sends `POS`,
    pauses, then `T /x HTTP/1.1` is waited for), "invalid" as soon as one cannot.
    """
    end = data.find(b"\n", 0, MAX_REQUEST_LINE_BYTES + 1)
    complete = end != -1
    line = data[:end] if complete else data[:MAX_REQUEST_LINE_BYTES + 1]
    if line.endswith(b"\r"):
        line = line[:-1]
    if len(line) > MAX_REQUEST_LINE_BYTES:
        return "invalid"
    parts = line.split(b" ")
    if len(parts) > 3 or any(not p for p in parts[:-1]):
        return "invalid"
    method = parts[0]
    if method and not _TCHAR.match(method):
        return "invalid"
    if len(parts) >= 2 and parts[1] and not _TARGET.match(parts[1]):
        return "invalid"
    if len(parts) == 3 and not any(v.startswith(parts[2]) for v in _VERSIONS):
        return "invalid"
    if not complete:
        return "partial"
    return "complete" if len(parts) == 3 and parts[2] in _VERSIONS else "invalid"


@dataclass(frozen=True, slots=True)
class Hello:
    """What egress reads of a ClientHello."""

    sni: str | None


def _starts_like_tls_record(d: bytes) -> bool:
    # mitmproxy.net.tls.starts_like_tls_record
    return len(d) > 2 and d[0] == 0x16 and d[1] == 0x03 and 0x00 <= d[2] <= 0x03


def _client_hello_bytes(data: bytes) -> bytes | None:
    """The ClientHello handshake message (without record headers) once its records are all
    there; None before. Raises ValueError on a record that is no handshake record."""
    hello = b""
    offset = 0
    while len(data) >= offset + 5:
        header = data[offset:offset + 5]
        if not _starts_like_tls_record(header):
            raise ValueError(f"Expected TLS record, got {header!r} instead.")
        size = struct.unpack("!H", header[3:])[0]
        if size == 0:
            raise ValueError("Record must not be empty.")
        offset += 5
        if len(data) < offset + size:
            return None
        hello += data[offset:offset + size]
        offset += size
        if len(hello) >= 4:
            length = struct.unpack("!I", b"\x00" + hello[1:4])[0] + 4
            if len(hello) >= length:
                return hello[:length]
    return None


def parse_client_hello(data: bytes) -> Hello | None:
    """A complete ClientHello's SNI, None while incomplete; ValueError if it is malformed."""
    raw = _client_hello_bytes(data)
    if not raw:
        return None
    try:
        parsed = tls_client_hello.TlsClientHello(KaitaiStream(io.BytesIO(raw[4:])))
    except EOFError as exc:
        raise ValueError("Invalid ClientHello") from exc
    return Hello(_sni(parsed))


def _sni(parsed: tls_client_hello.TlsClientHello) -> str | None:
    # mitmproxy.tls.ClientHello.sni
    if ext := getattr(parsed, "extensions", None):
        for extension in ext.extensions:
            if (extension.type == 0x00 and len(extension.body.server_names) == 1
                    and extension.body.server_names[0].name_type == 0
                    and check.is_valid_host(extension.body.server_names[0].host_name)):
                return str(extension.body.server_names[0].host_name.decode("ascii"))
    return None


@dataclass(frozen=True)
class Sniffed:
    """What a tunnel's first bytes are. `what`: tls (hello set), http1, wait_tls, wait_http,
    bad_tls (starts like TLS but is no ClientHello) or other."""

    what: Literal["tls", "http1", "wait_tls", "wait_http", "bad_tls", "other"]
    hello: Hello | None = None


def _could_be_tls(data: bytes) -> bool:
    """The bytes so far are a prefix of a TLS handshake record (type 22, version 3.x)."""
    return (data[0] == 0x16 and (len(data) < 2 or data[1] == 0x03)
            and (len(data) < 3 or data[2] <= 0x03))


def sniff(data: bytes) -> Sniffed:
    if not data:
        return Sniffed("wait_http")
    if _could_be_tls(data):
        if len(data) < 3:
            return Sniffed("wait_tls")
        try:
            hello = parse_client_hello(data)
        except ValueError:
            return Sniffed("bad_tls")
        if hello is None:
            return Sniffed("bad_tls" if len(data) > MAX_CLIENTHELLO_BYTES else "wait_tls")
        return Sniffed("tls", hello)
    state = request_line(data)
    if state == "complete":
        return Sniffed("http1")
    return Sniffed("wait_http" if state == "partial" else "other")
