"""OAuth 2.0 access tokens egress mints for a skill: client credentials or the refresh grant.

`TokenMinter.token(cfg, secrets, endpoint)` returns an access token for an `oauth2:`
credential (egress/policy/shapes.py):

* **cached** until shortly before `expires_in` runs out (10% of it, at most 60 s), so a
  request never leaves with a token about to expire;
* **single flight**: when it must be minted, one request goes to the token endpoint and every
  caller waiting meanwhile gets its answer (a rotating refresh token is never presented
  twice by this process);
* **client authentication** by HTTP Basic (RFC 6749 2.3.1: client id and secret
  form-urlencoded, then base64), which every server must support;
* a **rotated refresh token** (the refresh grant's answer names a new one) is written back
  to the secret manager when it can store values (Vault/OpenBao), so a restart finds it; where
  it cannot (env:, file:, op://, doppler:) or the write fails, egress keeps it in memory and
  logs that a restart will present the old one. A new value stored by the operator wins.

The token endpoint is egress's own traffic: `TokenEndpoint` (egress/credentials/
token_client.py) vets its address with the network guard and verifies its TLS certificate;
no skill rule is needed for it. Failures raise SecretUnavailable (endpoint down, 5xx, not a
token answer) or SecretForbidden (invalid_client, invalid_grant, unauthorized_client), with
the endpoint and the OAuth error code, never a secret or the server's description.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol
from urllib.parse import quote_plus

from egress.errors import SecretError, SecretForbidden, SecretUnavailable
from egress.policy.secret_refs import SecretRef
from egress.policy.shapes import OAuth2
from egress.secrets import Secret, SecretCache

__all__ = ["MintedToken", "TokenEndpoint", "TokenMinter"]

log = logging.getLogger("egress.credentials.oauth2")

DEFAULT_EXPIRES_IN = 300.0  # a server that does not say: assume five minutes
MAX_MARGIN = 60.0  # refresh at most this long before expiry
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")
_REFUSALS = frozenset({"invalid_client", "invalid_grant", "unauthorized_client",
                       "invalid_scope"})


class TokenEndpoint(Protocol):
    """POSTs a form to a token endpoint: (status, parsed JSON or None). Raises
    SecretUnavailable when the endpoint cannot be reached (or its address is refused)."""

    async def post_form(self, url: str, form: Mapping[str, str], *,
                        basic: tuple[str, str]) -> tuple[int, Any]: ...


@dataclass(frozen=True)
class MintedToken:
    token: Secret
    expires_at: float  # monotonic; refreshed before this
    minted_at: float


@dataclass(frozen=True)
class _Rotated:
    stored: Secret  # the refresh token the backend held when the server rotated it
    current: Secret  # the one the server handed out instead (to present next)


class TokenMinter:
    """Mints, caches and refreshes access tokens, keyed by the credential's oauth2 settings.

    `grants` counts tokens minted per grant type (metrics, tests); `clock` is monotonic."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[OAuth2, MintedToken] = {}
        self._inflight: dict[OAuth2, asyncio.Task[MintedToken]] = {}
        self._rotated: dict[SecretRef, _Rotated] = {}
        self.grants: dict[str, int] = {}

    def cached(self, cfg: OAuth2) -> MintedToken | None:
        minted = self._tokens.get(cfg)
        if minted is not None and self._clock() < minted.expires_at:
            return minted
        return None

    async def token(self, cfg: OAuth2, secrets: SecretCache,
                    endpoint: TokenEndpoint | None) -> MintedToken:
        """A token that is good for a while yet; mints one (once) when needed."""
        minted = self.cached(cfg)
        if minted is not None:
            return minted
        if endpoint is None:
            raise SecretUnavailable(f"oauth2 {cfg.token_url}: no token endpoint client")
        task = self._inflight.get(cfg)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._mint(cfg, secrets, endpoint))
            self._inflight[cfg] = task
            task.add_done_callback(partial(self._settle, cfg))
        return await asyncio.shield(task)

    def invalidate(self, cfg: OAuth2, token: Secret) -> None:
        """The resource server refused `token` (401): mint a new one next time."""
        minted = self._tokens.get(cfg)
        if minted is not None and minted.token == token:
            del self._tokens[cfg]

    def known_values(self) -> list[Secret]:
        """Tokens minted so far and rotated refresh tokens (to spot them where they must
        not go)."""
        return [m.token for m in self._tokens.values()] + [
            r.current for r in self._rotated.values()]

    async def _mint(self, cfg: OAuth2, secrets: SecretCache,
                    endpoint: TokenEndpoint) -> MintedToken:
        client_id = (await secrets.get(cfg.client_id)).secret.reveal()
        client_secret = (await secrets.get(cfg.client_secret)).secret.reveal()
        form = {"grant_type": cfg.grant}
        presented: Secret | None = None
        if cfg.refresh_token is not None:
            presented = await self._refresh_token(cfg.refresh_token, secrets)
            form["refresh_token"] = presented.reveal()
        if cfg.scope:
            form["scope"] = cfg.scope
        started = self._clock()
        where = f"oauth2 token endpoint {cfg.token_url}"
        status, body = await endpoint.post_form(
            cfg.token_url, form, basic=(quote_plus(client_id), quote_plus(client_secret)))
        if status != 200 or not isinstance(body, dict):
            code = body.get("error") if isinstance(body, dict) else None
            code = code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else None
            what = f"{where} answered HTTP {status}" + (f" ({code})" if code else "")
            if code in _REFUSALS or status in (401, 403):
                raise SecretForbidden(what)
            raise SecretUnavailable(what)
        token = body.get("access_token")
        kind = body.get("token_type")
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n\0 "):
            raise SecretUnavailable(f"{where} sent no usable access_token")
        if not isinstance(kind, str) or kind.lower() != "bearer":
            raise SecretUnavailable(f"{where} sent a token_type other than Bearer")
        expires_in = body.get("expires_in")
        lifetime = (float(expires_in) if isinstance(expires_in, (int, float))
                    and not isinstance(expires_in, bool) and expires_in > 0
                    else DEFAULT_EXPIRES_IN)
        margin = min(MAX_MARGIN, lifetime * 0.1)
        minted = MintedToken(Secret(token), started + lifetime - margin, started)
        self._tokens[cfg] = minted
        self.grants[cfg.grant] = self.grants.get(cfg.grant, 0) + 1
        rotated = body.get("refresh_token")
        if (cfg.refresh_token is not None and presented is not None
                and isinstance(rotated, str) and rotated and rotated != presented.reveal()):
            await self._keep_rotated(cfg.refresh_token, presented, Secret(rotated), secrets)
        return minted

    async def _refresh_token(self, ref: SecretRef, secrets: SecretCache) -> Secret:
        """The refresh token to present: the stored one, or the one the server rotated it to
        while the store still holds the old one."""
        stored = (await secrets.get(ref)).secret
        rotated = self._rotated.get(ref)
        if rotated is None:
            return stored
        if stored == rotated.stored:
            return rotated.current
        del self._rotated[ref]  # someone stored a new one since: it wins
        return stored

    async def _keep_rotated(self, ref: SecretRef, presented: Secret, new: Secret,
                            secrets: SecretCache) -> None:
        stored = secrets.peek(ref) or presented
        if secrets.writable(ref):
            try:
                await secrets.write(ref, new)
            except SecretError as exc:
                log.error("oauth2: the server rotated the refresh token of %s but storing it "
                          "failed (%s: %s); egress keeps it in memory only: after a restart "
                          "the old one is presented and refused", ref, type(exc).__name__, exc)
            else:
                self._rotated.pop(ref, None)
                log.info("oauth2: stored the rotated refresh token at %s", ref)
                return
        else:
            log.warning("oauth2: the server rotated the refresh token of %s, which egress "
                        "cannot store (%s: references are read-only); it is kept in memory "
                        "only: store it in Vault/OpenBao to survive a restart", ref, ref.scheme)
        self._rotated[ref] = _Rotated(stored, new)

    def _settle(self, cfg: OAuth2, task: asyncio.Task[MintedToken]) -> None:
        if self._inflight.get(cfg) is task:
            del self._inflight[cfg]
        if not task.cancelled():
            with contextlib.suppress(BaseException):
                task.exception()
