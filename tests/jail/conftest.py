"""The jail tests' world: a private internet namespace with servers, a DNS server, a real
egress, and a directory the jailed user (nobody) can read.

    host namespace: egress serve (127.0.0.1), admin (127.0.0.1), DNS server (127.0.0.1)
        │ veth (created by the test, 10.200.X.0/30 + a ULA /64)
    internet namespace: plain HTTP on v4 and v6, HTTPS on v4

Needs root, `ip`, `bwrap` and libseccomp; every test here is skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from egress.jail import syscall_filter
from tests.conftest import TestCA, write_policy
from tests.dnsserver import DnsServer
from tests.jail.netns import IP, CountingServer, Internet, existing, internet_namespace, listening_socket
from tests.proxy import EGRESS, Proxy, run_proxy
from tests.upstream import CountingListener, free_port

JAILED_USER = "nobody"
JAILED_UID = 65534

SKIP_REASON = (
    "needs root (network namespaces)" if os.geteuid() != 0 else
    "needs `ip` from iproute2 (apt-get install iproute2)" if IP is None else
    "needs Linux" if not sys.platform.startswith("linux") else
    "needs `bwrap` (apt-get install bubblewrap)" if shutil.which("bwrap") is None else
    syscall_filter.unavailable()
)
needs_netns = [pytest.mark.netns, pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")]


def netns_only(test: Callable[..., None]) -> Callable[..., None]:
    """Mark one test like a module with `pytestmark = needs_netns`."""
    for mark in reversed(needs_netns):
        test = mark(test)
    return test


def probe_python() -> str | None:
    """An interpreter the jailed user can run (the venv's may sit under /root)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", sys.executable):
        if not os.path.exists(candidate):
            continue
        try:
            ok = subprocess.run([candidate, "-c", "pass"], user=JAILED_UID, group=JAILED_UID,
                                extra_groups=[], capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return candidate
    return None


@dataclass
class JailWorld:
    internet: Internet
    plain: CountingServer
    plain6: CountingServer
    tls: CountingServer
    dns: DnsServer
    proxy: Proxy
    admin: CountingListener  # a host loopback service the jail must not reach
    admin_port: int  # egress's real admin endpoint
    public: Path  # readable by the jailed user: probe.py, test-ca.pem
    python: str | None

    def connections(self) -> int:
        return self.plain.connections + self.plain6.connections + self.tls.connections

    def exec_argv(self, command: list[str], *extra: str) -> list[str]:
        return [EGRESS, "exec", "--skill", "jailed", "--proxy", self.proxy.address,
                "--data-dir", str(self.proxy.data_dir), "--user", JAILED_USER, *extra, "--", *command]

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_")}
        return {**env, "EGRESS_TOKEN": self.proxy.tokens["jailed"], **extra}

    def run(self, command: list[str], *extra: str, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.exec_argv(command, *extra), capture_output=True, text=True,
                              timeout=timeout, env=self.env(**(env or {})))

    def probe_argv(self, **action: Any) -> list[str]:
        if self.python is None:
            pytest.skip("no Python interpreter the jailed user can run")
        return [self.python, str(self.public / "probe.py"), json.dumps(action)]

    def probe(self, *extra: str, env: dict[str, str] | None = None, **action: Any) -> dict[str, Any]:
        """Run probe.py inside egress exec (`extra`: more egress exec options); its JSON answer."""
        result = self.run(self.probe_argv(**action), *extra, env=env)
        assert result.returncode == 0, result.stderr
        answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return answer


@pytest.fixture(scope="session")
def public_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="egress-jail-test-"))
    try:
        path.chmod(0o755)
        shutil.copy(Path(__file__).with_name("probe.py"), path / "probe.py")
        (path / "probe.py").chmod(0o644)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def jail_world(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA,
               public_dir: Path) -> Iterator[JailWorld]:
    if SKIP_REASON is not None:
        pytest.skip(SKIP_REASON)
    tmp = tmp_path_factory.mktemp("jail")
    shutil.copy(test_ca.path, public_dir / "test-ca.pem")
    (public_dir / "test-ca.pem").chmod(0o644)
    cert = test_ca.ca.issue_cert("upstream.jail.test", "denied.jail.test")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(tls)
    with internet_namespace() as net, \
            CountingServer(listening_socket(net.name, net.v4)) as plain, \
            CountingServer(listening_socket(net.name, net.v6)) as plain6, \
            CountingServer(listening_socket(net.name, net.v4), tls) as tls_server, \
            DnsServer() as dns:
        for name in ("upstream.jail.test", "denied.jail.test"):
            dns.set(name, [net.v4], ttl=300)
        policies = write_policy(tmp / "policies", f"""
            settings:
              dns: {{nameservers: ["{dns.address}"], timeout: 2}}
              networks: {{allow: ["{net.subnet}"]}}
            skills:
              jailed:
                allow:
                  - host: upstream.jail.test
                    ports: [{plain.port}, {tls_server.port}]
            """)
        admin_port = free_port()
        admin = CountingListener("127.0.0.1")
        try:
            with run_proxy(policies, tmp / "data", ["jailed"],
                           args=["--admin", f"127.0.0.1:{admin_port}"]) as proxy:
                yield JailWorld(net, plain, plain6, tls_server, dns, proxy, admin, admin_port,
                                public_dir, probe_python())
        finally:
            admin.close()
    namespaces, links = existing()
    assert net.name not in namespaces and net.veth not in links, f"{net} was left behind"
