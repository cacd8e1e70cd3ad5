"""What the HTTP secret backends (1Password Connect, Doppler) share: one JSON GET, a token.

`JsonClient.get` sends one request to the backend's own address (never through a proxy:
egress *is* the proxy), reads a bounded answer and turns every aiohttp error into
SecretUnavailable naming the backend and its address, never a token or a value.
`read_token` reads the backend's token from the variable or file its settings name.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
import yarl

from egress.errors import SecretMisconfigured, SecretUnavailable
from egress.secrets.base import Secret
from egress.secrets.local import read_secret_text

__all__ = ["JsonClient", "read_token"]

MAX_BODY = 1024 * 1024  # secret manager answers are small; a larger one is not an answer


def read_token(token_env: str | None, token_file: str | None,
               environ: Mapping[str, str] | None, where: str) -> Secret:
    """The backend's token: from the environment variable or the file its settings name."""
    if token_file is not None:
        token = read_secret_text(token_file, f"{where}.token_file {token_file}",
                                 missing=SecretMisconfigured).strip()
        if not token:
            raise SecretMisconfigured(f"{where}.token_file {token_file}: the file is empty")
        return Secret(token)
    env = os.environ if environ is None else environ
    token = env.get(token_env or "", "").strip()
    if not token:
        raise SecretMisconfigured(f"{where}.token_env: environment variable {token_env} is "
                                  f"not set")
    return Secret(token)


class JsonClient:
    """GETs JSON from one base URL. Constructing it does no I/O; `close` ends the session."""

    def __init__(self, base_url: str, *, name: str, timeout: float,
                 ca_file: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = name  # "1Password Connect", "Doppler": for messages
        self._timeout = timeout
        self._ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def get(self, path: str, *, token: Secret | None, what: str,
                  query: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """(status, parsed JSON or None). Transport problems raise SecretUnavailable."""
        if self._closed:
            raise SecretUnavailable(f"{what}: the {self.name} backend is closed")
        url = yarl.URL(self.base_url + path)
        if query:
            url = url.with_query(dict(query))
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.reveal()}"
        where = f"{self.name} at {self.base_url}"
        try:
            async with self._get_session(what).get(url, headers=headers,
                                                   allow_redirects=False) as resp:
                status, raw = resp.status, bytearray()
                while len(raw) <= MAX_BODY:
                    chunk = await resp.content.read(MAX_BODY + 1 - len(raw))
                    if not chunk:
                        break
                    raw += chunk
        except TimeoutError as exc:
            raise SecretUnavailable(
                f"{what}: {where} did not answer within {self._timeout:g}s") from exc
        except aiohttp.ClientConnectionError as exc:
            raise SecretUnavailable(f"{what}: cannot connect to {where}") from exc
        except aiohttp.ClientError as exc:
            raise SecretUnavailable(
                f"{what}: request to {where} failed ({type(exc).__name__})") from exc
        if len(raw) > MAX_BODY:
            raise SecretUnavailable(f"{what}: {where} sent an oversized answer")
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, None

    def _get_session(self, what: str) -> aiohttp.ClientSession:
        if self._session is None:
            ctx: ssl.SSLContext | bool = True
            if self._ca_file:
                try:
                    ctx = ssl.create_default_context(cafile=self._ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise SecretMisconfigured(
                        f"{what}: cannot load the ca_file {self._ca_file}") from exc
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,  # egress is the proxy: its own calls never go through one
            )
        return self._session

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
