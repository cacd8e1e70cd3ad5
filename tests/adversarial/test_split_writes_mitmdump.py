"""Split writes against the addon inside a stock `mitmdump -s addons/egress.py`.

Under mitmdump the script's hooks run *before* mitmproxy's NextLayer addon (ScriptLoader comes
first in mitmdump's addon chain), the opposite of `egress serve`. While egress waits for more
bytes it must keep NextLayer from guessing; these tests fail if it does not (NextLayer would
hand a split ClientHello to an HTTP parser, or relay it raw).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from egress.identity import TokenStore
from tests.conftest import UPSTREAM_IP, TestCA, write_policy
from tests.dnsserver import DnsServer
from tests.proxy import stop_process, wait_port, written_records
from tests.recording import RecordingUpstream, recording_upstream
from tests.adversarial.wire import BioTLS, open_tunnel, recv_until_closed, send_split, wait_for
from tests.upstream import free_port

ONE_PATH = "runs mitmdump -s, not egress serve"  # (tests/proxy.py: both paths)

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["pass.md.test", "plain.md.test", "other.md.test"]


@dataclass
class Dump:
    port: int
    token: str
    data: Path
    tls: RecordingUpstream
    plain: RecordingUpstream
    ca: TestCA

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def audit(self) -> list[dict[str, Any]]:
        return written_records(self.data / "audit.jsonl")


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[Dump]:
    tmp = tmp_path_factory.mktemp("mitmdump")
    with DnsServer() as dns, \
            recording_upstream(UPSTREAM_IP, ca=test_ca.ca, names=NAMES) as tls, \
            recording_upstream(UPSTREAM_IP) as plain:
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
              connections: {{idle_before_auth: 2s}}
            skills:
              s:
                allow:
                  - {{host: pass.md.test, ports: [{tls.port}]}}
                  - {{host: plain.md.test, ports: [{plain.port}]}}
            """)
        data = tmp / "data"
        token = TokenStore(data).issue("s")
        port = free_port()
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mitmdump")), "-q",
             "-s", str(ROOT / "addons" / "egress.py"),
             "--listen-host", "127.0.0.1", "--listen-port", str(port),
             "--set", f"egress_policies={policies}", "--set", f"egress_data_dir={data}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port("127.0.0.1", port, proc)
            yield Dump(port, token, data, tls, plain, test_ca)
        finally:
            stop_process(proc)  # type: ignore[arg-type]


def test_split_clienthello_with_the_right_name_passes_through(dump: Dump) -> None:
    dump.tls.reset()
    raw = open_tunnel(dump.addr, "s", dump.token, "pass.md.test", dump.tls.port)
    client = BioTLS(raw, "pass.md.test", cafile=dump.ca.path)
    send_split(raw, client.client_hello(), [1], 0.3)
    client.handshake()
    client.send_records([b"GET /md HTTP/1.1\r\nHost: pass.md.test\r\n\r\n"])
    assert client.read(timeout=3).startswith(b"HTTP/1.1 200")
    raw.close()
    assert dump.tls.snis() == ["pass.md.test"]
    assert dump.tls.request_lines() == ["GET /md HTTP/1.1"]


def test_split_clienthello_naming_another_host_is_refused(dump: Dump) -> None:
    dump.tls.reset()
    start = len(dump.audit())
    raw = open_tunnel(dump.addr, "s", dump.token, "pass.md.test", dump.tls.port)
    client = BioTLS(raw, "other.md.test", cafile=dump.ca.path)
    send_split(raw, client.client_hello(), [1], 0.3)
    assert recv_until_closed(raw) == b""
    raw.close()
    assert wait_for(lambda: any(r["reason"] == "host_mismatch" for r in dump.audit()[start:]))
    assert [r["reason"] for r in dump.audit()[start:]] == ["host_mismatch"]
    assert dump.tls.accepted == 0


def test_split_plain_request_naming_another_host_is_refused(dump: Dump) -> None:
    dump.plain.reset()
    start = len(dump.audit())
    raw = open_tunnel(dump.addr, "s", dump.token, "plain.md.test", dump.plain.port)
    send_split(raw, b"POST /admin HTTP/1.1\r\nHost: other.md.test\r\nContent-Length: 0\r\n\r\n",
               [3], 0.3)
    assert recv_until_closed(raw, timeout=3).startswith(b"HTTP/1.1 403")
    raw.close()
    assert wait_for(lambda: any(r["reason"] == "host_mismatch" for r in dump.audit()[start:]))
    assert b"/admin" not in dump.plain.received()


def test_connection_limits_work_under_mitmdump_too(dump: Dump) -> None:
    # The guard finds mitmproxy's connection handler through the proxyserver addon, which
    # under mitmdump may serve connections before the script's `running` hook.
    import socket
    import time
    start = len(dump.audit())
    with socket.create_connection(dump.addr, timeout=10) as sock:
        began = time.monotonic()
        assert recv_until_closed(sock, timeout=8) == b""
        took = time.monotonic() - began
    assert took < 6
    assert wait_for(lambda: any(r["reason"] == "auth_timeout" for r in dump.audit()[start:]))
