"""File descriptors: `egress serve` raises the soft RLIMIT_NOFILE to the hard limit, and /readyz
and /metrics say how close it is; a proxy near the limit reports itself not ready."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from tests.conftest import write_policy
from tests.ops.conftest import parse_metrics, wait_admin, wait_until
from tests.proxy import run_proxy
from tests.upstream import free_port

HARD = 160  # egress starts with soft 40, hard 160


def readyz(port: int) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10, trust_env=False)


def test_the_soft_limit_is_raised_and_readiness_follows_descriptors_in_use(
        tmp_path: Path) -> None:
    policies = write_policy(tmp_path / "policies", """
        skills:
          s:
            allow: [{host: a.test}]
        """)
    admin = free_port()
    with run_proxy(policies, tmp_path / "data", ["s"], nofile=HARD,
                   args=["--admin", f"127.0.0.1:{admin}"]) as proxy:
        wait_admin(admin)
        assert "open files limit: 160 (hard 160)" in proxy.log()
        files = readyz(admin).json()["checks"]["files"]
        assert files["ok"] is True and files["limit"] == HARD
        baseline = files["open"]
        metrics = parse_metrics(httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=10,
                                          trust_env=False).text)
        assert metrics["egress_open_files_limit"] == HARD
        assert metrics["egress_open_files"] >= baseline

        # Idle client connections (each one descriptor in egress) until 90% are in use.
        wanted = int(HARD * 0.9) - baseline + 2
        clients = [socket.create_connection((proxy.host, proxy.port), timeout=5)
                   for _ in range(wanted)]
        try:
            resp = wait_until(lambda: (r := readyz(admin)).status_code == 503 and r)
            files = resp.json()["checks"]["files"]
            assert files["ok"] is False and files["open"] >= HARD * 0.9
            assert resp.json()["ready"] is False
        finally:
            for sock in clients:
                sock.close()
        wait_until(lambda: readyz(admin).status_code == 200)
        assert proxy.alive()
