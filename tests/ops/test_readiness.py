"""/readyz follows the secret manager: ready while OpenBao answers, 503 when it is gone."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import TestCA
from tests.dnsserver import DnsServer
from tests.openbao import openbao_server
from tests.ops.conftest import policy_text, start_ops_world, wait_until
from tests.upstream import Upstream


def test_readyz_reports_the_secret_manager(tmp_path: Path, test_ca: TestCA) -> None:
    (tmp_path / "bao").mkdir()
    (tmp_path / "world").mkdir()
    with openbao_server(tmp_path / "bao") as bao:
        def with_vault(dns: DnsServer, tls: Upstream, plain: Upstream) -> str:
            vault = (f'  secrets:\n    vault: {{addr: "{bao.addr}", '
                     f'auth: {{token_env: EGRESS_TEST_BAO_TOKEN}}, timeout: 1}}\n')
            return policy_text(dns, tls, plain).replace("settings:\n", "settings:\n" + vault, 1)

        with start_ops_world(tmp_path / "world", test_ca, make_policy=with_vault,
                             env={"EGRESS_TEST_BAO_TOKEN": bao.root_token}) as world:
            ready = world.admin("GET", "/readyz", token=False)
            assert ready.status_code == 200
            assert ready.json()["checks"]["secrets"] == {"ok": True}

            bao.kill()

            def not_ready() -> bool:
                resp = world.admin("GET", "/readyz", token=False)
                return resp.status_code == 503 and resp.json()["checks"]["secrets"] == {"ok": False}

            wait_until(not_ready, timeout=15)
            health = world.admin("GET", "/healthz", token=False)
            assert health.status_code == 200  # alive: only readiness depends on the backend
            assert bao.root_token not in world.proxy.log()
