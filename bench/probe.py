"""One request through a contender, by hand, to check what it really does before timing it.

Reports the status, the body, and the certificate the client saw: nginx's own certificate
means the TLS session was passed through, any other means the proxy intercepted it. A body of
/echo-auth equal to "Bearer SECRET" means the proxy injected the credential.
"""

from __future__ import annotations

import base64
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["Probe", "probe"]


@dataclass(frozen=True)
class Probe:
    status: int
    body: bytes
    peer_der: bytes | None  # certificate of the TLS peer the client talked to

    def intercepted(self, upstream_der: bytes) -> bool:
        return self.peer_der is not None and self.peer_der != upstream_der


def probe(url: str, proxy: str | None, headers: dict[str, str], timeout: float = 10.0) -> Probe:
    target = urlsplit(url)
    host, port = target.hostname or "", target.port or (443 if target.scheme == "https" else 80)
    path = target.path or "/"
    auth: dict[str, str] = {}
    if proxy is not None:
        p = urlsplit(proxy)
        address = (p.hostname or "", p.port or 8080)
        if p.username is not None:
            creds = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
            auth = {"Proxy-Authorization": "Basic " + base64.b64encode(creds).decode()}
    else:
        address = (host, port)
    sock = socket.create_connection(address, timeout=timeout)
    try:
        peer = None
        if target.scheme == "https":
            if proxy is not None:
                lines = [f"CONNECT {host}:{port} HTTP/1.1", f"Host: {host}:{port}",
                         *(f"{k}: {v}" for k, v in auth.items())]
                sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
                status, _, body = _read_response(sock, head_only=True)
                if status != 200:
                    return Probe(status, body, None)
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # we only look at which certificate arrives
            sock = ctx.wrap_socket(sock, server_hostname=None)
            peer = sock.getpeercert(binary_form=True)
            request_target, extra = path, {}
        else:
            request_target = url if proxy is not None else path
            extra = auth
        lines = [f"GET {request_target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
                 *(f"{k}: {v}" for k, v in {**headers, **extra}.items())]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status, _, body = _read_response(sock, head_only=False)
        return Probe(status, body, peer)
    finally:
        sock.close()


def _read_response(sock: socket.socket, *, head_only: bool) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return 0, {}, data
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0") or 0)
    if head_only and status == 200:
        return status, headers, b""
    while len(rest) < length and len(rest) < 1 << 20:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length] if length else rest
