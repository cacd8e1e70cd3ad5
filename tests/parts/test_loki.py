"""Self-test of tests/parts/loki.py: Loki's JSON push, what it accepts and what it refuses."""

from __future__ import annotations

import gzip
import json
import ssl
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import TestCA
from tests.parts.loki import LokiServer, loki_server


@pytest.fixture
def loki() -> Iterator[LokiServer]:
    with loki_server() as server:
        yield server


def now_ns(offset_s: float = 0) -> str:
    return str(int((time.time() + offset_s) * 1e9))


def push(loki: LokiServer, body: Any, **headers: str) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with httpx.Client(trust_env=False, timeout=10) as client:
        return client.post(loki.push_url, content=raw,
                           headers={"Content-Type": "application/json", **headers})


def test_accepted_entries_are_recorded_in_order(loki: LokiServer) -> None:
    t1, t2 = now_ns(), now_ns(0.001)
    got = push(loki, {"streams": [
        {"stream": {"skill": "alpha", "decision": "deny"},
         "values": [[t1, '{"reason":"host_not_allowed"}'], [t2, "second", {"request_id": "r1"}]]},
        {"stream": {"skill": "beta"}, "values": [[t1, "third"]]}]})
    assert got.status_code == 204
    assert [e.line for e in loki.entries()] == ['{"reason":"host_not_allowed"}', "second", "third"]
    assert loki.lines({"skill": "alpha"}) == ['{"reason":"host_not_allowed"}', "second"]
    assert loki.entries()[1].metadata == {"request_id": "r1"} and loki.entries()[0].ns == int(t1)
    assert loki.pushes == 1


def test_gzip_body_is_accepted(loki: LokiServer) -> None:
    body = gzip.compress(json.dumps({"streams": [
        {"stream": {"skill": "alpha"}, "values": [[now_ns(), "zipped"]]}]}).encode())
    assert push(loki, body, **{"Content-Encoding": "gzip"}).status_code == 204
    assert loki.lines() == ["zipped"]


@pytest.mark.parametrize("body", [
    pytest.param(b"not json", id="not JSON"),
    pytest.param({"entries": []}, id="no streams"),
    pytest.param({"streams": [{"stream": {}, "values": [["1", "x"]]}]}, id="no labels"),
    pytest.param({"streams": [{"stream": {"bad-name": "x"}, "values": []}]}, id="label name"),
    pytest.param({"streams": [{"stream": {"a": "b"}, "values": [[1, "x"]]}]},
                 id="numeric timestamp"),
    pytest.param({"streams": [{"stream": {"a": "b"}, "values": [["1", "x"]]}]},
                 id="too old (1970)"),
    pytest.param({"streams": [{"stream": {"a": "b"}, "values": [["NOW", "x" * 300_000]]}]},
                 id="line too long"),
])
def test_bad_pushes_are_400_and_record_nothing(loki: LokiServer, body: Any) -> None:
    if isinstance(body, dict) and "streams" in body:
        for stream in body["streams"]:
            stream["values"] = [[now_ns() if v[0] == "NOW" else v[0], *v[1:]]
                                for v in stream["values"]]
    got = push(loki, body)
    assert got.status_code == 400, got.text
    assert got.text.strip()
    assert loki.entries() == []


def test_protobuf_is_not_implemented(loki: LokiServer) -> None:
    with httpx.Client(trust_env=False) as client:
        got = client.post(loki.push_url, content=b"\x00",
                          headers={"Content-Type": "application/x-protobuf"})
    assert got.status_code == 415


def test_tenant_and_token(test_ca: TestCA) -> None:
    with loki_server(test_ca, tenant="egress", token="push-token") as loki:
        context = ssl.create_default_context(cafile=test_ca.path)
        body = json.dumps({"streams": [{"stream": {"a": "b"}, "values": [[now_ns(), "x"]]}]})
        with httpx.Client(verify=context, trust_env=False) as client:
            def send(**headers: str) -> int:
                return client.post(loki.push_url, content=body, headers={
                    "Content-Type": "application/json", **headers}).status_code

            assert send() == 401
            assert send(Authorization="Bearer push-token") == 401  # tenant missing
            assert send(Authorization="Bearer push-token", **{"X-Scope-OrgID": "egress"}) == 204
        assert loki.lines() == ["x"]


def test_outage_records_nothing_until_back(loki: LokiServer) -> None:
    body = {"streams": [{"stream": {"a": "b"}, "values": [[now_ns(), "during"]]}]}
    loki.server.fail(503, "Ingester not ready")
    assert push(loki, body).status_code == 503
    loki.server.fail(None)
    loki.server.down()
    with pytest.raises(httpx.ConnectError):
        push(loki, body)
    loki.server.up()
    assert loki.entries() == []
    assert push(loki, body).status_code == 204
    assert loki.lines() == ["during"]
