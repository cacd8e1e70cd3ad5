"""Run a real egress proxy (`egress serve` in a subprocess) for end-to-end tests.

`egress serve` runs with its fast path (the default). The suites that exercise admission,
passthrough and refusals (tests/e2e, tests/adversarial) run every module twice, the second
time with `--front off` (mitmproxy takes every connection): their conftest's autouse fixture
sets `PATHS.front` per module (`proxy_path`). EGRESS_TEST_FRONT=off runs every other proxy of
the suite that way too.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from egress.identity import TokenStore
from tests.upstream import free_port

EGRESS = str(Path(sys.executable).with_name("egress"))
FRONT = os.environ.get("EGRESS_TEST_FRONT", "on")  # on | off: see the module docstring


@dataclass
class Paths:
    front: str = FRONT  # what run_proxy passes as --front unless told (tests/*/conftest.py)


PATHS = Paths()


@dataclass
class Proxy:
    host: str
    port: int
    data_dir: Path
    policies: Path
    tokens: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)
    front: bool = True  # the fast path takes connections (else mitmproxy alone)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, skill: str, token: str | None = None) -> str:
        return f"http://{skill}:{token or self.tokens[skill]}@{self.host}:{self.port}"

    @property
    def audit_path(self) -> Path:
        return self.data_dir / "audit.jsonl"

    def audit(self) -> list[dict[str, Any]]:
        return written_records(self.audit_path)

    def audit_for(self, request_id: str) -> dict[str, Any]:
        """The audit record of one response's X-Egress-Request-Id (waits briefly)."""
        for _ in range(50):
            for rec in self.audit():
                if rec["id"] == request_id:
                    return rec
            time.sleep(0.05)
        raise AssertionError(f"no audit record with id {request_id}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None


def written_lines(path: Path) -> list[str]:
    """The complete lines of a JSON-lines file egress may be appending to right now.

    egress writes each line with one os.write, but a read racing that write can see part of
    it (Linux does not make a regular file's read and write atomic with each other): the text
    after the last newline is a line still being written, left for the next read."""
    if not path.exists():
        return []
    text = path.read_text()
    return [line for line in text[:text.rfind("\n") + 1].splitlines() if line]


def written_records(path: Path) -> list[dict[str, Any]]:
    """The audit records of written_lines (a complete line that is not JSON fails the test)."""
    return [json.loads(line) for line in written_lines(path)]


def wait_port(host: str, port: int, process: subprocess.Popen[bytes] | None = None,
              timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout}s")


@contextmanager
def run_proxy(policies: Path, data_dir: Path, skills: list[str], *, host: str = "127.0.0.1",
              args: list[str] | None = None, env: dict[str, str] | None = None,
              port: int | None = None, nofile: int | None = None) -> Iterator[Proxy]:
    """Issue tokens for `skills`, start `egress serve`, stop it (SIGTERM, then SIGKILL) after.
    `nofile`: start it with RLIMIT_NOFILE soft nofile // 4, hard nofile."""
    store = TokenStore(data_dir)
    tokens = {s: store.issue(s) for s in skills}
    port = port or free_port(host)
    log_path = data_dir / "serve.log"
    args = list(args or [])
    if "--admin" not in args:  # the default admin port would collide between parallel proxies
        args += ["--admin", f"127.0.0.1:{free_port()}"]
    if "--front" not in args:
        args += ["--front", PATHS.front]
    front = args[args.index("--front") + 1] == "on"
    cmd = [EGRESS, "serve", "--policies", str(policies), "--data-dir", str(data_dir),
           "--listen", f"{host}:{port}", *args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})},
                                preexec_fn=_limit_files(nofile) if nofile else None)
    try:
        wait_port(host, port, proc)
        yield Proxy(host, port, data_dir, policies, tokens, proc, log_path, front=front)
    finally:
        stop_process(proc)


def _limit_files(nofile: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile // 4, nofile))
    return limit


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


# -- both paths --------------------------------------------------------------------------------
# tests/conftest.py imports proxy_path (autouse: run_proxy's --front follows it); tests/e2e and
# tests/adversarial use generate_paths as their pytest_generate_tests: every module there runs
# once on the fast path and once with `--front off`, unless it sets ONE_PATH = "why" (it runs
# no `egress serve`). A module-scoped fixture that starts a proxy must take `proxy_path` as an
# argument, so that pytest starts it again for the second path instead of reusing it.

def generate_paths(metafunc: pytest.Metafunc) -> None:
    if "proxy_path" in metafunc.fixturenames and not getattr(metafunc.module, "ONE_PATH", None):
        metafunc.parametrize("proxy_path", ["on", "off"], indirect=True, scope="module")


@pytest.fixture(scope="module", autouse=True)
def proxy_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which path this module's proxies run (`--front on|off`)."""
    path = getattr(request, "param", FRONT)
    before, PATHS.front = PATHS.front, path
    try:
        yield path
    finally:
        PATHS.front = before
