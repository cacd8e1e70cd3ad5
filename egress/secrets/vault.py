"""``vault:MOUNT/PATH#FIELD`` from OpenBao or HashiCorp Vault (KV version 2) over aiohttp.

Auth is exactly one of:
- a token from an environment variable, or from a file (re-read when Vault answers 403, so
  an operator or Vault Agent rotating the file is picked up without a restart);
- AppRole login with a role_id and a secret_id read from a file at each login.

A background task renews the token (``auth/token/renew-self``) at two thirds of its TTL when
it is renewable; an AppRole token that can no longer be renewed is replaced by a new login.
Any 403 triggers one re-authentication and one retry.

Outcomes map onto the SecretBackend contract: 404, a deleted or destroyed current version,
a missing or empty field -> SecretNotFound; connection refused, timeout, 5xx (503: sealed),
a refused login or a second 403 -> SecretUnavailable. aiohttp and JSON errors are translated
here. Tokens and secret values appear in no message and no log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import yarl

from egress.errors import (
    SecretError,
    SecretForbidden,
    SecretMisconfigured,
    SecretNotFound,
    SecretUnavailable,
)
from egress.policy.secret_refs import SecretRef
from egress.policy.secret_settings import VaultSettings
from egress.secrets.base import Secret, SecretInfo, parse_rfc3339
from egress.secrets.local import read_secret_text

__all__ = ["VaultBackend"]

log = logging.getLogger("egress.secrets.vault")

_MAX_BODY = 1024 * 1024  # Vault answers are small; a larger one is not a Vault answer.
_HEALTHY = frozenset({200, 429, 473})  # active, standby, performance standby
_MIN_RENEW_DELAY = 0.5  # never spin: at most two renewal attempts a second


@dataclass(frozen=True)
class _Lease:
    """The token in use and what Vault told us about its lifetime."""

    token: Secret
    ttl: float  # seconds from `obtained`; 0: does not expire, or Vault did not tell us
    renewable: bool
    obtained: float  # time.monotonic() when ttl was read


class VaultBackend:
    """SecretBackend for ``vault:`` references. Constructing it does no I/O.

    ``logins`` and ``renewals`` count successful authentications and token renewals (for
    metrics and tests). ``write`` stores one field; ``ping`` checks ``sys/health``.
    """

    def __init__(
        self, settings: VaultSettings, *, environ: Mapping[str, str] | None = None
    ) -> None:
        self._settings = settings
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._base = settings.addr.rstrip("/") + "/v1/"
        self._session: aiohttp.ClientSession | None = None
        self._lease: _Lease | None = None
        self._auth_lock = asyncio.Lock()
        self._renewer: asyncio.Task[None] | None = None
        self._closed = False
        self.logins = 0
        self.renewals = 0

    async def fetch(self, ref: SecretRef) -> Secret:
        status, body = await self._authorized("GET", ref, capability="read")
        fields = _current_fields(ref, status, body)
        value = fields.get(ref.field or "")
        if value is None:
            raise SecretNotFound(f"{ref}: no field {ref.field!r} at {ref.location}")
        if not isinstance(value, str):
            raise SecretNotFound(f"{ref}: field {ref.field!r} is not a string")
        if not value:
            raise SecretNotFound(f"{ref}: field {ref.field!r} is empty")
        return Secret(value)

    async def describe(self, ref: SecretRef) -> SecretInfo:
        """Version and creation time of the current KV v2 version (the read answer's
        metadata: no capability beyond what fetching needs)."""
        status, body = await self._authorized("GET", ref, capability="read")
        _current_fields(ref, status, body)  # the same errors as a fetch
        meta = body["data"].get("metadata") if isinstance(body, dict) else None
        if not isinstance(meta, dict):
            return SecretInfo(note="no KV v2 metadata in the answer")
        return SecretInfo(version=str(meta.get("version")) if meta.get("version") else None,
                          changed_at=parse_rfc3339(meta.get("created_time")))

    async def write(self, ref: SecretRef, value: str | Secret) -> None:
        """Set one field of a KV v2 secret, keeping its other fields.

        Reads the current version first and writes with check-and-set on that version, so
        a concurrent writer makes this fail (SecretUnavailable, "try again") instead of
        losing their change. The token needs read and create/update on the path.
        """
        if ref.field is None:
            raise SecretUnavailable(f"{ref}: write needs a vault:MOUNT/PATH#FIELD reference")
        text = value.reveal() if isinstance(value, Secret) else value
        status, body = await self._authorized("GET", ref, capability="read")
        try:
            fields = _current_fields(ref, status, body)
        except SecretNotFound:
            fields = {}  # nothing there, or a deleted/destroyed version: start afresh
        data = body.get("data") if isinstance(body, dict) else None
        meta = data.get("metadata") if isinstance(data, dict) else None
        version = meta.get("version", 0) if isinstance(meta, dict) else 0
        payload = {"options": {"cas": version}, "data": {**fields, ref.field: text}}
        status, body = await self._authorized("POST", ref, capability="update", body=payload)
        if status == 400 and "check-and-set" in json.dumps(body):
            raise SecretUnavailable(f"{ref}: changed by someone else during the write; try again")
        if status not in (200, 204):
            raise SecretUnavailable(f"{ref}: vault write failed with HTTP {status}")

    async def ping(self) -> bool:
        """True when ``sys/health`` says the server is unsealed and serving. Never raises."""
        try:
            status, _ = await self._http("GET", "sys/health", None, what="vault health check")
        except SecretError:
            return False
        return status in _HEALTHY

    async def close(self) -> None:
        self._closed = True
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._lease = None

    # -- requests --------------------------------------------------------------------------

    async def _authorized(
        self, method: str, ref: SecretRef, *, capability: str, body: object = None
    ) -> tuple[int, Any]:
        """One KV v2 data request with the current token; on 403 re-authenticate, retry once."""
        if ref.scheme != "vault":
            raise SecretUnavailable(
                f"{ref}: the vault backend cannot read {ref.scheme}: references"
            )
        path = "/".join(quote(s, safe="") for s in [ref.mount, "data", *ref.path.split("/")])
        lease = await self._current_lease()
        status, answer = await self._http(method, path, lease.token, what=str(ref), body=body)
        if status == 403:
            fresh = await self._reauthenticate(lease)
            if fresh is not None:
                status, answer = await self._http(
                    method, path, fresh.token, what=str(ref), body=body
                )
        if status == 403:
            raise SecretForbidden(
                f"{ref}: vault refused access (403): the token may be expired or revoked, "
                f"or its policy does not allow {capability} on {path}"
            )
        return status, answer

    async def _http(
        self, method: str, path: str, token: Secret | None, *, what: str, body: object = None
    ) -> tuple[int, Any]:
        """One request to /v1/PATH: (status, JSON or None). Transport errors -> Unavailable."""
        if self._closed:
            raise SecretUnavailable(f"{what}: the vault backend is closed")
        session = self._get_session(what)
        headers = {"X-Vault-Token": token.reveal()} if token is not None else {}
        if self._settings.namespace:
            headers["X-Vault-Namespace"] = self._settings.namespace
        url = yarl.URL(self._base + path, encoded=True)
        addr = self._settings.addr
        try:
            async with session.request(
                method, url, headers=headers, json=body, allow_redirects=False
            ) as resp:
                status, raw = resp.status, bytearray()
                while len(raw) <= _MAX_BODY:  # bounded by size: read() may return less
                    chunk = await resp.content.read(_MAX_BODY + 1 - len(raw))
                    if not chunk:
                        break
                    raw += chunk
        except TimeoutError as exc:
            raise SecretUnavailable(
                f"{what}: vault at {addr} did not answer within {self._settings.timeout:g}s"
            ) from exc
        except aiohttp.ClientConnectionError as exc:
            raise SecretUnavailable(f"{what}: cannot connect to vault at {addr}") from exc
        except aiohttp.ClientError as exc:
            name = type(exc).__name__
            raise SecretUnavailable(f"{what}: request to vault at {addr} failed ({name})") from exc
        if len(raw) > _MAX_BODY:
            raise SecretUnavailable(f"{what}: vault at {addr} sent an oversized answer")
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, None  # a proxy's HTML error page, say: callers see "no body"

    def _get_session(self, what: str) -> aiohttp.ClientSession:
        if self._session is None:
            ssl_ctx: ssl.SSLContext | bool = True
            if self._settings.ca_file:
                try:
                    ssl_ctx = ssl.create_default_context(cafile=self._settings.ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise SecretUnavailable(
                        f"{what}: cannot load vault.ca_file {self._settings.ca_file}"
                    ) from exc
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_ctx),
                timeout=aiohttp.ClientTimeout(total=self._settings.timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,  # egress is the proxy: never send Vault calls via HTTP(S)_PROXY
            )
        return self._session

    # -- authentication --------------------------------------------------------------------

    async def _current_lease(self) -> _Lease:
        if self._lease is not None:
            return self._lease
        async with self._auth_lock:
            if self._lease is None:
                self._lease = await self._authenticate()
                self._ensure_renewer()
            return self._lease

    async def _reauthenticate(self, failed: _Lease) -> _Lease | None:
        """Replace a token Vault refused. None when a re-read gives the same token again."""
        async with self._auth_lock:
            if self._lease is not None and self._lease is not failed:
                return self._lease  # another caller already replaced it
            fresh = await self._authenticate()
            if self._settings.approle_role_id is None and fresh.token == failed.token:
                self._lease = failed
                return None
            self._lease = fresh
            self._ensure_renewer()
            return fresh

    async def _authenticate(self) -> _Lease:
        s = self._settings
        if s.approle_role_id is not None:
            lease = await self._approle_login()
        elif s.token_file is not None:
            where = f"vault.auth.token_file {s.token_file}"
            token = read_secret_text(s.token_file, where, missing=SecretMisconfigured).strip()
            if not token:
                raise SecretMisconfigured(f"{where}: the file is empty")
            lease = await self._describe(Secret(token))
        else:
            token = self._environ.get(s.token_env or "", "").strip()
            if not token:
                raise SecretMisconfigured(
                    f"vault.auth.token_env: environment variable {s.token_env} is not set"
                )
            lease = await self._describe(Secret(token))
        self.logins += 1
        ttl = f"{lease.ttl:g}s" if lease.ttl else "none"
        log.info("vault: authenticated to %s (ttl %s, renewable %s)", s.addr, ttl, lease.renewable)
        return lease

    async def _describe(self, token: Secret) -> _Lease:
        """Learn a static token's TTL so it can be renewed. Best effort: a token without the
        lookup-self capability still works, it just is not renewed."""
        now = time.monotonic()
        status, body = await self._http(
            "GET", "auth/token/lookup-self", token, what="vault token lookup"
        )
        data = body.get("data") if status == 200 and isinstance(body, dict) else None
        if not isinstance(data, dict):
            return _Lease(token, 0.0, False, now)
        return _Lease(token, _seconds(data.get("ttl")), data.get("renewable") is True, now)

    async def _approle_login(self) -> _Lease:
        s = self._settings
        assert s.approle_role_id is not None and s.approle_secret_id_file is not None
        where = f"vault.auth.approle.secret_id_file {s.approle_secret_id_file}"
        secret_id = read_secret_text(s.approle_secret_id_file, where, missing=SecretMisconfigured)
        now = time.monotonic()
        login = {"role_id": s.approle_role_id, "secret_id": secret_id.strip()}
        path = f"auth/{s.approle_mount}/login"
        status, body = await self._http("POST", path, None, what="vault approle login", body=login)
        if status in (400, 403):
            raise SecretForbidden(
                f"vault approle login refused (HTTP {status}): check role_id and the secret_id "
                f"in {s.approle_secret_id_file}"
            )
        auth = body.get("auth") if status == 200 and isinstance(body, dict) else None
        if not isinstance(auth, dict) or not isinstance(auth.get("client_token"), str):
            raise SecretUnavailable(f"vault approle login failed with HTTP {status}")
        ttl = _seconds(auth.get("lease_duration"))
        return _Lease(Secret(auth["client_token"]), ttl, auth.get("renewable") is True, now)

    # -- renewal ---------------------------------------------------------------------------

    def _ensure_renewer(self) -> None:
        if self._closed or (self._renewer is not None and not self._renewer.done()):
            return
        self._renewer = asyncio.get_running_loop().create_task(
            self._renew_loop(), name="egress-vault-token-renewal"
        )

    async def _renew_loop(self) -> None:
        """Keep the token alive: renew (or, for AppRole, log in again) at 2/3 of its TTL.

        Ends when the token does not expire, cannot be renewed or replaced, or has expired;
        the 403 path in requests takes over from there.
        """
        approle = self._settings.approle_role_id is not None
        retry_at: float | None = None
        while not self._closed:
            lease = self._lease
            if lease is None or lease.ttl <= 0 or not (lease.renewable or approle):
                return
            due = retry_at if retry_at is not None else lease.obtained + lease.ttl * 2 / 3
            await asyncio.sleep(max(_MIN_RENEW_DELAY, due - time.monotonic()))
            try:
                async with self._auth_lock:
                    if self._lease is lease:
                        self._lease = await self._refreshed(lease, approle)
                retry_at = None
            except SecretError as exc:
                log.warning("vault: token renewal failed: %s", exc)
                remaining = lease.obtained + lease.ttl - time.monotonic()
                if remaining <= 0:
                    return
                retry_at = time.monotonic() + min(5.0, remaining / 3)

    async def _refreshed(self, lease: _Lease, approle: bool) -> _Lease:
        """The lease renewed or, for AppRole, a new login when renewal fails or is cut short
        by the token's max TTL (better replaced now than renewed into expiry)."""
        if lease.renewable:
            now = time.monotonic()
            status, body = await self._http(
                "POST", "auth/token/renew-self", lease.token, what="vault token renewal", body={}
            )
            auth = body.get("auth") if status == 200 and isinstance(body, dict) else None
            ttl = _seconds(auth.get("lease_duration")) if isinstance(auth, dict) else 0.0
            if isinstance(auth, dict) and ttl > 0 and not (approle and ttl < lease.ttl / 2):
                self.renewals += 1
                return _Lease(lease.token, ttl, auth.get("renewable") is True, now)
        if approle:
            return await self._authenticate()
        raise SecretUnavailable("vault token renewal refused, or the token reached its max TTL")


def _current_fields(ref: SecretRef, status: int, body: Any) -> dict[str, Any]:
    """The fields of the current version from a KV v2 read answer, or the matching error."""
    data = body.get("data") if isinstance(body, dict) else None
    meta = data.get("metadata") if isinstance(data, dict) else None
    if isinstance(meta, dict) and meta.get("destroyed") is True:
        raise SecretNotFound(f"{ref}: version {meta.get('version')} is destroyed")
    if isinstance(meta, dict) and meta.get("deletion_time"):
        raise SecretNotFound(f"{ref}: version {meta.get('version')} is deleted")
    if status == 404:
        raise SecretNotFound(f"{ref}: no secret at this path")
    if status != 200:
        hint = " (sealed or in maintenance)" if status == 503 else ""
        raise SecretUnavailable(f"{ref}: vault read failed with HTTP {status}{hint}")
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        raise SecretUnavailable(f"{ref}: not a KV version 2 answer; is {ref.mount}/ a KV v2 mount?")
    fields: dict[str, Any] = data["data"]
    return fields


def _seconds(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw < 0:
        return 0.0
    return float(raw)
