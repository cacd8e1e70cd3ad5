"""EgressAddon in mitmproxy's test harness (taddons, tflow): hooks in, flows and audit lines out.

No proxy process and no sockets: each test builds a flow as mitmproxy would hand it to the hook,
calls the hook, and asserts on the flow (response, pinned address, headers) and on the audit
log. DNS is tests/fakes.py's resolver. End to end, through a real egress: tests/e2e/."""

from __future__ import annotations

import base64
import ipaddress
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.addons import proxyserver
from mitmproxy.proxy import server_hooks
from mitmproxy.test import taddons, tflow, tutils

from egress.identity import TokenStore
from egress.netguard import AddressGuard
from egress.proxy.addon import EgressAddon
from tests.fakes import FakeResolver

PUBLIC = "93.184.216.34"
PLACEHOLDER = "ph_key_0000000000000000"
POLICY = f"""
skills:
  s:
    allow:
      - host: api.example.com
      - host: plain.example.com
        ports: [80]
      - host: pay.example.com
        credential: key
    credentials:
      key: {{secret: "env:EGRESS_TEST_KEY", placeholder: "{PLACEHOLDER}"}}
"""


class Harness:
    def __init__(self, addon: EgressAddon, data: Path, token: str) -> None:
        self.addon, self.data, self.token = addon, data, token

    def auth(self, skill: str = "s", token: str | None = None) -> str:
        raw = f"{skill}:{token if token is not None else self.token}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def audit(self) -> list[dict[str, object]]:
        path = self.data / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(textwrap.dedent(POLICY))
    data = tmp_path / "data"
    token = TokenStore(data).issue("s")
    addon = EgressAddon()
    with taddons.context(proxyserver.Proxyserver(), addon) as tctx:
        tctx.configure(addon, egress_policies=str(policies), egress_data_dir=str(data))
        assert addon.runtime is not None
        addon.runtime.guard = AddressGuard(
            FakeResolver({"api.example.com": (ipaddress.ip_address(PUBLIC),),
                          "plain.example.com": (ipaddress.ip_address(PUBLIC),)}),
            addon.runtime.guard.networks)
        yield Harness(addon, data, token)


def connect_flow(host: str, port: int, auth: str | None) -> http.HTTPFlow:
    headers = http.Headers([(b"Proxy-Authorization", auth.encode())] if auth else [])
    return tflow.tflow(req=tutils.treq(method=b"CONNECT", host=host, port=port, scheme=b"",
                                       authority=f"{host}:{port}".encode(), path=b"",
                                       headers=headers, content=b""))


def plain_flow(host: str, auth: str, extra: list[tuple[bytes, bytes]] = ()) -> http.HTTPFlow:  # type: ignore[assignment]
    headers = http.Headers([(b"Host", host.encode()), (b"Proxy-Authorization", auth.encode()),
                            *extra])
    return tflow.tflow(req=tutils.treq(host=host, port=80, path=b"/x", headers=headers,
                                       content=b""))


async def test_connect_is_pinned_to_the_vetted_address(harness: Harness) -> None:
    flow = connect_flow("api.example.com", 443, harness.auth())
    await harness.addon.http_connect(flow)
    assert flow.response is None
    assert flow.request.host == PUBLIC  # mitmproxy dials exactly the vetted address
    assert "Proxy-Authorization" not in flow.request.headers
    assert harness.audit() == []  # allowed, and log_allowed is off


@pytest.mark.parametrize("auth, status, reason", [
    pytest.param(None, 407, "auth_required", id="no credentials"),
    pytest.param("wrong", 407, "auth_invalid", id="wrong token"),
])
async def test_connect_without_valid_credentials_is_refused_and_audited(
        harness: Harness, auth: str | None, status: int, reason: str) -> None:
    header = None if auth is None else harness.auth(token=auth)
    flow = connect_flow("api.example.com", 443, header)
    await harness.addon.http_connect(flow)
    assert flow.response is not None and flow.response.status_code == status
    assert flow.response.headers["Proxy-Authenticate"] == 'Basic realm="egress"'
    [line] = harness.audit()
    assert (line["decision"], line["reason"], line["kind"], line["skill"]) == (
        "deny", reason, "connect", None)


async def test_connect_to_a_host_not_listed_is_refused_before_dns(harness: Harness) -> None:
    flow = connect_flow("evil.example.com", 443, harness.auth())
    await harness.addon.http_connect(flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert json.loads(flow.response.content or b"")["reason"] == "host_not_allowed"
    [line] = harness.audit()
    assert (line["reason"], line["host"], line["skill"]) == ("host_not_allowed",
                                                              "evil.example.com", "s")


async def test_plain_http_is_pinned_and_loses_its_proxy_credentials(harness: Harness) -> None:
    flow = plain_flow("plain.example.com", harness.auth())
    await harness.addon.requestheaders(flow)
    assert flow.response is None
    assert flow.request.data.host == PUBLIC
    assert flow.request.headers["Host"] == "plain.example.com"  # the Host header untouched
    assert "Proxy-Authorization" not in flow.request.headers


async def test_plain_http_carrying_a_placeholder_elsewhere_is_exfiltration(
        harness: Harness) -> None:
    flow = plain_flow("plain.example.com", harness.auth(),
                      [(b"X-Key", PLACEHOLDER.encode())])
    await harness.addon.requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == 403
    [line] = harness.audit()
    assert (line["reason"], line["kind"], line["method"], line["path"]) == (
        "credential_exfiltration", "http", "GET", "/x")
    assert PLACEHOLDER not in json.dumps(line)


async def test_server_connect_refuses_an_address_that_was_not_vetted(harness: Harness) -> None:
    flow = tflow.tflow()
    flow.server_conn.address = ("10.0.0.9", 443)
    data = server_hooks.ServerConnectionHookData(server=flow.server_conn,
                                                 client=flow.client_conn)
    harness.addon.server_connect(data)
    assert data.server.error == "egress: destination address was not vetted"
    [line] = harness.audit()
    assert (line["reason"], line["host"], line["port"]) == ("blocked_address", "10.0.0.9", 443)


async def test_another_addons_answer_is_left_alone(harness: Harness) -> None:
    flow = connect_flow("evil.example.com", 443, None)
    flow.response = http.Response.make(418)
    await harness.addon.http_connect(flow)
    assert flow.response.status_code == 418 and harness.audit() == []


async def test_without_a_policy_everything_is_refused() -> None:
    addon = EgressAddon()
    with taddons.context(proxyserver.Proxyserver(), addon):
        flow = connect_flow("api.example.com", 443, "Basic eDp5")
        await addon.http_connect(flow)
        assert flow.response is not None and flow.response.status_code == 503
        assert json.loads(flow.response.content or b"")["reason"] == "no_policy"
