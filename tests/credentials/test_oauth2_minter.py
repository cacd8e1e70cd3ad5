"""TokenMinter (egress/credentials/oauth2.py) on its own: caching, refresh margin, single
flight, error mapping and refresh-token rotation, with a moved clock.

The token endpoint here is a scripted `TokenEndpoint` (the interface's network side is
egress/credentials/token_client.py); against a real OAuth2 server that counts grants and
rotates refresh tokens, end to end through egress: tests/e2e/test_credential_shapes.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import pytest

from egress.credentials.oauth2 import MAX_MARGIN, TokenMinter
from egress.errors import SecretForbidden, SecretUnavailable
from egress.policy.secret_refs import SecretRef, parse_secret_ref
from egress.policy.secret_settings import CacheSettings
from egress.policy.shapes import OAuth2
from egress.secrets import Secret, SecretCache
from tests.fakes import FakeClock, FakeSecretBackend

URL = "https://auth.example.com/oauth/token"
CLIENT_SECRET = "cs:&with=odd chars"
CLIENT_CREDENTIALS = OAuth2(URL, parse_secret_ref("env:CLIENT_ID"),
                            parse_secret_ref("env:CLIENT_SECRET"), scope="read write")


@dataclass
class ScriptedEndpoint:
    """Answers each POST with the next scripted (status, body); records what was sent.
    `hold`: POSTs wait until it is set (to keep a mint in flight)."""

    answers: list[tuple[int, Any]]
    posts: list[tuple[str, dict[str, str], tuple[str, str]]] = field(default_factory=list)
    hold: asyncio.Event | None = None

    async def post_form(self, url: str, form: Mapping[str, str], *,
                        basic: tuple[str, str]) -> tuple[int, Any]:
        self.posts.append((url, dict(form), basic))
        if self.hold is not None:
            await asyncio.wait_for(self.hold.wait(), timeout=10)
        return self.answers.pop(0)


class StoringBackend(FakeSecretBackend):
    """A backend that can store values, as Vault/OpenBao's KV can."""

    def __init__(self, values: Mapping[str, str], *, fail: bool = False) -> None:
        super().__init__(values)
        self.fail = fail
        self.writes: list[tuple[str, str]] = []

    async def write(self, ref: SecretRef, value: Secret) -> None:
        if self.fail:
            raise SecretUnavailable(f"{ref}: the test backend refuses writes")
        self.writes.append((ref.location, value.reveal()))
        self.values[ref.location] = value.reveal()


def bearer(token: str, expires_in: Any = 3600, **extra: Any) -> tuple[int, dict[str, Any]]:
    return 200, {"access_token": token, "token_type": "Bearer", "expires_in": expires_in,
                 **extra}


def world(backend: FakeSecretBackend | None = None, scheme: str = "env",
          ) -> tuple[FakeClock, SecretCache, TokenMinter]:
    clock = FakeClock()
    values = {"CLIENT_ID": "client-1", "CLIENT_SECRET": CLIENT_SECRET}
    backends: dict[str, FakeSecretBackend] = {"env": FakeSecretBackend(values)}
    if backend is not None:
        backends[scheme] = backend
    cache = SecretCache(backends, CacheSettings(ttl=30, jitter=0, grace=0), clock=clock)
    return clock, cache, TokenMinter(clock=clock)


async def test_client_credentials_grant_is_sent_with_basic_client_authentication() -> None:
    _, cache, minter = world()
    endpoint = ScriptedEndpoint([bearer("at-1")])
    minted = await minter.token(CLIENT_CREDENTIALS, cache, endpoint)
    assert minted.token.reveal() == "at-1"
    [(url, form, basic)] = endpoint.posts
    assert url == URL
    assert form == {"grant_type": "client_credentials", "scope": "read write"}
    # RFC 6749 2.3.1: id and secret form-urlencoded before Basic; decoding gives them back.
    assert tuple(unquote_plus(part) for part in basic) == ("client-1", CLIENT_SECRET)
    assert ":" not in basic[1]  # encoded: Basic's one ':' separator stays unambiguous
    assert minter.grants == {"client_credentials": 1}


@pytest.mark.parametrize("expires_in, refreshed_after", [
    pytest.param(3600, 3600 - MAX_MARGIN, id="long-lived: refreshed a minute early"),
    pytest.param(100, 90, id="short-lived: refreshed at 90% of its life"),
    pytest.param(None, 270, id="no expires_in: five minutes assumed"),
    pytest.param("3600", 270, id="expires_in not a number: five minutes assumed"),
    pytest.param(True, 270, id="expires_in a boolean: five minutes assumed"),
    pytest.param(-5, 270, id="expires_in negative: five minutes assumed"),
])
async def test_a_token_is_cached_until_its_margin_then_minted_again(
        expires_in: Any, refreshed_after: float) -> None:
    clock, cache, minter = world()
    endpoint = ScriptedEndpoint([bearer("at-1", expires_in), bearer("at-2")])
    assert (await minter.token(CLIENT_CREDENTIALS, cache, endpoint)).token.reveal() == "at-1"
    clock.advance(refreshed_after - 0.5)
    assert (await minter.token(CLIENT_CREDENTIALS, cache, endpoint)).token.reveal() == "at-1"
    assert len(endpoint.posts) == 1
    clock.advance(0.5)
    assert (await minter.token(CLIENT_CREDENTIALS, cache, endpoint)).token.reveal() == "at-2"
    assert len(endpoint.posts) == 2


async def test_concurrent_callers_share_one_mint() -> None:
    _, cache, minter = world()
    endpoint = ScriptedEndpoint([bearer("at-1")], hold=asyncio.Event())
    callers = [asyncio.create_task(minter.token(CLIENT_CREDENTIALS, cache, endpoint))
               for _ in range(20)]
    for _ in range(50):  # bounded: until the one POST is waiting
        await asyncio.sleep(0)
        if endpoint.posts:
            break
    assert endpoint.hold is not None
    endpoint.hold.set()
    tokens = {t.token.reveal() for t in await asyncio.gather(*callers)}
    assert tokens == {"at-1"} and len(endpoint.posts) == 1


async def test_a_failed_mint_is_not_cached_and_the_next_call_tries_again() -> None:
    _, cache, minter = world()
    endpoint = ScriptedEndpoint([(503, None), bearer("at-1")])
    with pytest.raises(SecretUnavailable):
        await minter.token(CLIENT_CREDENTIALS, cache, endpoint)
    assert (await minter.token(CLIENT_CREDENTIALS, cache, endpoint)).token.reveal() == "at-1"


@pytest.mark.parametrize("answer, error, message", [
    pytest.param((400, {"error": "invalid_client", "error_description": "secret cs:&with"}),
                 SecretForbidden, "answered HTTP 400 (invalid_client)", id="invalid_client"),
    pytest.param((400, {"error": "invalid_grant"}), SecretForbidden, "(invalid_grant)",
                 id="invalid_grant"),
    pytest.param((401, None), SecretForbidden, "answered HTTP 401", id="401 without a body"),
    pytest.param((400, {"error": "Not A Code\nat-leak"}), SecretUnavailable,
                 "answered HTTP 400", id="an error that is not an OAuth code is not echoed"),
    pytest.param((500, {"error": "server_error"}), SecretUnavailable, "HTTP 500 (server_error)",
                 id="server error"),
    pytest.param((200, ["not", "an", "object"]), SecretUnavailable, "answered HTTP 200",
                 id="JSON that is not an object"),
    pytest.param((200, {"token_type": "Bearer"}), SecretUnavailable, "no usable access_token",
                 id="no access_token"),
    pytest.param((200, {"access_token": "at 1\r\nX-Evil: 1", "token_type": "Bearer"}),
                 SecretUnavailable, "no usable access_token",
                 id="an access token that would split a header"),
    pytest.param((200, {"access_token": "at-1", "token_type": "mac"}), SecretUnavailable,
                 "token_type other than Bearer", id="not a bearer token"),
])
async def test_token_endpoint_failures_name_the_endpoint_never_a_secret(
        answer: tuple[int, Any], error: type[Exception], message: str) -> None:
    _, cache, minter = world()
    with pytest.raises(error) as raised:
        await minter.token(CLIENT_CREDENTIALS, cache, ScriptedEndpoint([answer]))
    text = str(raised.value)
    assert text.startswith(f"oauth2 token endpoint {URL} ") and message in text
    for secret in (CLIENT_SECRET, "client-1", "cs:&with", "at-leak", "X-Evil"):
        assert secret not in text
    assert minter.grants == {}


async def test_without_an_endpoint_client_nothing_is_minted() -> None:
    _, cache, minter = world()
    with pytest.raises(SecretUnavailable, match="no token endpoint client"):
        await minter.token(CLIENT_CREDENTIALS, cache, None)


async def test_invalidate_drops_only_the_token_the_resource_server_refused() -> None:
    _, cache, minter = world()
    endpoint = ScriptedEndpoint([bearer("at-1"), bearer("at-2")])
    await minter.token(CLIENT_CREDENTIALS, cache, endpoint)
    minter.invalidate(CLIENT_CREDENTIALS, Secret("at-older"))  # an earlier token: no effect
    assert minter.cached(CLIENT_CREDENTIALS) is not None
    minter.invalidate(CLIENT_CREDENTIALS, Secret("at-1"))
    assert minter.cached(CLIENT_CREDENTIALS) is None
    assert (await minter.token(CLIENT_CREDENTIALS, cache, endpoint)).token.reveal() == "at-2"


def refresh_grant(scheme: str) -> OAuth2:
    ref = "vault:secret/oauth#refresh" if scheme == "vault" else "file:/run/refresh"
    return OAuth2(URL, parse_secret_ref("env:CLIENT_ID"), parse_secret_ref("env:CLIENT_SECRET"),
                  refresh_token=parse_secret_ref(ref))


async def test_a_rotated_refresh_token_is_stored_where_the_backend_can_store_it() -> None:
    cfg = refresh_grant("vault")
    assert cfg.refresh_token is not None
    store = StoringBackend({cfg.refresh_token.location: "rt-1"})
    clock, cache, minter = world(store, "vault")
    endpoint = ScriptedEndpoint([bearer("at-1", 100, refresh_token="rt-2"), bearer("at-2", 100)])
    await minter.token(cfg, cache, endpoint)
    assert store.writes == [(cfg.refresh_token.location, "rt-2")]
    clock.advance(95)
    await minter.token(cfg, cache, endpoint)
    assert [form["refresh_token"] for _, form, _ in endpoint.posts] == ["rt-1", "rt-2"]
    assert minter.grants == {"refresh_token": 2}


@pytest.mark.parametrize("scheme, fail", [
    pytest.param("file", False, id="read-only backend"),
    pytest.param("vault", True, id="the write fails"),
])
async def test_a_rotated_refresh_token_egress_cannot_store_is_kept_in_memory(
        scheme: str, fail: bool, caplog: pytest.LogCaptureFixture) -> None:
    cfg = refresh_grant(scheme)
    assert cfg.refresh_token is not None
    location = cfg.refresh_token.location
    backend = (StoringBackend({location: "rt-1"}, fail=True) if fail
               else FakeSecretBackend({location: "rt-1"}))
    clock, cache, minter = world(backend, scheme)
    endpoint = ScriptedEndpoint([bearer("at-1", 100, refresh_token="rt-2"),
                                 bearer("at-2", 100, refresh_token="rt-3"),
                                 bearer("at-3", 100)])
    with caplog.at_level(logging.WARNING, logger="egress.credentials.oauth2"):
        await minter.token(cfg, cache, endpoint)
    assert "kept in memory only" in caplog.text or "keeps it in memory only" in caplog.text
    assert "rt-2" not in caplog.text  # the log names the reference, never the token
    assert any(v.reveal() == "rt-2" for v in minter.known_values())  # spotted if it leaks
    clock.advance(95)
    await minter.token(cfg, cache, endpoint)  # presents the rotated one, not the stale store
    # The operator stores a new refresh token: it wins over the one kept in memory.
    backend.values[location] = "rt-operator"
    clock.advance(95)
    await minter.token(cfg, cache, endpoint)
    assert [form["refresh_token"] for _, form, _ in endpoint.posts] == [
        "rt-1", "rt-2", "rt-operator"]
