"""SIGTERM: stop accepting, let open tunnels finish (up to --drain-seconds), then exit."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.clients import basic
from tests.conftest import TestCA
from tests.ops.conftest import audit_where, get, start_ops_world, tunnel, wait_until
from tests.proxy import EGRESS, stop_process
from tests.upstream import free_port


def refuses_connections(addr: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(addr, timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:  # accepted into the backlog as the listener closed: ask again
        return False


def read_until(tls: socket.socket, marker: bytes, buf: bytes = b"", limit: int = 200) -> bytes:
    for _ in range(limit):  # bounded: each recv waits at most the socket timeout
        if marker in buf:
            return buf
        chunk = tls.recv(65536)
        if not chunk:
            break
        buf += chunk
    raise AssertionError(f"{marker!r} not received; got {buf[-200:]!r}")


def test_sigterm_lets_an_open_tunnel_finish_its_transfer(tmp_path: Path, test_ca: TestCA) -> None:
    with start_ops_world(tmp_path, test_ca, args=["--drain-seconds", "20"]) as world:
        with tunnel(world, "alpha", "api.allowed.test") as tls:
            tls.sendall(b"GET /sse?n=8&gap=0.25 HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n")
            buf = read_until(tls, b"data: event 0")

            world.proxy.process.send_signal(signal.SIGTERM)
            wait_until(lambda: refuses_connections(world.addr))  # stopped accepting

            buf = read_until(tls, b"data: event 7", buf)  # ... but the stream goes on
            buf = read_until(tls, b"0\r\n\r\n", buf)  # to its last chunk
            assert buf.count(b"data: event") == 8
            assert world.proxy.alive()  # still draining: this tunnel is open
        assert world.proxy.process.wait(20) == 0
        log = world.proxy.log()
        # (the count may include a probe from refuses_connections that raced the close)
        assert "SIGTERM: no longer accepting connections; waiting up to 20s for " in log
        assert "drained: every connection finished" in log
        # The audit log is complete: the tunnel's decision was written before exit.
        assert audit_where(world.proxy, skill="alpha", host="api.allowed.test", decision="allow")


@pytest.mark.parametrize("front", ["on", "off"])
def test_sigterm_drains_tunnels_and_requests_open_on_both_paths(tmp_path: Path, test_ca: TestCA,
                                                                front: str) -> None:
    # With the fast path on, the passthrough tunnel is relayed by the front and the plain-HTTP
    # stream by mitmproxy behind it; with --front off mitmproxy carries both.
    with start_ops_world(tmp_path, test_ca, args=["--drain-seconds", "20", "--front", front]
                         ) as world:
        plain = socket.create_connection(world.addr, timeout=10)
        try:
            with tunnel(world, "alpha", "api.allowed.test") as tls:
                tls.sendall(b"GET /sse?n=8&gap=0.25 HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n")
                target = f"plain.allowed.test:{world.plain.port}"
                plain.sendall(f"GET http://{target}/sse?n=8&gap=0.25 HTTP/1.1\r\nHost: {target}"
                              f"\r\nProxy-Authorization: {basic('alpha', world.proxy.tokens['alpha'])}"
                              f"\r\n\r\n".encode())
                relayed = read_until(tls, b"data: event 0")
                handed = read_until(plain, b"data: event 0")

                world.proxy.process.send_signal(signal.SIGTERM)
                wait_until(lambda: refuses_connections(world.addr))

                relayed = read_until(tls, b"0\r\n\r\n", relayed)
                handed = read_until(plain, b"0\r\n\r\n", handed)
                assert relayed.count(b"data: event") == handed.count(b"data: event") == 8
                assert world.proxy.alive()
        finally:
            plain.close()
        assert world.proxy.process.wait(20) == 0
        assert "drained: every connection finished" in world.proxy.log()


def test_drain_stops_waiting_after_drain_seconds(tmp_path: Path, test_ca: TestCA) -> None:
    with start_ops_world(tmp_path, test_ca, args=["--drain-seconds", "1"]) as world:
        with tunnel(world, "alpha", "api.allowed.test") as tls:
            assert get(tls, "api.allowed.test").status == 200  # then idle, never closed
            world.proxy.process.send_signal(signal.SIGTERM)
            assert world.proxy.process.wait(20) == 0
            tls.settimeout(5)
            try:
                closed = tls.recv(1) == b""
            except (ssl.SSLError, OSError):
                closed = True
            assert closed  # the idle tunnel was closed by egress's exit
        assert "drain timeout: closing 1 connections still open" in world.proxy.log()


def test_second_sigterm_stops_at_once(tmp_path: Path, test_ca: TestCA) -> None:
    with start_ops_world(tmp_path, test_ca, args=["--drain-seconds", "600"]) as world:
        with tunnel(world, "alpha", "api.allowed.test") as tls:
            assert get(tls, "api.allowed.test").status == 200
            world.proxy.process.send_signal(signal.SIGTERM)
            wait_until(lambda: "no longer accepting connections" in world.proxy.log())
            world.proxy.process.send_signal(signal.SIGTERM)
            assert world.proxy.process.wait(20) == 0
        assert "SIGTERM again: stopping now" in world.proxy.log()


@pytest.mark.parametrize("front", ["on", "off"])
def test_sigterm_during_start_up_drains_and_exits_cleanly(tmp_path: Path, front: str) -> None:
    # The fast path listens before the supervisor installs its handlers; a SIGTERM in that
    # window (a container stopped while starting, a test that signals once the port answers)
    # used to kill egress with the default action (-15) instead of a drain. The signal is sent
    # just after the "open files limit" line, which is logged after egress starts holding
    # stop signals and before its proxy starts (an intercepting rule makes that start slow).
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(
        "skills:\n  alpha:\n    allow:\n      - host: api.example.test\n        methods: [GET]\n")
    log_path = tmp_path / "serve.log"
    cmd = [EGRESS, "serve", "--policies", str(policies), "--data-dir", str(tmp_path / "data"),
           "--listen", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{free_port()}",
           "--front", front]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "open files limit" in log_path.read_text(), timeout=30, step=0.005)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()
        text = log_path.read_text()
        assert "SIGTERM: no longer accepting connections" in text
        assert "Traceback" not in text
    finally:
        stop_process(proc)
