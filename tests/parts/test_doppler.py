"""Self-test of tests/parts/doppler.py: Doppler's v3 secret and download endpoints."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import TestCA
from tests.parts.doppler import DopplerApi, doppler_server


@pytest.fixture
def doppler(test_ca: TestCA) -> Iterator[DopplerApi]:
    with doppler_server(test_ca) as server:
        server.set_secret("backend", "prd", "STRIPE_KEY", "sk_live_1")
        server.set_secret("backend", "prd", "WEBHOOK_URL", "https://x.test/${STRIPE_KEY}")
        server.set_secret("backend", "dev", "STRIPE_KEY", "sk_test_1")
        yield server


@pytest.fixture
def http(test_ca: TestCA) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=test_ca.path)
    with httpx.Client(verify=context, trust_env=False, timeout=10) as client:
        yield client


def secret(http: httpx.Client, doppler: DopplerApi, token: str | None,
           **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.get(f"{doppler.api_url}/v3/configs/config/secret", params=params,
                    headers=headers)


def test_service_token_reads_its_config_without_naming_it(doppler: DopplerApi,
                                                          http: httpx.Client) -> None:
    token = doppler.add_service_token("backend", "prd")
    got = secret(http, doppler, token, name="STRIPE_KEY")
    assert got.status_code == 200
    body = got.json()
    assert body["success"] is True and body["name"] == "STRIPE_KEY"
    assert body["value"]["raw"] == body["value"]["computed"] == "sk_live_1"


def test_computed_expands_references_raw_does_not(doppler: DopplerApi,
                                                  http: httpx.Client) -> None:
    token = doppler.add_service_token("backend", "prd")
    value = secret(http, doppler, token, name="WEBHOOK_URL").json()["value"]
    assert value["raw"] == "https://x.test/${STRIPE_KEY}"
    assert value["computed"] == "https://x.test/sk_live_1"


def test_basic_auth_with_token_as_user_name(doppler: DopplerApi, http: httpx.Client) -> None:
    token = doppler.add_service_token("backend", "prd")
    got = http.get(f"{doppler.api_url}/v3/configs/config/secret", params={"name": "STRIPE_KEY"},
                   auth=(token, ""))
    assert got.json()["value"]["raw"] == "sk_live_1"


def test_service_token_cannot_read_another_config(doppler: DopplerApi,
                                                  http: httpx.Client) -> None:
    token = doppler.add_service_token("backend", "prd")
    got = secret(http, doppler, token, project="backend", config="dev", name="STRIPE_KEY")
    assert got.status_code == 403
    assert got.json()["success"] is False and got.json()["messages"]


def test_personal_token_needs_project_and_config(doppler: DopplerApi, http: httpx.Client) -> None:
    token = doppler.add_personal_token()
    assert secret(http, doppler, token, name="STRIPE_KEY").status_code == 400
    got = secret(http, doppler, token, project="backend", config="dev", name="STRIPE_KEY")
    assert got.json()["value"]["computed"] == "sk_test_1"


@pytest.mark.parametrize("params, status", [
    pytest.param({"project": "nope", "config": "prd", "name": "STRIPE_KEY"}, 404, id="project"),
    pytest.param({"project": "backend", "config": "stg", "name": "STRIPE_KEY"}, 404, id="config"),
    pytest.param({"project": "backend", "config": "prd", "name": "MISSING"}, 404, id="secret"),
    pytest.param({"project": "backend", "config": "prd"}, 400, id="no name"),
])
def test_not_found_and_missing_parameters(doppler: DopplerApi, http: httpx.Client,
                                          params: dict[str, str], status: int) -> None:
    got = secret(http, doppler, doppler.add_personal_token(), **params)
    assert got.status_code == status
    assert set(got.json()) == {"messages", "success"} and got.json()["success"] is False


@pytest.mark.parametrize("token", [None, "dp.st.prd.made-up"])
def test_bad_token_is_401(doppler: DopplerApi, http: httpx.Client, token: str | None) -> None:
    got = secret(http, doppler, token, name="STRIPE_KEY")
    assert got.status_code == 401 and got.json()["success"] is False


def test_revoked_token_is_401(doppler: DopplerApi, http: httpx.Client) -> None:
    token = doppler.add_service_token("backend", "prd")
    doppler.revoke_token(token)
    assert secret(http, doppler, token, name="STRIPE_KEY").status_code == 401


def test_download_json_with_etag(doppler: DopplerApi, http: httpx.Client) -> None:
    token = doppler.add_service_token("backend", "prd")
    url = f"{doppler.api_url}/v3/configs/config/secrets/download"
    headers = {"Authorization": f"Bearer {token}"}
    first = http.get(url, params={"format": "json"}, headers=headers)
    assert first.json() == {"STRIPE_KEY": "sk_live_1", "WEBHOOK_URL": "https://x.test/sk_live_1",
                            "DOPPLER_PROJECT": "backend", "DOPPLER_CONFIG": "prd",
                            "DOPPLER_ENVIRONMENT": "prd"}
    etag = first.headers["etag"]
    same = http.get(url, params={"format": "json"}, headers={**headers, "If-None-Match": etag})
    assert same.status_code == 304
    doppler.set_secret("backend", "prd", "STRIPE_KEY", "sk_live_2")  # rotation
    changed = http.get(url, params={"format": "json"},
                       headers={**headers, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["STRIPE_KEY"] == "sk_live_2"


def test_controls_down_and_fail(doppler: DopplerApi, http: httpx.Client) -> None:
    token = doppler.add_service_token("backend", "prd")
    doppler.server.fail(500, '{"messages":["Internal error"],"success":false}',
                        "application/json")
    assert secret(http, doppler, token, name="STRIPE_KEY").status_code == 500
    doppler.server.fail(None)
    doppler.server.down()
    with pytest.raises(httpx.ConnectError):
        secret(http, doppler, token, name="STRIPE_KEY")
    doppler.server.up()
    assert secret(http, doppler, token, name="STRIPE_KEY").status_code == 200
