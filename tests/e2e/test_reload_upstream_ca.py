"""A hot reload that adds `settings.upstream_ca` makes the next request succeed, no restart.

A real `egress serve` brokers a key to an upstream whose certificate only the test CA
vouches for. Before the reload egress refuses to talk to it (upstream_tls_failed, audited,
the upstream never gets the key); after `POST /reload` with `upstream_ca` added, the same
request reaches it with the key. The same world checks the `egress_secret_age_seconds`
metric of the file-held key.
"""

from __future__ import annotations

import os
import shutil
import ssl
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import UPSTREAM_IP, TestCA
from tests.dnsserver import DnsServer
from tests.ops.conftest import parse_metrics, series, wait_admin
from tests.proxy import Proxy, run_proxy
from tests.recording import RecordingUpstream, recording_upstream
from tests.upstream import free_port

ONE_PATH = ("what is checked happens inside intercepted traffic, mitmproxy's on both "
            "paths (tests/proxy.py); the fast path only hands it over")

KEY = "sk_test_reload_ca_0123456789abcdefABCDEF"
HOST = "api.private-ca.test"


@dataclass
class World:
    proxy: Proxy
    rec: RecordingUpstream
    policies: Path
    admin_port: int
    bundle: str
    ca_path: str
    settings: str

    def get(self) -> httpx.Response:
        with httpx.Client(proxy=self.proxy.url("s"), timeout=15, trust_env=False,
                          verify=ssl.create_default_context(cafile=self.bundle)) as c:
            return c.get(f"https://{HOST}:{self.rec.port}/v1/charges")

    def admin(self, method: str, path: str) -> httpx.Response:
        with httpx.Client(timeout=15, trust_env=False) as c:
            return c.request(method, f"http://127.0.0.1:{self.admin_port}{path}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("reload-ca")
    policies, data = tmp / "policies", tmp / "data"
    policies.mkdir()
    key_file = tmp / "key"
    key_file.write_text(KEY + "\n")
    old = time.time() - 3 * 86400
    os.utime(key_file, (old, old))
    with DnsServer() as dns, recording_upstream(UPSTREAM_IP, ca=test_ca.ca, names=[HOST]) as rec:
        dns.set(HOST, [UPSTREAM_IP], ttl=300)
        settings = textwrap.dedent(f"""\
            settings:
              dns: {{nameservers: ["{dns.address}"], timeout: 2}}
              networks: {{allow: ["{UPSTREAM_IP}/32"]}}
            """)
        (policies / "settings.yaml").write_text(settings)
        (policies / "s.yaml").write_text(textwrap.dedent(f"""\
            skills:
              s:
                allow: [{{host: {HOST}, ports: [{rec.port}], credential: k}}]
                credentials:
                  k: {{secret: "file:{key_file}"}}
            """))
        admin_port = free_port()
        with run_proxy(policies, data, ["s"], args=["--admin", f"127.0.0.1:{admin_port}"],
                       env={"EGRESS_ADMIN_TOKEN": ""}) as proxy:
            wait_admin(admin_port)
            bundle = tmp / "bundle.pem"
            bundle.write_text((data / "ca" / "mitmproxy-ca-cert.pem").read_text())
            yield World(proxy, rec, policies, admin_port, str(bundle), test_ca.path, settings)


def test_reload_adding_upstream_ca_makes_the_next_request_succeed(world: World) -> None:
    world.rec.reset()
    before = world.get()
    assert before.status_code == 502, before.text
    assert before.json()["reason"] == "upstream_tls_failed"
    # The tunnel's one denial line (its id is the tunnel's, not this 502's request_id).
    deadline, hosts = time.monotonic() + 5, []
    while not hosts and time.monotonic() < deadline:
        hosts = [r["host"] for r in world.proxy.audit() if r["reason"] == "upstream_tls_failed"]
        time.sleep(0 if hosts else 0.05)
    assert hosts == [HOST]
    assert KEY.encode() not in world.rec.received()  # the unverified upstream got no key

    shutil.copy(world.ca_path, world.policies / "private-ca.pem")
    (world.policies / "settings.yaml").write_text(
        world.settings + "  upstream_ca: private-ca.pem\n")
    resp = world.admin("POST", "/reload")
    assert resp.status_code == 200 and resp.json()["ok"] is True, resp.text

    world.rec.reset()
    after = world.get()
    assert after.status_code == 200, after.text
    assert f"Authorization: Bearer {KEY}".encode() in world.rec.received()


def test_secret_age_is_a_metric(world: World) -> None:
    deadline = time.monotonic() + 15
    name = series("egress_secret_age_seconds", skill="s", credential="k", field="secret")
    metrics: dict[str, float] = {}
    while time.monotonic() < deadline:
        metrics = parse_metrics(world.admin("GET", "/metrics").text)
        if name in metrics:
            break
        time.sleep(0.2)
    assert name in metrics, sorted(k for k in metrics if "secret" in k)
    assert 3 * 86400 - 60 <= metrics[name] <= 3 * 86400 + 3600
    assert KEY not in world.admin("GET", "/metrics").text
