"""Audit flooding: a hostile skill sends thousands of denied requests to push the evidence of
what it did out of the rotated audit log.

A real `egress serve` with a small audit budget (20 lines per skill per 2 s, 10 more for
distinct denials), a real DNS server and a recording upstream. The skill floods denied
plain-HTTP requests on keep-alive connections; the tests read the audit file and assert that
it stays small, that every distinct denial is there in full, that the summary lines' counts
add up to exactly what was sent, that the counts reach the metrics, and that a flood of
denials empties the skill's rate limit.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clients import basic, read_response
from tests.conftest import UPSTREAM_IP, write_policy
from tests.dnsserver import DnsServer
from tests.ops.conftest import parse_metrics, wait_admin
from tests.proxy import Proxy, run_proxy, stop_process
from tests.recording import RecordingUpstream, recording_upstream
from tests.upstream import free_port

BUDGET, INTERVAL, DISTINCT = 20, 2.0, 10
NAMES = ["plain.flood.test", "denied.flood.test"] + [f"d{i}.flood.test" for i in range(5)]


@dataclass
class FloodWorld:
    proxy: Proxy
    plain: RecordingUpstream
    admin_port: int

    def records(self, skill: str) -> list[dict[str, Any]]:
        return [r for r in self.proxy.audit() if r.get("skill") == skill]

    def metrics(self) -> dict[str, float]:
        with httpx.Client(timeout=10, trust_env=False) as client:
            return parse_metrics(client.get(f"http://127.0.0.1:{self.admin_port}/metrics").text)


@pytest.fixture(scope="module")
def flood(proxy_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FloodWorld]:
    tmp = tmp_path_factory.mktemp("flood")
    with DnsServer() as dns, recording_upstream(UPSTREAM_IP) as plain:
        for name in NAMES:
            dns.set(name, [UPSTREAM_IP], ttl=300)
        policies = write_policy(tmp / "policies", f"""
            settings:
              dns: {{nameservers: ["{dns.address}"], timeout: 2}}
              networks: {{allow: ["{UPSTREAM_IP}/32"]}}
              audit: {{budget: {BUDGET}, budget_interval: {INTERVAL:g}s, budget_distinct: {DISTINCT}}}
            skills:
              flooder:
                allow:
                  - host: plain.flood.test
                    ports: [{plain.port}]
              sprayer:
                allow:
                  - host: plain.flood.test
                    ports: [{plain.port}]
              limited:
                limits: {{requests_per_minute: 30}}
                allow:
                  - host: plain.flood.test
                    ports: [{plain.port}]
            """)
        admin = free_port()
        with run_proxy(policies, tmp / "data", ["flooder", "sprayer", "limited"],
                       args=["--admin", f"127.0.0.1:{admin}"]) as proxy:
            wait_admin(admin)
            yield FloodWorld(proxy, plain, admin)


def request(proxy: Proxy, skill: str, host: str, port: int, path: str = "/x") -> bytes:
    return (f"GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Proxy-Authorization: {basic(skill, proxy.tokens[skill])}\r\n\r\n").encode()


def send_all(world: FloodWorld, skill: str, wire: list[bytes]) -> list[int]:
    """Send each request on one keep-alive connection, reading each answer; the statuses."""
    statuses: list[int] = []
    with socket.create_connection((world.proxy.host, world.proxy.port), timeout=10) as sock:
        for data in wire:
            sock.sendall(data)
            statuses.append(read_response(sock).status)
    return statuses


def accounted(records: list[dict[str, Any]]) -> int:
    """Requests the audit lines stand for: 1 per full line, N per summary of N folded."""
    return sum(r.get("folded") or 1 for r in records)


def wait_for(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s")


def test_a_flood_of_identical_denials_is_folded_and_every_distinct_one_is_kept(
        flood: FloodWorld) -> None:
    port = flood.plain.port
    same = request(flood.proxy, "flooder", "denied.flood.test", port)
    distinct = [request(flood.proxy, "flooder", f"d{i}.flood.test", port, f"/evidence/{i}")
                for i in range(5)]
    # 2,400 identical denials with the distinct ones in the middle of the flood, well past
    # the budget, over three connections (each opens with its own authentication).
    wire = [same] * 1200 + distinct + [same] * 600
    started = time.monotonic()
    statuses = send_all(flood, "flooder", wire) + send_all(flood, "flooder", [same] * 300) \
        + send_all(flood, "flooder", [same] * 300)
    elapsed = time.monotonic() - started
    sent = len(statuses)
    assert statuses == [403] * sent
    assert flood.plain.accepted == 0  # nothing was let through while flooding

    # The summaries arrive on their interval, without any further request.
    wait_for(lambda: accounted(flood.records("flooder")) == sent)
    records = flood.records("flooder")
    full = [r for r in records if not r.get("folded")]
    summaries = [r for r in records if r.get("folded")]
    assert summaries and all(r["reason"] == "host_not_allowed" for r in records)
    # Every distinct denial is there in full, with its path.
    for i in range(5):
        assert [r["path"] for r in full if r["host"] == f"d{i}.flood.test"] == [f"/evidence/{i}"]
    # The counts add up to exactly what was sent.
    assert len(full) + sum(r["folded"] for r in summaries) == sent
    for s in summaries:
        assert s["host"] == "denied.flood.test" and s["path"] == "/x"
        assert s["first_seen"] <= s["last_seen"] and s["decision"] == "deny"
    # Bounded: per interval at most BUDGET + DISTINCT full lines and a summary per distinct
    # denial folded (here one); the flood itself was 2,405 lines.
    intervals = math.ceil(elapsed / INTERVAL) + 2
    assert len(records) <= intervals * (BUDGET + DISTINCT + 2)
    assert len(records) < sent / 5
    size = flood.proxy.audit_path.stat().st_size
    assert size < len(records) * 700 + 20_000, size  # ~400 bytes a line, whatever was sent
    metrics = flood.metrics()
    assert metrics["egress_audit_folded_total"] >= sum(r["folded"] for r in summaries)
    assert metrics["egress_audit_summaries_total"] >= len(summaries)


def test_a_spray_of_distinct_hosts_is_folded_coarsely_and_still_adds_up(flood: FloodWorld) -> None:
    # Random host names: every denial differs. Past budget + distinct they fold by reason.
    wire = [request(flood.proxy, "sprayer", f"r{i}-{time.monotonic_ns()}.spray.test",
                    flood.plain.port) for i in range(400)]
    statuses = send_all(flood, "sprayer", wire)
    assert len(statuses) == 400 and set(statuses) <= {403, 502}  # denied before any DNS
    wait_for(lambda: accounted(flood.records("sprayer")) == 400)
    records = flood.records("sprayer")
    coarse = [r for r in records if r.get("folded") and r["host"] == "*"]
    assert coarse and all(r["port"] == 0 and "e.g. r" in r["detail"] for r in coarse)
    assert len(records) <= (math.ceil(60 / INTERVAL)) * (BUDGET + DISTINCT + 2)
    assert len(records) < 400 / 3


def test_denials_count_toward_the_rate_limit(flood: FloodWorld) -> None:
    port = flood.plain.port
    denied = request(flood.proxy, "limited", "denied.flood.test", port)
    allowed = request(flood.proxy, "limited", "plain.flood.test", port, "/ok")
    statuses = send_all(flood, "limited", [denied] * 40 + [allowed])
    assert statuses[:40] == [403] * 40
    assert statuses[40] == 429  # the denials emptied the skill's 30-a-minute bucket
    assert not any("/ok" in line for line in flood.plain.request_lines())
    limited = [r for r in flood.records("limited") if r["reason"] == "rate_limited"]
    assert limited and limited[-1]["path"] == "/ok"


def test_summaries_are_flushed_on_shutdown(tmp_path: Path) -> None:
    # An interval of an hour: only the shutdown can write the summary.
    with DnsServer() as dns, recording_upstream(UPSTREAM_IP) as plain:
        dns.set("denied.flood.test", [UPSTREAM_IP], ttl=300)
        policies = write_policy(tmp_path / "policies", f"""
            settings:
              dns: {{nameservers: ["{dns.address}"], timeout: 2}}
              audit: {{budget: 5, budget_interval: 1h, budget_distinct: 1}}
            skills:
              quitter:
                allow: []
            """)
        with run_proxy(policies, tmp_path / "data", ["quitter"]) as proxy:
            world = FloodWorld(proxy, plain, 0)
            wire = [request(proxy, "quitter", "denied.flood.test", plain.port)] * 200
            assert send_all(world, "quitter", wire) == [403] * 200
            time.sleep(1.5)  # the flush timer ticks: nothing is due before the hour is over
            before = world.records("quitter")
            assert len(before) == 5 and accounted(before) == 5
            stop_process(proxy.process)
            assert proxy.process.returncode == 0
            records = world.records("quitter")
    [summary] = [r for r in records if r.get("folded")]
    assert summary["folded"] == 195 and accounted(records) == 200
    assert "Traceback" not in proxy.log()
