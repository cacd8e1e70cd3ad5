"""Raw-socket helpers for the envelope suites: a tunnel opener, and a TLS client whose every
record boundary and pause the test chooses (ssl.MemoryBIO + SSLObject over a plain socket).

`BioTLS` never lets the ssl module touch the socket: what it writes goes to a memory BIO, and
the test decides how those bytes reach egress (all at once, byte by byte, in chunks with
pauses). `send_records` puts each plaintext piece into a TLS record of its own.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any

from tests.clients import basic, read_response

__all__ = ["BioTLS", "open_tunnel", "recv_until_closed", "send_split", "wait_for"]


def open_tunnel(proxy: tuple[str, int], skill: str, token: str, host: str, port: int, *,
                timeout: float = 10.0) -> socket.socket:
    """CONNECT host:port as `skill`; returns the socket once egress answered 200."""
    raw = socket.create_connection(proxy, timeout=timeout)
    raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Proxy-Authorization: {basic(skill, token)}\r\n\r\n".encode())
    answer = read_response(raw, head_only=True)
    if answer.status != 200:
        raw.close()
        raise AssertionError(f"CONNECT {host}:{port} answered {answer.status}")
    return raw


def send_split(sock: socket.socket, data: bytes, cuts: Iterable[int], pause: float) -> None:
    """Send `data` in pieces cut at the given offsets, sleeping `pause` between pieces."""
    start = 0
    for cut in sorted(set(c for c in cuts if 0 < c < len(data))):
        sock.sendall(data[start:cut])
        time.sleep(pause)
        start = cut
    sock.sendall(data[start:])


def recv_until_closed(sock: socket.socket, timeout: float = 5.0, limit: int = 1 << 20) -> bytes:
    """Everything the peer sends until it closes (or `timeout` passes quietly)."""
    sock.settimeout(timeout)
    out = b""
    try:
        while len(out) < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    except (TimeoutError, ConnectionError, OSError):
        pass
    return out


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


class BioTLS:
    """A TLS client on `sock` with the wire under the test's control."""

    def __init__(self, sock: socket.socket, server_hostname: str | None, *, cafile: str | None,
                 alpn: list[str] | None = None) -> None:
        self.sock = sock
        ctx = ssl.create_default_context(cafile=cafile)
        if cafile is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols(alpn)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)

    def client_hello(self) -> bytes:
        """The ClientHello bytes (first flight), not yet sent."""
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return self.outgoing.read()

    def handshake(self, first_flight_sent: bool = True, timeout: float = 10.0) -> None:
        """Finish the handshake (the ClientHello from client_hello() must have been sent)."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(timeout)
        while time.monotonic() < deadline:
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed during the TLS handshake") from None
                self.incoming.write(data)
                continue
            self._flush()
            return
        raise TimeoutError("TLS handshake did not finish")

    def _flush(self) -> None:
        out = self.outgoing.read()
        if out:
            self.sock.sendall(out)

    def records(self, pieces: Iterable[bytes]) -> list[bytes]:
        """Encrypt each piece into TLS record(s) of its own; returns the wire bytes per piece."""
        wire = []
        for piece in pieces:
            self.obj.write(piece)
            wire.append(self.outgoing.read())
        return wire

    def send_records(self, pieces: Iterable[bytes], pause: float = 0.0) -> None:
        for i, chunk in enumerate(self.records(pieces)):
            if i and pause:
                time.sleep(pause)
            self.sock.sendall(chunk)

    def read(self, timeout: float = 5.0, limit: int = 1 << 20, until: bytes | None = None) -> bytes:
        """Decrypted bytes until the peer closes, `timeout` passes quietly, or (with `until`)
        those bytes arrived."""
        self.sock.settimeout(timeout)
        out = b""
        while len(out) < limit and (until is None or until not in out):
            try:
                out += self.obj.read(65536)
                continue
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            except ssl.SSLError:
                break
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, OSError):
                break
            if not data:
                break
            self.incoming.write(data)
        return out

    @property
    def alpn(self) -> str | None:
        return self.obj.selected_alpn_protocol()
