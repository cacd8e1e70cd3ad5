"""The script entry works in a stock mitmdump: `mitmdump -s addons/egress.py --set ...`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from egress.identity import TokenStore
from tests.conftest import UPSTREAM_IP, write_policy
from tests.dnsserver import DnsServer
from tests.proxy import stop_process, wait_port
from tests.upstream import free_port, run_upstream

ONE_PATH = "runs mitmdump -s, not egress serve"  # (tests/proxy.py: both paths)

ROOT = Path(__file__).resolve().parents[2]


def test_mitmdump_script_entry_enforces_the_policy(tmp_path: Path) -> None:
    with DnsServer() as dns, run_upstream(UPSTREAM_IP, ca=None, names=[], tmp=str(tmp_path)) as up:
        dns.set("ok.test", [UPSTREAM_IP])
        dns.set("no.test", [UPSTREAM_IP])
        policies = write_policy(tmp_path / "policies", f"""
            settings:
              dns: {{nameservers: ["{dns.address}"]}}
              networks: {{allow: ["{UPSTREAM_IP}/32"]}}
            skills:
              s:
                allow: [{{host: ok.test, ports: [{up.port}]}}]
            """)
        data = tmp_path / "data"
        token = TokenStore(data).issue("s")
        port = free_port()
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mitmdump")), "-q", "-s", str(ROOT / "addons" / "egress.py"),
             "--listen-host", "127.0.0.1", "--listen-port", str(port),
             "--set", f"egress_policies={policies}", "--set", f"egress_data_dir={data}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_port("127.0.0.1", port, proc)
            with httpx.Client(proxy=f"http://s:{token}@127.0.0.1:{port}", timeout=10,
                              trust_env=False) as client:
                ok = client.get(f"http://ok.test:{up.port}/echo")
                no = client.get(f"http://no.test:{up.port}/echo")
            assert ok.status_code == 200
            assert "proxy-authorization" not in [k for k, _ in ok.json()["headers"]]
            assert no.status_code == 403 and no.json()["reason"] == "host_not_allowed"
            assert '"reason":"host_not_allowed"' in (data / "audit.jsonl").read_text()
        finally:
            stop_process(proc)  # type: ignore[arg-type]
