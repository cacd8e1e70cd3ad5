"""Shipping over HTTP: Loki's push API, JSON Lines and OCSF, each against a real server.

One egress ships to three destinations at once; each gets every line, once, in order. The
Loki part implements Loki's push endpoint (tests/parts/loki.py); the JSON Lines and OCSF
receivers are plain HTTP servers that keep every body. OCSF events are checked against the
OCSF 1.5 schema (tests/parts/ocsf.py).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.audit.shipworld import ShipWorld, records, ship_world
from tests.conftest import TestCA
from tests.parts.apiserver import ApiServer, serve_api
from tests.parts.loki import LokiServer, loki_server
from tests.parts.ocsf import validate_ocsf
from tests.proxy import EGRESS

LOKI_TOKEN = "loki-gateway-token-5e2b9f0c7d"
TENANT = "team-egress"


def collector() -> web.Application:
    """An HTTP receiver that answers 204 to every POST (ApiServer keeps the bodies)."""
    app = web.Application(client_max_size=16 * 2**20)

    async def ingest(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app.router.add_post("/{path:.*}", ingest)
    return app


@dataclass
class HttpWorld:
    egress: ShipWorld
    loki: LokiServer
    jsonl: ApiServer
    ocsf: ApiServer

    def bodies(self, server: ApiServer) -> list[str]:
        return [line for r in server.received if r.method == "POST"
                for line in r.body.decode().splitlines()]


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[HttpWorld]:
    with ExitStack() as stack:
        loki = stack.enter_context(loki_server(tenant=TENANT, token=LOKI_TOKEN))
        jsonl = stack.enter_context(serve_api(collector(), ca=None))
        ocsf = stack.enter_context(serve_api(collector(), ca=test_ca.ca))  # https
        ship = f"""\
            - http:
                url: "{loki.push_url}"
                format: loki
                token: "env:LOKI_TOKEN"
                headers: {{X-Scope-OrgID: {TENANT}}}
            - http: {{url: "{jsonl.url}/ingest/jsonl?stream=egress", name: jsonl-archive}}
            - http: {{url: "{ocsf.url}/ocsf", format: ocsf, batch: 50, ca: "{test_ca.path}"}}
            """
        egress = stack.enter_context(ship_world(
            tmp_path_factory.mktemp("ship-http"), ship, env={"LOKI_TOKEN": LOKI_TOKEN}))
        world = HttpWorld(egress, loki, jsonl, ocsf)
        egress.deny_connects(30)
        egress.deny_http([f"/collect/{i}" for i in range(5)] + ["/upload?key=sk_live_abc"])
        wait_all(world)
        yield world


def wait_all(world: HttpWorld, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = len(world.egress.audit_lines())
        if (len(world.loki.entries()) >= n and len(world.bodies(world.jsonl)) >= n
                and len(world.bodies(world.ocsf)) >= n):
            return
        time.sleep(0.05)
    raise AssertionError("not every destination caught up")


def verify(tmp: Path, world: HttpWorld, lines: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    stored = tmp / "stored.log"
    stored.write_text("\n".join(lines) + "\n")
    return subprocess.run([EGRESS, "audit", "verify", "--data-dir", str(world.egress.proxy.data_dir),
                           *extra, str(stored)], capture_output=True, text=True)


def test_loki_push_has_every_line_with_labels_token_and_tenant(http: HttpWorld,
                                                                tmp_path: Path) -> None:
    lines = http.egress.audit_lines()
    entries = http.loki.entries()
    assert len(entries) == len(lines) == 36
    # Loki keeps lines by time: egress's timestamps rise strictly, so time order is log order.
    by_time = sorted(entries, key=lambda e: e.ns)
    assert [e.line for e in by_time] == lines
    assert len({e.ns for e in entries}) == len(entries)
    for entry, record in zip(by_time, records(lines), strict=True):
        assert entry.labels["app"] == "egress"
        assert (entry.labels["skill"], entry.labels["decision"], entry.labels["reason"]) == (
            record["skill"], record["decision"], record["reason"])
        assert entry.labels["instance"]
    pushes = http.loki.server.requests_to("/loki/api/v1/push")
    assert pushes and all(r.headers["authorization"] == f"Bearer {LOKI_TOKEN}" and
                          r.headers["x-scope-orgid"] == TENANT for r in pushes)
    check = verify(tmp_path, http, [json.dumps({"line": e.line}) for e in entries], "--sort")
    assert check.returncode == 0, check.stdout + check.stderr


def test_json_lines_body_is_the_audit_log(http: HttpWorld) -> None:
    posts = [r for r in http.jsonl.received if r.method == "POST"]
    assert all(r.headers["content-type"] == "application/x-ndjson" for r in posts)
    assert all(r.path == "/ingest/jsonl" and r.query == {"stream": "egress"} for r in posts)
    assert http.bodies(http.jsonl) == http.egress.audit_lines()
    assert "authorization" not in {k for r in posts for k in r.headers}  # no token configured
    metrics = http.egress.metrics()
    assert metrics['egress_audit_shipped_total{destination="jsonl-archive"}'] == 36


def test_ocsf_events_validate_and_carry_the_audit_line(http: HttpWorld, tmp_path: Path) -> None:
    events = [json.loads(line) for line in http.bodies(http.ocsf)]
    lines = http.egress.audit_lines()
    assert [e["raw_data"] for e in events] == lines
    for event in events:
        assert validate_ocsf(event) == [], event
        assert event["metadata"]["version"] == "1.5.0"
    by_class: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        by_class.setdefault(event["class_uid"], []).append(event)
    connects, requests = by_class[4001], by_class[4002]
    assert len(connects) == 30 and len(requests) == 6
    assert http.ocsf.url.startswith("https://")
    # deny_connects sends from several connections at once: their lines interleave.
    hosts = [e["dst_endpoint"]["hostname"] for e in connects]
    assert len(set(hosts)) == 30 and all(h.endswith(".denied.test") for h in hosts)
    refused = next(e for e in connects if e["dst_endpoint"]["hostname"] == "d-0-0.denied.test")
    assert (refused["activity_id"], refused["type_uid"], refused["disposition_id"],
            refused["action_id"], refused["status_id"], refused["status_detail"]) == (
        5, 400105, 2, 2, 2, "host_not_allowed")
    assert refused["actor"]["app_name"] == refused["actor"]["user"]["name"] == "alpha"
    assert refused["dst_endpoint"] == {"hostname": "d-0-0.denied.test", "port": 443}
    get = requests[0]
    assert get["activity_id"] == 3 and get["http_request"]["http_method"] == "GET"
    assert get["http_request"]["url"]["path"] == "/collect/0"
    assert get["dst_endpoint"]["hostname"] == "exfil.denied.test"
    assert all("sk_live_abc" not in json.dumps(e) for e in events)  # the query never leaves
    check = verify(tmp_path, http, [json.dumps(e) for e in events])
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_token_is_in_no_log_line_metric_or_audit_line(http: HttpWorld) -> None:
    text = http.egress.proxy.log() + "\n".join(http.egress.audit_lines()) + \
        http.egress.admin("/metrics").text + http.egress.admin("/readyz").text
    assert LOKI_TOKEN not in text


def test_an_outage_and_error_answers_keep_every_line_in_order(http: HttpWorld) -> None:
    before = len(http.egress.audit_lines())
    http.loki.server.fail(503, "ingester unavailable")
    http.jsonl.down()
    http.egress.deny_connects(200, tag="outage")
    deadline = time.monotonic() + 10
    metrics = http.egress.metrics()
    while metrics['egress_audit_ship_failures_total{destination="jsonl-archive"}'] < 2 \
            and time.monotonic() < deadline:
        time.sleep(0.1)
        metrics = http.egress.metrics()
    loki_name = http.loki.push_url
    assert metrics[f'egress_audit_spool_lines{{destination="{loki_name}"}}'] == 200
    assert metrics[f'egress_audit_ship_failures_total{{destination="{loki_name}"}}'] >= 1
    assert "HTTP 503: ingester unavailable" in http.egress.proxy.log()
    http.loki.server.fail(None)
    http.jsonl.up()
    wait_all(http)
    lines = http.egress.audit_lines()
    assert len(lines) == before + 200
    assert [e.line for e in sorted(http.loki.entries(), key=lambda e: e.ns)] == lines
    assert http.bodies(http.jsonl) == lines
    assert [json.loads(b)["raw_data"] for b in http.bodies(http.ocsf)] == lines


def test_a_reload_adds_a_destination_that_gets_lines_from_then_on(tmp_path: Path) -> None:
    """POST /reload with a second destination: it gets every line written after the reload,
    in order; the first keeps getting everything. A bad ship setting keeps the running one."""
    with serve_api(collector(), ca=None) as first, serve_api(collector(), ca=None) as second:
        def bodies(server: ApiServer) -> list[str]:
            return [line for r in server.received if r.method == "POST"
                    for line in r.body.decode().splitlines()]

        one = f'- http: {{url: "{first.url}/a"}}\n'
        with ship_world(tmp_path, one) as w:
            w.deny_connects(5, tag="before")
            text = w.policy_file.read_text()
            w.policy_file.write_text(text.replace(
                one.rstrip("\n"), one.rstrip("\n") + f'\n      - http: {{url: "{second.url}/b"}}'))
            with httpx.Client(timeout=10, trust_env=False) as client:
                assert client.post(f"http://127.0.0.1:{w.admin_port}/reload").status_code == 200
            reloaded_at = len(w.audit_lines())
            w.deny_connects(5, tag="after")
            w.policy_file.write_text(text.replace(f'{first.url}/a"', f'{first.url}/a", format: xml'))
            with httpx.Client(timeout=10, trust_env=False) as client:
                bad = client.post(f"http://127.0.0.1:{w.admin_port}/reload")
            assert bad.status_code == 422 and "settings.audit.ship" in bad.text
            w.deny_connects(3, tag="kept")
            lines = w.audit_lines()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (
                    len(bodies(first)) < len(lines) or len(bodies(second)) < len(lines) - reloaded_at):
                time.sleep(0.05)
            assert bodies(first) == lines
            assert bodies(second) == lines[reloaded_at:]
            assert sum("after-" in x for x in bodies(second)) == 5
