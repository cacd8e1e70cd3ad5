"""docker/entrypoint.py, the container's entrypoint, run for real outside Docker."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import trustme

from egress.identity import TokenStore
from tests.clients import basic, connect
from tests.conftest import write_policy
from tests.dnsserver import DnsServer
from tests.proxy import stop_process, wait_port, written_records
from tests.upstream import Upstream, free_port, run_upstream

ENTRYPOINT = Path(__file__).parents[2] / "docker" / "entrypoint.py"
UPSTREAM_IP = "127.0.0.2"


def load_entrypoint() -> ModuleType:
    spec = importlib.util.spec_from_file_location("egress_entrypoint", ENTRYPOINT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ep = load_entrypoint()


# -- pure parts ------------------------------------------------------------------------------

@pytest.mark.parametrize("env, extra, tail", [
    pytest.param({}, [], ["--policies", "/etc/egress/policies", "--data-dir", "/var/lib/egress",
                          "--listen", "0.0.0.0:8080", "--admin", "127.0.0.1:8081",
                          "--log-level", "info"], id="container defaults"),
    pytest.param({"EGRESS_AUDIT": "-", "EGRESS_ADMIN": "off", "EGRESS_LISTEN": "127.0.0.1:9"}, ["--drain-seconds", "1"],
                 ["--policies", "/etc/egress/policies", "--data-dir", "/var/lib/egress",
                  "--listen", "127.0.0.1:9", "--admin", "off", "--log-level", "info",
                  "--audit", "-", "--drain-seconds", "1"], id="audit to stdout, admin off, extra arguments"),
])
def test_serve_command_line_from_environment(env: dict[str, str], extra: list[str], tail: list[str]) -> None:
    assert ep.serve_argv(env, extra) == [sys.executable, "-m", "egress.cli.main", "serve", *tail]


def test_tokens_file_becomes_a_link_that_follows_rotation(tmp_path: Path) -> None:
    mounted = tmp_path / "secret" / "tokens.json"
    mounted.parent.mkdir()
    mounted.write_text('{"version": 1, "tokens": {}}')
    data = tmp_path / "data"
    ep.prepare({"EGRESS_DATA_DIR": str(data), "EGRESS_TOKENS_FILE": str(mounted)})
    assert os.readlink(data / "tokens.json") == str(mounted)
    ep.prepare({"EGRESS_DATA_DIR": str(data), "EGRESS_TOKENS_FILE": str(mounted)})  # restart
    assert os.readlink(data / "tokens.json") == str(mounted)
    assert oct(data.stat().st_mode & 0o777) == "0o700"


def test_tokens_issued_in_the_data_dir_are_never_replaced(tmp_path: Path) -> None:
    mounted = tmp_path / "mounted.json"
    mounted.write_text('{"version": 1, "tokens": {}}')
    TokenStore(tmp_path / "data").issue("alpha")
    with pytest.raises(ep.SetupError) as err:
        ep.prepare({"EGRESS_DATA_DIR": str(tmp_path / "data"), "EGRESS_TOKENS_FILE": str(mounted)})
    assert str(err.value) == (
        f"{tmp_path}/data/tokens.json holds tokens issued in this data directory; refusing to "
        f"replace it with a link to EGRESS_TOKENS_FILE {mounted}. Keep one of the two")


def test_shared_ca_is_installed_where_egress_looks(tmp_path: Path) -> None:
    ca = trustme.CA()
    source = tmp_path / "ca.pem"
    source.write_bytes(ca.private_key_pem.bytes() + ca.cert_pem.bytes())
    ep.prepare({"EGRESS_DATA_DIR": str(tmp_path / "data"), "EGRESS_CA_FILE": str(source)})
    key_and_cert = (tmp_path / "data" / "ca" / "mitmproxy-ca.pem")
    cert = (tmp_path / "data" / "ca" / "mitmproxy-ca-cert.pem")
    assert cert.read_bytes().strip() == ca.cert_pem.bytes().strip()
    assert "PRIVATE KEY" in key_and_cert.read_text() and "CERTIFICATE" in key_and_cert.read_text()
    assert oct(key_and_cert.stat().st_mode & 0o777) == "0o600"
    from egress.proxy.ca import ensure_ca

    assert ensure_ca(tmp_path / "data").read_bytes() == cert.read_bytes()  # egress uses it as is


@pytest.mark.parametrize("content, message", [
    pytest.param("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
                 "expected one private key and one certificate in PEM, found 0 and 1", id="certificate without key"),
    pytest.param("not pem", "expected one private key and one certificate in PEM, found 0 and 0", id="not PEM"),
])
def test_bad_shared_ca_stops_the_start(tmp_path: Path, content: str, message: str) -> None:
    source = tmp_path / "ca.pem"
    source.write_text(content)
    with pytest.raises(ep.SetupError) as err:
        ep.prepare({"EGRESS_DATA_DIR": str(tmp_path / "data"), "EGRESS_CA_FILE": str(source)})
    assert str(err.value) == f"EGRESS_CA_FILE {source}: {message}"


def test_missing_optional_ca_secret_is_not_fatal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ep.prepare({"EGRESS_DATA_DIR": str(tmp_path / "data"), "EGRESS_CA_FILE": str(tmp_path / "nope.pem")})
    assert not (tmp_path / "data" / "ca").exists()
    assert "does not exist" in capsys.readouterr().err


def test_healthcheck_fails_when_nothing_listens() -> None:
    port = free_port()
    assert ep.healthcheck({"EGRESS_ADMIN": f"127.0.0.1:{port}"}, timeout=2) == 1
    assert ep.healthcheck({"EGRESS_ADMIN": "off", "EGRESS_LISTEN": f"0.0.0.0:{port}"}, timeout=2) == 1


# -- the real thing ----------------------------------------------------------------------------

@dataclass
class Running:
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    port: int
    upstream: Upstream
    tokens: Path
    stdout: Path

    def audit(self) -> list[dict[str, Any]]:
        return written_records(self.stdout)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    with DnsServer() as dns, run_upstream(UPSTREAM_IP, ca=None, names=[], tmp=str(tmp_path)) as plain:
        dns.set("plain.deploy.test", [UPSTREAM_IP], ttl=300)
        dns.set("denied.deploy.test", [UPSTREAM_IP], ttl=300)
        policies = write_policy(tmp_path / "policies", f"""
            settings:
              dns: {{nameservers: ["{dns.address}"], timeout: 2}}
              networks: {{allow: ["{UPSTREAM_IP}/32"]}}
            skills:
              alpha:
                allow:
                  - host: plain.deploy.test
                    ports: [{plain.port}]
            """)
        secret = tmp_path / "secret"
        TokenStore(secret).issue("alpha")
        port = free_port()
        env = {**os.environ, "EGRESS_POLICIES": str(policies), "EGRESS_DATA_DIR": str(tmp_path / "data"),
               "EGRESS_LISTEN": f"127.0.0.1:{port}", "EGRESS_ADMIN": f"127.0.0.1:{free_port()}",
               "EGRESS_AUDIT": "-", "EGRESS_TOKENS_FILE": str(secret / "tokens.json")}
        stdout = tmp_path / "stdout.log"
        with open(stdout, "wb") as out, open(tmp_path / "stderr.log", "wb") as err:
            proc = subprocess.Popen([sys.executable, str(ENTRYPOINT)], stdout=out, stderr=err, env=env)
        try:
            wait_port("127.0.0.1", port, proc)
            yield Running(proc, env, port, plain, secret, stdout)
        finally:
            stop_process(proc)


def test_entrypoint_serves_audits_to_stdout_and_follows_rotated_tokens(running: Running) -> None:
    proxy = ("127.0.0.1", running.port)
    token = TokenStore(running.tokens).rotate("alpha")  # the mounted Secret changes
    url = f"http://plain.deploy.test:{running.upstream.port}/echo"
    with httpx.Client(proxy=f"http://alpha:{token}@127.0.0.1:{running.port}", timeout=10,
                      trust_env=False) as client:
        assert client.get(url).status_code == 200
    denied = connect(proxy, f"denied.deploy.test:{running.upstream.port}", basic("alpha", token))
    assert denied.status == 403
    record = _wait_for(running, denied.request_id)
    assert (record["decision"], record["reason"], record["skill"]) == ("deny", "host_not_allowed", "alpha")
    assert all("decision" in line for line in running.audit())  # stdout carries audit lines only
    assert ep.main(["healthcheck"], running.env) == 0
    assert ep.main(["healthcheck", "--ready"], running.env) == 0


def test_sigterm_reaches_egress_directly(running: Running) -> None:
    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(20) == 0
    assert ep.main(["healthcheck"], running.env) == 1


def test_other_commands_run_egress_with_the_data_dir(tmp_path: Path) -> None:
    TokenStore(tmp_path).issue("alpha")
    result = subprocess.run([sys.executable, str(ENTRYPOINT), "token", "list"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "EGRESS_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0
    assert result.stdout.split("\t")[0] == "alpha"


def _wait_for(running: Running, request_id: str) -> dict[str, Any]:
    for _ in range(100):
        for record in running.audit():
            if record.get("id") == request_id:
                return record
        time.sleep(0.05)
    raise AssertionError(f"no audit line with id {request_id} on stdout")
