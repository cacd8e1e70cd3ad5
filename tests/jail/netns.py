"""A private "internet" for jail tests: a network namespace the test creates, joined to the
host by a veth pair, with real servers listening inside it.

Addresses come from 10.200.X.0/30 (a /30 no host route overlaps) and a random ULA /64, and
exist only on the test's own veth: no packet is ever routed to a real network. Everything
created is removed in `finally`, and `snapshot()` lets tests prove nothing was left behind.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

IP = shutil.which("ip")


def ip(*args: str, check: bool = True) -> str:
    assert IP is not None
    result = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


_OURS = re.compile(r"egress-test-[0-9a-f]{6}|egt[0-9a-f]{6}[hn]")


def existing() -> tuple[frozenset[str], frozenset[str]]:
    """Names of the named network namespaces and of the host's links."""
    namespaces = json.loads(ip("-j", "netns", "list") or "[]")
    links = json.loads(ip("-j", "link", "show") or "[]")
    return (frozenset(n["name"] for n in namespaces), frozenset(link["ifname"] for link in links))


def snapshot() -> tuple[frozenset[str], frozenset[str]]:
    """`existing()` without the tests' own internet namespaces and veths, which another run of
    the suite on the same machine may be creating or removing at the same moment."""
    namespaces, links = existing()
    return (frozenset(n for n in namespaces if not _OURS.fullmatch(n)),
            frozenset(n for n in links if not _OURS.fullmatch(n)))


def _free_subnet() -> ipaddress.IPv4Network:
    used = []
    for route in json.loads(ip("-j", "-4", "route", "show", "table", "all") or "[]"):
        dst = route.get("dst", "default")
        if dst != "default":
            used.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    octets = list(range(256))
    random.shuffle(octets)
    for octet in octets:
        net = ipaddress.IPv4Network(f"10.200.{octet}.0/30")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free /30 in 10.200.0.0/16")


@dataclass(frozen=True)
class Internet:
    name: str  # the namespace
    veth: str  # host side of the veth pair
    host_v4: str  # the host's address on the veth
    v4: str  # the "internet" host's addresses
    v6: str
    subnet: str


@contextmanager
def internet_namespace() -> Iterator[Internet]:
    suffix = secrets.token_hex(3)
    name, veth, peer = f"egress-test-{suffix}", f"egt{suffix}h", f"egt{suffix}n"
    net = _free_subnet()
    host_v4, v4 = str(net[1]), str(net[2])
    prefix = f"fd{secrets.token_hex(1)}:{secrets.token_hex(2)}:{secrets.token_hex(2)}"
    created = False
    try:
        ip("netns", "add", name)
        created = True
        ip("link", "add", veth, "type", "veth", "peer", "name", peer, "netns", name)
        ip("addr", "add", f"{host_v4}/30", "dev", veth)
        ip("-6", "addr", "add", f"{prefix}::1/64", "dev", veth, "nodad")
        ip("link", "set", veth, "up")
        ip("-n", name, "addr", "add", f"{v4}/30", "dev", peer)
        ip("-n", name, "-6", "addr", "add", f"{prefix}::2/64", "dev", peer, "nodad")
        ip("-n", name, "link", "set", peer, "up")
        ip("-n", name, "link", "set", "lo", "up")
        yield Internet(name, veth, host_v4, v4, f"{prefix}::2", str(net))
    finally:
        ip("link", "del", veth, check=False)  # deletes both ends
        if created:
            ip("netns", "del", name, check=False)


def listening_socket(namespace: str, host: str) -> socket.socket:
    """A TCP socket listening on host:free-port inside `namespace` (it stays there)."""
    result: list[socket.socket | OSError] = []

    def work() -> None:
        try:
            fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
            try:
                os.setns(fd, os.CLONE_NEWNET)  # this thread only; it ends right after
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            sock.bind((host, 0))
            sock.listen(64)
            result.append(sock)
        except OSError as exc:
            result.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    if not result or isinstance(result[0], OSError):
        raise RuntimeError(f"cannot listen on {host} in {namespace}: {result}")
    return result[0]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.dumps({"path": self.path, "host": self.headers.get("Host")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class CountingServer(ThreadingHTTPServer):
    """An HTTP(S) server on a socket made elsewhere; counts every accepted connection."""

    daemon_threads = True

    def __init__(self, sock: socket.socket, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.tls = tls
        self.connections = 0
        self.port = int(sock.getsockname()[1])
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def get_request(self) -> tuple[Any, Any]:
        conn, addr = self.socket.accept()
        self.connections += 1
        if self.tls is not None:  # the handshake happens on first read, in the handler thread
            conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, addr

    def __enter__(self) -> CountingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(10)
