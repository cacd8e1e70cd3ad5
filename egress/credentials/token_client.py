"""egress's own HTTPS client for OAuth 2.0 token endpoints, behind the network guard.

The token endpoint is egress's traffic, not a skill's: no allow rule names it, but it is
vetted like any destination. Every connection resolves its host through `vet` (the address
guard in egress/ops/runtime.py: private, loopback, metadata addresses refused unless
`settings.networks.allow` opens them; the connection goes to the one vetted address) and
verifies the server's certificate for the host name against the system CAs plus
`settings.upstream_ca`. It never uses HTTP(S)_PROXY, never follows redirects, and reads at
most 64 KiB of an answer. aiohttp is imported here only.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from egress.errors import SecretError, SecretMisconfigured, SecretUnavailable

__all__ = ["GuardedTokenEndpoint"]

MAX_ANSWER = 64 * 1024
TIMEOUT = 10.0

Vet = Callable[[str, int], Awaitable[str]]  # host, port -> the address to dial, or raises


class _VettingResolver(AbstractResolver):
    """aiohttp's resolver, answered by the address guard: one vetted address per name."""

    def __init__(self, vet: Vet) -> None:
        self._vet = vet

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        ip = await self._vet(host, port)
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        return [{"hostname": host, "host": ip, "port": port, "family": fam, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        return None


class GuardedTokenEndpoint:
    """`TokenEndpoint` (egress/credentials/oauth2.py) over aiohttp. No I/O until used."""

    def __init__(self, vet: Vet, *, upstream_ca: str | None = None,
                 timeout: float = TIMEOUT) -> None:
        self._vet = vet
        self._upstream_ca = upstream_ca
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def post_form(self, url: str, form: Mapping[str, str], *,
                        basic: tuple[str, str]) -> tuple[int, Any]:
        where = f"oauth2 token endpoint {url}"
        try:
            async with self._get_session().post(
                    url, data=dict(form), auth=aiohttp.BasicAuth(*basic),
                    headers={"Accept": "application/json"}, allow_redirects=False) as resp:
                status, raw = resp.status, bytearray()
                while len(raw) <= MAX_ANSWER:
                    chunk = await resp.content.read(MAX_ANSWER + 1 - len(raw))
                    if not chunk:
                        break
                    raw += chunk
        except SecretError:
            raise
        except TimeoutError as exc:
            raise SecretUnavailable(f"{where} did not answer within {self._timeout:g}s") from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            raise SecretUnavailable(f"{where}: its TLS certificate did not verify") from exc
        except aiohttp.ClientConnectionError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, SecretError):
                raise cause from exc  # the guard refused the address
            raise SecretUnavailable(f"{where}: cannot connect") from exc
        except aiohttp.ClientError as exc:
            raise SecretUnavailable(f"{where}: request failed ({type(exc).__name__})") from exc
        if len(raw) > MAX_ANSWER:
            raise SecretUnavailable(f"{where} sent an oversized answer")
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            ctx = ssl.create_default_context()
            if self._upstream_ca:
                try:
                    ctx.load_verify_locations(cafile=self._upstream_ca)
                except (OSError, ssl.SSLError) as exc:
                    raise SecretMisconfigured(
                        f"settings.upstream_ca {self._upstream_ca}: cannot load it") from exc
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx, resolver=_VettingResolver(self._vet),
                                               use_dns_cache=False),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
