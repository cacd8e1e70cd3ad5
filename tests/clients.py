"""Raw-socket proxy clients: they show exactly what egress answered, byte for byte."""

from __future__ import annotations

import base64
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lowercased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def request_id(self) -> str:
        return self.headers["x-egress-request-id"]


def basic(skill: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{skill}:{token}".encode()).decode()


def read_response(sock: socket.socket, *, head_only: bool = False) -> RawResponse:
    """Read one HTTP/1.1 response (Content-Length bodies only, as egress sends)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {buf!r}")
        buf += chunk
        if len(buf) > 1_000_000:
            raise ValueError("response head too large")
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if head_only:
        return RawResponse(status, headers, rest)
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return RawResponse(status, headers, rest[:length])


def send_raw(proxy: tuple[str, int], data: bytes, *, timeout: float = 10.0) -> RawResponse:
    with socket.create_connection(proxy, timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock)


def connect(proxy: tuple[str, int], target: str, auth: str | None, *,
            timeout: float = 10.0) -> RawResponse:
    """Send `CONNECT target` and return egress's answer (the tunnel is then closed)."""
    head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
    if auth is not None:
        head += f"Proxy-Authorization: {auth}\r\n"
    with socket.create_connection(proxy, timeout=timeout) as sock:
        sock.sendall((head + "\r\n").encode())
        return read_response(sock)


def client_hello(sni: str | None = "api.example.com", alpn: list[str] | None = None) -> bytes:
    """The ClientHello Python's ssl sends for `sni` (None: no SNI) and `alpn`, as bytes."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = sni is not None
    if sni is None:
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()
