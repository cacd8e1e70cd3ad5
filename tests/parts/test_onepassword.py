"""Self-test of tests/parts/onepassword.py: the Connect API calls an op:// reference needs."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import TestCA
from tests.parts.onepassword import OnePasswordConnect, onepassword_server


@pytest.fixture
def op(test_ca: TestCA) -> Iterator[OnePasswordConnect]:
    with onepassword_server(test_ca) as server:
        server.add_vault("Skills")
        server.add_vault("Other")
        server.add_item("Skills", "Stripe", {"username": "acct", "credential": "sk_test_1"},
                        sections={"Webhooks": {"credential": "whsec_1"}})
        server.add_item("Other", "Stripe", {"credential": "other"})
        yield server


@pytest.fixture
def http(test_ca: TestCA) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=test_ca.path)
    with httpx.Client(verify=context, trust_env=False, timeout=10) as client:
        yield client


def get(http: httpx.Client, op: OnePasswordConnect, path: str, token: str | None,
        **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.get(f"{op.connect_url}{path}", headers=headers, params=params)


def resolve(http: httpx.Client, op: OnePasswordConnect, token: str, vault: str, item: str,
            label: str) -> str:
    """op://VAULT/ITEM/FIELD the way a Connect client resolves it."""
    vaults = get(http, op, "/v1/vaults", token, filter=f'name eq "{vault}"').json()
    assert len(vaults) == 1
    items = get(http, op, f"/v1/vaults/{vaults[0]['id']}/items", token,
                filter=f'title eq "{item}"').json()
    assert len(items) == 1
    full = get(http, op, f"/v1/vaults/{vaults[0]['id']}/items/{items[0]['id']}", token).json()
    values = [f["value"] for f in full["fields"] if f["label"] == label and "section" not in f]
    assert len(values) == 1
    return str(values[0])


def test_reference_resolves_through_the_three_calls(op: OnePasswordConnect,
                                                    http: httpx.Client) -> None:
    token = op.add_token()
    assert resolve(http, op, token, "Skills", "Stripe", "credential") == "sk_test_1"
    paths = [r.path for r in op.server.received]
    assert paths[0] == "/v1/vaults" and paths[-1].count("/") == 5


def test_json_shapes_follow_the_spec(op: OnePasswordConnect, http: httpx.Client) -> None:
    token = op.add_token()
    vault = get(http, op, "/v1/vaults", token, filter='name eq "Skills"').json()[0]
    assert re.fullmatch(r"[\da-z]{26}", vault["id"])
    assert {"name", "contentVersion", "attributeVersion", "items", "type", "createdAt",
            "updatedAt"} <= vault.keys()
    summary = get(http, op, f"/v1/vaults/{vault['id']}/items", token).json()[0]
    assert "fields" not in summary and summary["vault"] == {"id": vault["id"]}
    full = get(http, op, f"/v1/vaults/{vault['id']}/items/{summary['id']}", token).json()
    assert full["version"] == 1 and full["category"] == "API_CREDENTIAL"
    by_label = {(f["label"], "section" in f): f for f in full["fields"]}
    assert by_label[("credential", False)]["type"] == "CONCEALED"
    assert by_label[("username", False)]["purpose"] == "USERNAME"
    section = by_label[("credential", True)]
    assert {"id": section["section"]["id"], "label": "Webhooks"} in full["sections"]
    assert section["value"] == "whsec_1"


def test_rotation_changes_value_version_and_updated_at(op: OnePasswordConnect,
                                                       http: httpx.Client) -> None:
    token = op.add_token()
    before = op.item_json("Skills", "Stripe")
    vault_before = get(http, op, "/v1/vaults", token, filter='name eq "Skills"').json()[0]
    assert op.set_field("Skills", "Stripe", "credential", "sk_test_2") == 2
    after = op.item_json("Skills", "Stripe")
    assert after["updatedAt"] > before["updatedAt"] and after["version"] == 2
    vault_after = get(http, op, "/v1/vaults", token, filter='name eq "Skills"').json()[0]
    assert vault_after["contentVersion"] == vault_before["contentVersion"] + 1
    assert resolve(http, op, token, "Skills", "Stripe", "credential") == "sk_test_2"


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic abc"])
def test_bad_token_is_401_error_response(op: OnePasswordConnect, http: httpx.Client,
                                         header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    got = http.get(f"{op.connect_url}/v1/vaults", headers=headers)
    assert got.status_code == 401
    assert got.json() == {"status": 401, "message": "Invalid token signature"}


def test_revoked_token_stops_working(op: OnePasswordConnect, http: httpx.Client) -> None:
    token = op.add_token()
    assert get(http, op, "/v1/vaults", token).status_code == 200
    op.revoke_token(token)
    assert get(http, op, "/v1/vaults", token).status_code == 401


def test_token_scoped_to_one_vault(op: OnePasswordConnect, http: httpx.Client) -> None:
    narrow = op.add_token(["Skills"])
    names = [v["name"] for v in get(http, op, "/v1/vaults", narrow).json()]
    assert names == ["Skills"]
    other_id = get(http, op, "/v1/vaults", op.add_token(), filter='name eq "Other"').json()[0]["id"]
    denied = get(http, op, f"/v1/vaults/{other_id}/items", narrow)
    assert denied.status_code == 403
    assert denied.json() == {"status": 403, "message": f"vault {other_id} is not in scope"}


def test_not_found_and_bad_filters(op: OnePasswordConnect, http: httpx.Client) -> None:
    token = op.add_token()
    missing = "a" * 26
    got = get(http, op, f"/v1/vaults/{missing}/items", token)
    assert got.status_code == 404 and got.json()["message"] == f"vault {missing} not found"
    vault = get(http, op, "/v1/vaults", token, filter='name eq "Skills"').json()[0]["id"]
    got = get(http, op, f"/v1/vaults/{vault}/items/{missing}", token)
    assert got.status_code == 404 and got.json()["message"] == f"item {missing} not found"
    assert get(http, op, "/v1/vaults", token, filter='title eq "Skills"').status_code == 400
    assert get(http, op, "/v1/vaults", token, filter='name eq "Nope"').json() == []


def test_duplicate_titles_both_listed(op: OnePasswordConnect, http: httpx.Client) -> None:
    token = op.add_token()
    op.add_item("Skills", "Stripe", {"credential": "duplicate"})
    vault = get(http, op, "/v1/vaults", token, filter='name eq "Skills"').json()[0]["id"]
    assert len(get(http, op, f"/v1/vaults/{vault}/items", token,
                   filter='title eq "Stripe"').json()) == 2


def test_health_and_heartbeat_need_no_token(op: OnePasswordConnect, http: httpx.Client) -> None:
    assert http.get(f"{op.connect_url}/heartbeat").text == "."
    health = http.get(f"{op.connect_url}/health").json()
    assert health["name"] == "1Password Connect API" and "version" in health


def test_controls_down_slow_fail(op: OnePasswordConnect, test_ca: TestCA) -> None:
    token = op.add_token()
    context = ssl.create_default_context(cafile=test_ca.path)
    with httpx.Client(verify=context, trust_env=False, timeout=0.5) as quick:
        op.server.delay = 2.0
        with pytest.raises(httpx.ReadTimeout):
            get(quick, op, "/v1/vaults", token)
        op.server.delay = 0
        op.server.fail(500, '{"status":500,"message":"sync failed"}', "application/json")
        assert get(quick, op, "/v1/vaults", token).status_code == 500
        op.server.fail(None)
        op.server.down()
        with pytest.raises(httpx.ConnectError):
            get(quick, op, "/v1/vaults", token)
        op.server.up()
        assert get(quick, op, "/v1/vaults", token).status_code == 200
