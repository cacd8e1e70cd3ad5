"""``doppler:PROJECT/CONFIG#NAME`` (or ``doppler:NAME``) from Doppler's API (v3).

    GET {api_url}/v3/configs/config/secret?project=P&config=C&name=NAME
        Authorization: Bearer TOKEN   ->   {"name", "value": {"raw", "computed", ...}}

The value egress uses is ``computed`` (Doppler expands ``${OTHER}`` references in it), as
Doppler's CLI and integrations do. A service token is scoped to one config, so a reference
may leave project and config out (``doppler:NAME``); a personal token needs them.

Outcomes: 401 (token refused) and 403 (another config than the token's) -> SecretForbidden;
404 (no such project, config or secret) and an empty value -> SecretNotFound; 400 (a
personal token without project/config) -> SecretMisconfigured; connection errors,
timeouts, 5xx -> SecretUnavailable. Doppler's API says nothing about when a secret changed,
so ``describe`` reports no time. Tokens and values never appear in a message.
"""

from __future__ import annotations

from collections.abc import Mapping

from egress.errors import (
    SecretForbidden,
    SecretMisconfigured,
    SecretNotFound,
    SecretUnavailable,
)
from egress.policy.secret_refs import SecretRef
from egress.policy.secret_settings import DopplerSettings
from egress.secrets.base import Secret, SecretInfo
from egress.secrets.http import JsonClient, read_token

__all__ = ["DopplerBackend"]


class DopplerBackend:
    """SecretBackend for ``doppler:`` references. Constructing it does no I/O."""

    def __init__(self, settings: DopplerSettings, *,
                 environ: Mapping[str, str] | None = None) -> None:
        self._settings = settings
        self._environ = environ
        self._http = JsonClient(settings.api_url, name="Doppler", timeout=settings.timeout,
                                ca_file=settings.ca_file)

    async def fetch(self, ref: SecretRef) -> Secret:
        if ref.scheme != "doppler":
            raise SecretUnavailable(f"{ref}: the Doppler backend cannot read "
                                    f"{ref.scheme}: references")
        token = read_token(self._settings.token_env, self._settings.token_file, self._environ,
                           "settings.secrets.doppler")
        query = {"name": ref.field or ""}
        if ref.location:
            query["project"], query["config"] = ref.parts
        status, body = await self._http.get("/v3/configs/config/secret", token=token,
                                            what=str(ref), query=query)
        if status == 401:
            raise SecretForbidden(f"{ref}: Doppler refused the token (401)")
        if status == 403:
            raise SecretForbidden(f"{ref}: the token may not read this project/config (403)")
        if status == 404:
            raise SecretNotFound(f"{ref}: no such project, config or secret")
        if status == 400:
            raise SecretMisconfigured(
                f"{ref}: Doppler needs the project and config for this token (400): write "
                f"doppler:PROJECT/CONFIG#{ref.field}, or use a service token")
        if status != 200:
            raise SecretUnavailable(f"{ref}: Doppler answered HTTP {status}")
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, dict):
            raise SecretUnavailable(f"{ref}: not a Doppler secret answer")
        text = value.get("computed")
        if not isinstance(text, str):
            text = value.get("raw")
        if not isinstance(text, str) or not text:
            raise SecretNotFound(f"{ref}: the secret is empty")
        return Secret(text)

    async def describe(self, ref: SecretRef) -> SecretInfo:
        await self.fetch(ref)  # the same errors as a fetch
        return SecretInfo(note="Doppler's API has no change time for a secret")

    async def close(self) -> None:
        await self._http.close()
