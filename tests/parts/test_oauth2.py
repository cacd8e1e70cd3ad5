"""Self-test of tests/parts/oauth2.py: RFC 6749 token endpoint and RFC 6750 resource."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from urllib.parse import quote_plus

import httpx
import pytest

from tests.conftest import TestCA
from tests.parts.oauth2 import OAuth2Server, oauth2_server


@pytest.fixture
def auth(test_ca: TestCA) -> Iterator[OAuth2Server]:
    with oauth2_server(test_ca, rotate_refresh_tokens=False) as server:
        server.add_client("app", "s3cr3t:with&odd=chars", scope="read write")
        server.add_client("other", "other-secret", scope="read")
        yield server


@pytest.fixture
def http(test_ca: TestCA) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=test_ca.path)
    with httpx.Client(verify=context, trust_env=False, timeout=10) as client:
        yield client


def basic(client_id: str, secret: str) -> dict[str, str]:
    # RFC 6749 §2.3.1: form-urlencode id and secret, then Basic.
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def token(http: httpx.Client, auth: OAuth2Server, form: dict[str, str],
          headers: dict[str, str] | None = None) -> httpx.Response:
    return http.post(auth.token_url, data=form, headers=headers or {})


def test_client_credentials_with_basic_gives_a_token_the_resource_takes(
        auth: OAuth2Server, http: httpx.Client) -> None:
    got = token(http, auth, {"grant_type": "client_credentials"},
                basic("app", "s3cr3t:with&odd=chars"))
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["scope"] == "read write" and "refresh_token" not in body
    assert got.headers["cache-control"] == "no-store"
    used = http.get(auth.resource_url, headers={"Authorization": f"Bearer {body['access_token']}"})
    assert used.status_code == 200
    assert used.json()["client_id"] == "app"
    assert auth.grants["client_credentials"] == 1


def test_client_credentials_with_body_auth_and_narrower_scope(auth: OAuth2Server,
                                                              http: httpx.Client) -> None:
    got = token(http, auth, {"grant_type": "client_credentials", "client_id": "app",
                             "client_secret": "s3cr3t:with&odd=chars", "scope": "read"})
    assert got.status_code == 200 and got.json()["scope"] == "read"


@pytest.mark.parametrize("form, headers, status, error", [
    pytest.param({"grant_type": "client_credentials"}, basic("app", "wrong"), 401,
                 "invalid_client", id="wrong secret, Basic"),
    pytest.param({"grant_type": "client_credentials", "client_id": "app",
                  "client_secret": "wrong"}, {}, 400, "invalid_client", id="wrong secret, body"),
    pytest.param({"grant_type": "client_credentials"}, {}, 401, "invalid_client",
                 id="no client authentication"),
    pytest.param({"grant_type": "client_credentials", "client_id": "app",
                  "client_secret": "s3cr3t:with&odd=chars"},
                 basic("app", "s3cr3t:with&odd=chars"), 400, "invalid_request",
                 id="two authentication methods"),
    pytest.param({"grant_type": "password"}, basic("app", "s3cr3t:with&odd=chars"), 400,
                 "unsupported_grant_type", id="other grant"),
    pytest.param({}, basic("app", "s3cr3t:with&odd=chars"), 400, "invalid_request",
                 id="no grant_type"),
    pytest.param({"grant_type": "client_credentials", "scope": "read admin"},
                 basic("app", "s3cr3t:with&odd=chars"), 400, "invalid_scope",
                 id="scope wider than the client's"),
    pytest.param({"grant_type": "refresh_token", "refresh_token": "rt-made-up"},
                 basic("app", "s3cr3t:with&odd=chars"), 400, "invalid_grant",
                 id="unknown refresh token"),
])
def test_token_errors(auth: OAuth2Server, http: httpx.Client, form: dict[str, str],
                      headers: dict[str, str], status: int, error: str) -> None:
    got = token(http, auth, form, headers)
    assert (got.status_code, got.json()["error"]) == (status, error)
    if status == 401:
        assert got.headers["www-authenticate"].startswith("Basic")
    assert auth.grants.total() == 0


def test_token_endpoint_wants_a_post_of_a_form_without_repeats(auth: OAuth2Server,
                                                                http: httpx.Client) -> None:
    assert http.get(auth.token_url).status_code == 405
    as_json = http.post(auth.token_url, json={"grant_type": "client_credentials"},
                        headers=basic("app", "s3cr3t:with&odd=chars"))
    assert as_json.json()["error"] == "invalid_request"
    repeated = http.post(auth.token_url, content=b"grant_type=client_credentials&scope=read"
                         b"&scope=write", headers={**basic("app", "s3cr3t:with&odd=chars"),
                         "Content-Type": "application/x-www-form-urlencoded"})
    assert repeated.json()["error"] == "invalid_request"


def test_refresh_grant_without_rotation_reuses_the_refresh_token(auth: OAuth2Server,
                                                                  http: httpx.Client) -> None:
    refresh = auth.issue_refresh_token("app", scope="read")
    for _ in range(2):
        got = token(http, auth, {"grant_type": "refresh_token", "refresh_token": refresh},
                    basic("app", "s3cr3t:with&odd=chars"))
        assert got.status_code == 200 and "refresh_token" not in got.json()
        assert got.json()["scope"] == "read"
    assert auth.grants["refresh_token"] == 2


def test_refresh_token_is_bound_to_its_client(auth: OAuth2Server, http: httpx.Client) -> None:
    refresh = auth.issue_refresh_token("app")
    got = token(http, auth, {"grant_type": "refresh_token", "refresh_token": refresh},
                basic("other", "other-secret"))
    assert got.json()["error"] == "invalid_grant"


def test_rotation_issues_a_new_refresh_token_and_retires_the_old(test_ca: TestCA,
                                                                 http: httpx.Client) -> None:
    with oauth2_server(test_ca, rotate_refresh_tokens=True, expires_in=60) as auth:
        auth.add_client("app", "pw", scope="read")
        first = auth.issue_refresh_token("app")
        got = token(http, auth, {"grant_type": "refresh_token", "refresh_token": first},
                    basic("app", "pw"))
        second = got.json()["refresh_token"]
        assert second != first and got.json()["expires_in"] == 60
        assert auth.valid_refresh_tokens("app") == [second]
        reused = token(http, auth, {"grant_type": "refresh_token", "refresh_token": first},
                       basic("app", "pw"))
        assert reused.json()["error"] == "invalid_grant"
        again = token(http, auth, {"grant_type": "refresh_token", "refresh_token": second},
                      basic("app", "pw"))
        assert again.status_code == 200
        assert auth.grants["refresh_token"] == 2 and auth.errors["invalid_grant"] == 1


def test_resource_takes_only_current_tokens(auth: OAuth2Server, http: httpx.Client) -> None:
    def call(value: str | None) -> httpx.Response:
        headers = {"Authorization": value} if value else {}
        return http.post(f"{auth.url}/api/v1/things", headers=headers)

    missing = call(None)
    assert missing.status_code == 401 and "error=" not in missing.headers["www-authenticate"]
    assert 'error="invalid_token"' in call("Bearer at-made-up").headers["www-authenticate"]
    minted = token(http, auth, {"grant_type": "client_credentials"},
                   basic("app", "s3cr3t:with&odd=chars")).json()["access_token"]
    assert call(f"Bearer {minted}").status_code == 200
    assert call(f"Basic {minted}").status_code == 401
    auth.expire_access_tokens()
    assert call(f"Bearer {minted}").status_code == 401
    assert not auth.is_valid(minted)
    auth.set_expires_in(0)  # minted already expired: "fresh" means fresh
    stale = token(http, auth, {"grant_type": "client_credentials"},
                  basic("app", "s3cr3t:with&odd=chars")).json()["access_token"]
    assert call(f"Bearer {stale}").status_code == 401


def test_resource_scope_rule(auth: OAuth2Server, http: httpx.Client) -> None:
    auth.require_scope("/api/admin", "write")
    narrow = token(http, auth, {"grant_type": "client_credentials", "scope": "read"},
                   basic("app", "s3cr3t:with&odd=chars")).json()["access_token"]
    denied = http.get(f"{auth.url}/api/admin/x", headers={"Authorization": f"Bearer {narrow}"})
    assert denied.status_code == 403
    assert 'error="insufficient_scope"' in denied.headers["www-authenticate"]


def test_controls_fail_down_up(auth: OAuth2Server, http: httpx.Client) -> None:
    form = {"grant_type": "client_credentials"}
    auth.server.fail(503, "maintenance")
    assert token(http, auth, form, basic("app", "s3cr3t:with&odd=chars")).status_code == 503
    auth.server.fail(None)
    auth.server.down()
    with pytest.raises(httpx.ConnectError):
        token(http, auth, form, basic("app", "s3cr3t:with&odd=chars"))
    auth.server.up()
    assert token(http, auth, form, basic("app", "s3cr3t:with&odd=chars")).status_code == 200
    assert auth.grants["client_credentials"] == 1  # the failed attempts minted nothing
    assert len(auth.server.requests_to("/oauth/token")) == 2  # refused-at-connect not seen
