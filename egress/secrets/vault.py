"""``vault:MOUNT/PATH#FIELD`` from OpenBao or HashiCorp Vault (KV version 2) over aiohttp.

Auth, in the order the settings allow exactly one of:
- token from an environment variable, or from a file (re-read when Vault answers 403, so an
  operator or agent rotating the file is picked up without a restart);
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

from egress.errors import SecretError, SecretNotFound, SecretUnavailable
from egress.secrets.base import Secret, SecretRef
from egress.secrets.config import VaultSettings

__all__ = ["VaultBackend"]

log = logging.getLogger("egress.secrets.vault")

_MAX_BODY = 1024 * 1024  # Vault answers are small; a larger one is not a Vault answer.
_HEALTHY = frozenset({200, 429, 473})  # active, standby, performance standby
_MIN_RENEW_DELAY = 0.5  # never spin: at most two renewal attempts a second


@dataclass(frozen=True)
class _Lease:
    """The token in use and what Vault told us about its lifetime."""

    token: Secret
    ttl: float  # seconds from `obtained`; 0 means it does not expire (or we could not tell)
    renewable: bool
    obtained: float  # time.monotonic() when ttl was read

    def expires_at(self) -> float:
        return self.obtained + self.ttl if self.ttl > 0 else float("inf")


class VaultBackend:
    """SecretBackend for ``vault:`` references. Constructing it does no I/O.

    ``logins`` and ``renewals`` count successful authentications and token renewals (for
    metrics and tests). ``write`` stores one field; ``ping`` checks ``sys/health``.
    """

    def __init__(self, settings: VaultSettings, *, environ: Mapping[str, str] | None = None) -> None:
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

    # -- SecretBackend -------------------------------------------------------------------

    async def fetch(self, ref: SecretRef) -> Secret:
        if ref.scheme != "vault":
            raise SecretUnavailable(f"{ref}: the vault backend cannot read {ref.scheme}: references")
        status, body = await self._authorized("GET", _data_path(ref), ref, capability="read")
        if status == 200:
            return _field(ref, _kv_data(ref, body))
        if status == 404:
            raise SecretNotFound(f"{ref}: {_why_missing(body)}")
        raise self._unavailable(ref, status)

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

    # -- extras ----------------------------------------------------------------------------

    async def write(self, ref: SecretRef, value: str | Secret) -> None:
        """Set one field of a KV v2 secret, keeping its other fields.

        Reads the current version first and writes with check-and-set on that version, so
        a concurrent writer makes this fail (SecretUnavailable, "try again") instead of
        silently losing their change. The token needs read and create/update on the path.
        """
        if ref.scheme != "vault" or ref.field is None:
            raise SecretUnavailable(f"{ref}: write needs a vault:MOUNT/PATH#FIELD reference")
        text = value.reveal() if isinstance(value, Secret) else value
        status, body = await self._authorized("GET", _data_path(ref), ref, capability="read")
        fields: dict[str, Any] = {}
        if status == 200:
            data = _kv_data(ref, body)
            if isinstance(data.get("data"), dict):
                fields = data["data"]
            version = _version(data)
        elif status == 404:
            # Nothing there, or the current version is deleted/destroyed: start afresh, but
            # check-and-set against that version number all the same.
            data = body.get("data") if isinstance(body, dict) else None
            version = _version(data) if isinstance(data, dict) else 0
        else:
            raise self._unavailable(ref, status)
        payload = {"options": {"cas": version}, "data": {**fields, ref.field: text}}
        status, body = await self._authorized(
            "POST", _data_path(ref), ref, capability="update", json_body=payload
        )
        if status in (200, 204):
            return
        if status == 400 and "check-and-set" in json.dumps(body):
            raise SecretUnavailable(f"{ref}: changed by someone else during the write; try again")
        raise self._unavailable(ref, status, action="write")

    async def ping(self) -> bool:
        """True when ``sys/health`` says the server is unsealed and serving. Never raises."""
        try:
            status, _ = await self._http("GET", "sys/health", None, what="vault health check")
        except SecretError:
            return False
        return status in _HEALTHY

    # -- requests --------------------------------------------------------------------------

    async def _authorized(
        self,
        method: str,
        path: str,
        ref: SecretRef,
        *,
        capability: str,
        json_body: object = None,
    ) -> tuple[int, Any]:
        """One request with the current token; on 403, re-authenticate once and retry."""
        lease = await self._current_lease()
        status, body = await self._http(method, path, lease.token, what=str(ref), json_body=json_body)
        if status != 403:
            return status, body
        fresh = await self._reauthenticate(lease)
        if fresh is not None:
            status, body = await self._http(method, path, fresh.token, what=str(ref), json_body=json_body)
        if status == 403:
            raise SecretUnavailable(
                f"{ref}: vault refused access (403): the token may be expired or revoked, "
                f"or its policy does not allow {capability} on {path}"
            )
        return status, body

    async def _http(
        self,
        method: str,
        path: str,
        token: Secret | None,
        *,
        what: str,
        json_body: object = None,
    ) -> tuple[int, Any]:
        """Send one request; return (status, parsed JSON or None). Transport errors -> Unavailable."""
        if self._closed:
            raise SecretUnavailable(f"{what}: the vault backend is closed")
        session = self._get_session(what)
        headers = {}
        if token is not None:
            headers["X-Vault-Token"] = token.reveal()
        if self._settings.namespace:
            headers["X-Vault-Namespace"] = self._settings.namespace
        url = yarl.URL(self._base + path, encoded=True)
        addr = self._settings.addr
        try:
            async with session.request(
                method, url, headers=headers, json=json_body, allow_redirects=False
            ) as resp:
                raw = await resp.content.read(_MAX_BODY + 1)
                status = resp.status
        except TimeoutError as exc:
            raise SecretUnavailable(
                f"{what}: vault at {addr} did not answer within {self._settings.timeout:g}s"
            ) from exc
        except aiohttp.ClientConnectionError as exc:
            raise SecretUnavailable(f"{what}: cannot connect to vault at {addr}") from exc
        except aiohttp.ClientError as exc:
            raise SecretUnavailable(f"{what}: request to vault at {addr} failed ({type(exc).__name__})") from exc
        if len(raw) > _MAX_BODY:
            raise SecretUnavailable(f"{what}: vault at {addr} sent an oversized answer")
        if not raw:
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError:
            # A proxy's HTML error page, say. Callers treat a None body as "not Vault".
            return status, None

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
                trust_env=False,  # egress is the proxy: never route Vault calls via HTTP(S)_PROXY
            )
        return self._session

    def _unavailable(self, ref: SecretRef, status: int, *, action: str = "read") -> SecretUnavailable:
        hint = " (sealed or in maintenance)" if status == 503 else ""
        return SecretUnavailable(f"{ref}: vault {action} failed with HTTP {status}{hint}")

    # -- authentication --------------------------------------------------------------------

    async def _current_lease(self) -> _Lease:
        lease = self._lease
        if lease is not None:
            return lease
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
        else:
            lease = await self._describe(self._static_token())
        self.logins += 1
        log.info(
            "vault: authenticated to %s (%s, ttl %ss, renewable %s)",
            s.addr, self._auth_kind(), f"{lease.ttl:g}" if lease.ttl else "none", lease.renewable,
        )
        return lease

    def _auth_kind(self) -> str:
        s = self._settings
        if s.approle_role_id is not None:
            return f"approle at auth/{s.approle_mount}"
        if s.token_file is not None:
            return f"token from file {s.token_file}"
        return f"token from environment variable {s.token_env}"

    def _static_token(self) -> Secret:
        s = self._settings
        if s.token_file is not None:
            text = _read_credential_file(s.token_file, "vault.auth.token_file")
            return Secret(text)
        if s.token_env is None:
            raise SecretUnavailable("vault.auth: no token_env, token_file or approle configured")
        value = self._environ.get(s.token_env, "").strip()
        if not value:
            raise SecretUnavailable(f"vault.auth.token_env: environment variable {s.token_env} is not set")
        return Secret(value)

    async def _describe(self, token: Secret) -> _Lease:
        """Learn a static token's TTL so it can be renewed. Best effort: a token without the
        lookup-self capability still works, it just is not renewed."""
        now = time.monotonic()
        status, body = await self._http("GET", "auth/token/lookup-self", token, what="vault token lookup")
        data = body.get("data") if status == 200 and isinstance(body, dict) else None
        if not isinstance(data, dict):
            return _Lease(token, 0.0, False, now)
        return _Lease(token, _seconds(data.get("ttl")), data.get("renewable") is True, now)

    async def _approle_login(self) -> _Lease:
        s = self._settings
        assert s.approle_role_id is not None and s.approle_secret_id_file is not None
        secret_id = _read_credential_file(s.approle_secret_id_file, "vault.auth.approle.secret_id_file")
        now = time.monotonic()
        status, body = await self._http(
            "POST",
            f"auth/{s.approle_mount}/login",
            None,
            what="vault approle login",
            json_body={"role_id": s.approle_role_id, "secret_id": secret_id},
        )
        if status in (400, 403):
            raise SecretUnavailable(
                f"vault approle login refused (HTTP {status}): check role_id and the secret_id "
                f"in {s.approle_secret_id_file}"
            )
        auth = body.get("auth") if status == 200 and isinstance(body, dict) else None
        if not isinstance(auth, dict) or not isinstance(auth.get("client_token"), str):
            raise SecretUnavailable(f"vault approle login failed with HTTP {status}")
        return _Lease(Secret(auth["client_token"]), _seconds(auth.get("lease_duration")),
                      auth.get("renewable") is True, now)

    # -- renewal ---------------------------------------------------------------------------

    def _ensure_renewer(self) -> None:
        if self._closed or (self._renewer is not None and not self._renewer.done()):
            return
        self._renewer = asyncio.get_running_loop().create_task(
            self._renew_loop(), name="egress-vault-token-renewal"
        )

    async def _renew_loop(self) -> None:
        """Keep the token alive: renew (or, for AppRole, log in again) at 2/3 of its TTL.

        Ends when the token does not expire, cannot be renewed and cannot be replaced, or
        has expired; the 403 path in requests then takes over.
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
                remaining = lease.expires_at() - time.monotonic()
                log.warning("vault: token renewal failed: %s", exc)
                if remaining <= 0:
                    return
                retry_at = time.monotonic() + min(5.0, remaining / 3)

    async def _refreshed(self, lease: _Lease, approle: bool) -> _Lease:
        if lease.renewable:
            now = time.monotonic()
            status, body = await self._http("POST", "auth/token/renew-self", lease.token,
                                            what="vault token renewal", json_body={})
            auth = body.get("auth") if status == 200 and isinstance(body, dict) else None
            if isinstance(auth, dict):
                ttl = _seconds(auth.get("lease_duration"))
                # A renewal cut short by the token's max TTL: an AppRole token is better
                # replaced now than renewed into expiry.
                if not (approle and ttl < lease.ttl / 2):
                    self.renewals += 1
                    return _Lease(lease.token, ttl, auth.get("renewable") is True, now)
            elif not approle:
                raise SecretUnavailable(f"vault token renewal failed with HTTP {status}")
        if approle:
            fresh = await self._authenticate()
            return fresh
        raise SecretUnavailable("vault token is not renewable")


def _data_path(ref: SecretRef) -> str:
    segments = ref.path.split("/")
    return "/".join([quote(ref.mount, safe=""), "data", *(quote(s, safe="") for s in segments)])


def _kv_data(ref: SecretRef, body: Any) -> dict[str, Any]:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise SecretUnavailable(f"{ref}: vault's answer is not a KV version 2 read; is {ref.mount}/ a KV v2 mount?")
    meta = data.get("metadata")
    if isinstance(meta, dict) and (meta.get("destroyed") is True or meta.get("deletion_time")):
        raise SecretNotFound(f"{ref}: {_why_missing(body)}")
    return data


def _field(ref: SecretRef, data: dict[str, Any]) -> Secret:
    fields = data.get("data")
    if not isinstance(fields, dict):
        raise SecretNotFound(f"{ref}: no secret data at {ref.location}")
    if ref.field not in fields:
        raise SecretNotFound(f"{ref}: no field {ref.field!r} at {ref.location}")
    value = fields[ref.field]
    if not isinstance(value, str):
        raise SecretNotFound(f"{ref}: field {ref.field!r} is not a string")
    if value == "":
        raise SecretNotFound(f"{ref}: field {ref.field!r} is empty")
    return Secret(value)


def _why_missing(body: Any) -> str:
    data = body.get("data") if isinstance(body, dict) else None
    meta = data.get("metadata") if isinstance(data, dict) else None
    if isinstance(meta, dict):
        if meta.get("destroyed") is True:
            return f"version {meta.get('version')} is destroyed"
        if meta.get("deletion_time"):
            return f"version {meta.get('version')} is deleted"
    return "no secret at this path"


def _version(data: dict[str, Any]) -> int:
    meta = data.get("metadata")
    version = meta.get("version") if isinstance(meta, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else 0


def _seconds(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw < 0:
        return 0.0
    return float(raw)


def _read_credential_file(path: str, setting: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(_MAX_BODY).strip()
    except FileNotFoundError as exc:
        raise SecretUnavailable(f"{setting}: no such file {path}") from exc
    except PermissionError as exc:
        raise SecretUnavailable(f"{setting}: permission denied reading {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretUnavailable(f"{setting}: cannot read {path} ({type(exc).__name__})") from exc
    if not text:
        raise SecretUnavailable(f"{setting}: {path} is empty")
    return text
