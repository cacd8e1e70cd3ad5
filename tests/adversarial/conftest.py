"""The adversarial world: a real `egress serve`, recording upstreams, a real DNS server.

Every name below resolves to 127.0.0.2, where two recording upstreams listen: one TLS (a
certificate for every name, so domain fronting would work if egress let it) and one plain.
The hostile skill `mallory` may reach:
  pass.adv.test   passthrough (no rule looks inside)
  api.adv.test    intercepted: GET/HEAD on /v1/invoices and /v1/invoices/*, credential `key`
                  injected as `Authorization: Bearer <key>` (the key comes from a file)
  plain.adv.test  plain HTTP (and CONNECT to the plain port)
Other names (other.adv.test, admin.adv.test) are served by the same upstreams but not allowed.
Modules add their own worlds when they need other policies; keep this one generic.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import UPSTREAM_IP, TestCA, write_policy
from tests.dnsserver import DnsServer
from tests.proxy import Proxy, run_proxy
from tests.proxy import generate_paths as pytest_generate_tests  # noqa: F401  (both paths)
from tests.recording import RecordingUpstream, recording_upstream

NAMES = ["pass.adv.test", "api.adv.test", "plain.adv.test", "other.adv.test", "admin.adv.test"]
REAL_KEY = "adv_REAL_" + os.urandom(12).hex()
PLACEHOLDER = "adv_placeholder_000000000000"


@dataclass
class AdvWorld:
    proxy: Proxy
    tls: RecordingUpstream
    plain: RecordingUpstream
    dns: DnsServer
    bundle: str  # egress CA + test CA: what the skill trusts
    ca: TestCA

    @property
    def proxy_addr(self) -> tuple[str, int]:
        return (self.proxy.host, self.proxy.port)

    def reset(self) -> None:
        self.tls.reset()
        self.plain.reset()


@pytest.fixture(scope="module")
def adv(proxy_path: str, tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[AdvWorld]:
    tmp = tmp_path_factory.mktemp("adv")
    key_file = tmp / "key"
    key_file.write_text(REAL_KEY + "\n")
    key_file.chmod(0o600)
    with DnsServer() as dns, \
            recording_upstream(UPSTREAM_IP, ca=test_ca.ca, names=NAMES, upgrade=True) as tls, \
            recording_upstream(UPSTREAM_IP, upgrade=True) as plain:
        for name in NAMES:
            dns.set(name, [UPSTREAM_IP], ttl=300)
        policies = tmp / "policies"
        policies.mkdir()
        shutil.copy(test_ca.path, policies / "upstream-ca.pem")
        write_policy(policies, f"""
            settings:
              dns: {{nameservers: ["{dns.address}"], timeout: 2}}
              networks: {{allow: ["{UPSTREAM_IP}/32"]}}
              upstream_ca: upstream-ca.pem
              # Every denial on its own line, however many a property test makes (the flood
              # budget that folds repeats is tested in test_audit_flood.py).
              audit: {{budget: 1000000, budget_distinct: 1000000}}
            skills:
              mallory:
                allow:
                  - host: pass.adv.test
                    ports: [{tls.port}]
                  - host: api.adv.test
                    ports: [{tls.port}]
                    methods: [GET, HEAD]
                    paths: ["/v1/invoices", "/v1/invoices/*"]
                    credential: key
                  - host: plain.adv.test
                    ports: [{plain.port}]
                credentials:
                  key:
                    secret: "file:{key_file}"
                    placeholder: {PLACEHOLDER}
            """)
        with run_proxy(policies, tmp / "data", ["mallory"]) as proxy:
            bundle = tmp / "bundle.pem"
            egress_ca = (tmp / "data" / "ca" / "mitmproxy-ca-cert.pem").read_text()
            bundle.write_text(egress_ca + Path(test_ca.path).read_text())
            yield AdvWorld(proxy, tls, plain, dns, str(bundle), test_ca)
