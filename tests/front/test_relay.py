"""The fast path's relay (egress/proxy/front/relay.py) through a real `egress serve`: flow control
with a slow reader, half-close and reset in both directions.

The tunnels here carry raw bytes (a `raw_tcp` rule), so the test controls every byte and every
FIN and RST; TLS tunnels use the same relay once their ClientHello checked out. The upstream is
a small threaded TCP server whose behaviour the client's first line chooses.
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.adversarial.wire import open_tunnel
from tests.conftest import UPSTREAM_IP, write_policy
from tests.proxy import Proxy, run_proxy

GIB = 1 << 30
CHUNK = 1 << 20


@dataclass
class Upstream:
    port: int
    events: queue.Queue[str]


def _serve(conn: socket.socket, events: queue.Queue[str]) -> None:
    with conn:
        line = b""
        while not line.endswith(b"\n"):
            piece = conn.recv(1)
            if not piece:
                return
            line += piece
        command, _, arg = line.decode().strip().partition(" ")
        if command == "BULK":  # send N bytes as fast as the connection takes them
            block = b"x" * CHUNK
            left = int(arg)
            try:
                while left > 0:
                    conn.sendall(block[:min(left, CHUNK)])
                    left -= CHUNK
            except OSError as exc:
                events.put(f"bulk broken: {type(exc).__name__}")
                return
            events.put("bulk sent")
        elif command == "HALF":  # read to EOF, answer after it, then close
            got = b""
            while chunk := conn.recv(65536):
                got += chunk
            events.put(f"eof after {len(got)}")
            conn.sendall(b"after-eof:%d\n" % len(got))
        elif command == "RESET":  # answer, then reset the connection
            conn.sendall(b"bye\n")
            time.sleep(0.2)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif command == "WAIT":  # report how the client's side ended
            conn.sendall(b"waiting\n")
            try:
                rest = conn.recv(65536)
                events.put("eof" if rest == b"" else f"data {rest!r}")
            except ConnectionResetError:
                events.put("reset")


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    events: queue.Queue[str] = queue.Queue()
    server = socket.create_server((UPSTREAM_IP, 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=_serve, args=(conn, events), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield Upstream(server.getsockname()[1], events)
    finally:
        stop.set()
        thread.join(5)
        server.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("relay")
    policies = write_policy(tmp / "policies", f"""
        settings:
          networks: {{allow: ["{UPSTREAM_IP}/32"]}}
        skills:
          pipe:
            allow:
              - {{host: "{UPSTREAM_IP}", ports: [{upstream.port}], raw_tcp: true}}
        """)
    with run_proxy(policies, tmp / "data", ["pipe"]) as p:
        yield p


def tunnel(proxy: Proxy, upstream: Upstream, command: bytes) -> socket.socket:
    sock = open_tunnel((proxy.host, proxy.port), "pipe", proxy.tokens["pipe"], UPSTREAM_IP,
                       upstream.port, timeout=30)
    sock.sendall(command + b"\n")
    return sock


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid`, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def test_a_slow_reader_holds_back_the_sender_instead_of_growing_egress(
        proxy: Proxy, upstream: Upstream) -> None:
    if not proxy.front:
        pytest.skip("the fast path's relay (mitmproxy's is measured in bench/)")
    pid = proxy.process.pid
    before = status(pid)["VmRSS"]
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")  # VmHWM := VmRSS now, so it shows this transfer's peak
    sock = tunnel(proxy, upstream, b"BULK %d" % GIB)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(30)
    received = 0
    pauses = 0
    while received < GIB:
        chunk = sock.recv(CHUNK)
        assert chunk, f"closed after {received} bytes"
        received += len(chunk)
        # The slow part: stall for a while every 128 MiB. Without flow control the upstream
        # would fill egress with everything it can send meanwhile (loopback: gigabytes/s).
        if received >= (pauses + 1) * (128 << 20) and pauses < 4:
            pauses += 1
            time.sleep(0.75)
    sock.close()
    assert received == GIB
    assert upstream.events.get(timeout=30) == "bulk sent"
    grown = status(pid)["VmHWM"] - before
    # Generous: 64 KiB high-water + one 256 KiB read per direction, plus allocator noise.
    assert grown < 48 * 1024, f"egress grew {grown} KiB relaying 1 GiB to a slow reader"


def test_half_close_passes_the_fin_and_keeps_the_other_direction(
        proxy: Proxy, upstream: Upstream) -> None:
    sock = tunnel(proxy, upstream, b"HALF")
    sock.sendall(b"12345")
    sock.shutdown(socket.SHUT_WR)  # FIN: the upstream must see EOF ...
    assert upstream.events.get(timeout=10) == "eof after 5"
    sock.settimeout(10)
    answer = b""
    while chunk := sock.recv(100):  # ... and its answer, sent after it, must still arrive
        answer += chunk
    assert answer == b"after-eof:5\n"  # then a clean EOF (recv returned b"")
    sock.close()


def test_an_upstream_reset_reaches_the_client_as_a_reset(proxy: Proxy,
                                                        upstream: Upstream) -> None:
    sock = tunnel(proxy, upstream, b"RESET")
    sock.settimeout(10)
    assert sock.recv(100) == b"bye\n"
    with pytest.raises(ConnectionResetError):
        for _ in range(10):  # bounded: the reset arrives within the socket timeout
            if sock.recv(100) == b"":
                pytest.fail("a reset upstream looked like a clean close to the client")
    sock.close()


def test_a_client_reset_reaches_the_upstream_as_a_reset(proxy: Proxy,
                                                       upstream: Upstream) -> None:
    sock = tunnel(proxy, upstream, b"WAIT")
    sock.settimeout(10)
    assert sock.recv(100) == b"waiting\n"
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST
    assert upstream.events.get(timeout=10) == "reset"


def test_a_clean_client_close_reaches_the_upstream_as_eof(proxy: Proxy,
                                                         upstream: Upstream) -> None:
    sock = tunnel(proxy, upstream, b"WAIT")
    sock.settimeout(10)
    assert sock.recv(100) == b"waiting\n"
    sock.close()
    assert upstream.events.get(timeout=10) == "eof"


def test_the_relay_keeps_no_connection_after_both_ends_closed(proxy: Proxy,
                                                              upstream: Upstream) -> None:
    import urllib.request

    for _ in range(5):
        sock = tunnel(proxy, upstream, b"HALF")
        sock.shutdown(socket.SHUT_WR)
        assert upstream.events.get(timeout=10) == "eof after 0"
        sock.settimeout(10)
        while sock.recv(100):
            pass
        sock.close()
    admin = proxy.process.args[proxy.process.args.index("--admin") + 1]  # type: ignore
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
        if 'egress_open_connections{skill="pipe"} 0' in text:
            break
        time.sleep(0.1)
    assert 'egress_open_connections{skill="pipe"} 0' in text
