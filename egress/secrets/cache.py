"""SecretCache: the one place the request path gets secrets from. asyncio only.

For each SecretRef it keeps the last value fetched and serves it while it is fresh:

- **fresh** for ``ttl`` seconds, +/- ``jitter`` x ttl chosen at random per fetch, so that
  secrets fetched together do not all expire together. A secret rotated in the backend
  reaches requests once the cached value expires, without a restart.
- **single flight**: when a value has expired, the first caller starts one backend fetch
  and every caller that arrives meanwhile awaits that same fetch.
- **grace**: if that fetch raises SecretUnavailable and the last value was fetched less than
  ``grace`` seconds ago, the caller gets it with ``stale=True`` (the addon audits that).
  Otherwise SecretUnavailable propagates: fail closed, the request gets a 503.
- **not found is final**: SecretNotFound propagates and forgets the cached value; a secret
  someone deleted is never served from the cache.

Cancelling a caller never cancels the shared fetch (it is shielded); ``close`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

from egress.errors import SecretNotFound, SecretUnavailable
from egress.policy.secret_refs import SecretRef
from egress.policy.secret_settings import CacheSettings, SecretSettings
from egress.secrets.base import Secret, SecretBackend
from egress.secrets.local import EnvBackend, FileBackend

__all__ = ["CacheStats", "CachedSecret", "SecretCache", "build_secret_cache"]

log = logging.getLogger("egress.secrets")


@dataclass(frozen=True)
class CachedSecret:
    """A secret from the cache. ``stale``: served from the grace window, backend down."""

    secret: Secret
    stale: bool


@dataclass
class CacheStats:
    """Plain counters for metrics. ``fetches`` counts backend calls, ``failures`` those that
    raised; ``hits`` fresh values served from the cache; ``stale_uses`` grace-window values."""

    fetches: int = 0
    hits: int = 0
    stale_uses: int = 0
    failures: int = 0


@dataclass(frozen=True)
class _Entry:
    secret: Secret
    fetched_at: float
    expires_at: float


class SecretCache:
    """Caches secrets from several backends, keyed by reference scheme ("vault", "env", "file").

    ``clock`` (monotonic seconds) and ``rand`` (uniform in [0, 1)) are injectable so tests
    can move time and pin the jitter.
    """

    def __init__(
        self,
        backends: Mapping[str, SecretBackend],
        settings: CacheSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._backends = dict(backends)
        self._settings = settings
        self._clock = clock
        self._rand = rand
        self._entries: dict[SecretRef, _Entry] = {}
        self._inflight: dict[SecretRef, asyncio.Task[_Entry]] = {}
        self._closed = False
        self.stats = CacheStats()

    async def get(self, ref: SecretRef) -> CachedSecret:
        """The secret for ``ref``; raises SecretNotFound or SecretUnavailable (fail closed)."""
        if self._closed:
            raise SecretUnavailable(f"{ref}: the secret cache is closed")
        entry = self._entries.get(ref)
        if entry is not None and self._clock() < entry.expires_at:
            self.stats.hits += 1
            return CachedSecret(entry.secret, stale=False)
        task = self._inflight.get(ref)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._refresh(ref))
            self._inflight[ref] = task
            task.add_done_callback(partial(self._settle, ref))
        try:
            fresh = await asyncio.shield(task)
        except SecretUnavailable:
            last = self._entries.get(ref)
            if last is not None and self._clock() - last.fetched_at < self._settings.grace:
                self.stats.stale_uses += 1
                return CachedSecret(last.secret, stale=True)
            raise
        return CachedSecret(fresh.secret, stale=False)

    async def ping(self) -> bool:
        """Whether every remote backend answers its health check (local ones always do)."""
        for backend in self._backends.values():
            check = getattr(backend, "ping", None)
            if check is not None and not await check():
                return False
        return True

    async def close(self) -> None:
        """Cancel fetches in flight, drop cached values and close every backend once."""
        self._closed = True
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._entries.clear()
        closed: set[int] = set()
        for backend in self._backends.values():
            if id(backend) in closed:
                continue
            closed.add(id(backend))
            try:
                await backend.close()
            except Exception:  # closing is best effort; report it and go on with the rest
                log.exception("secrets: closing the %s backend failed", type(backend).__name__)

    async def _refresh(self, ref: SecretRef) -> _Entry:
        backend = self._backends.get(ref.scheme)
        if backend is None:
            self.stats.failures += 1
            raise SecretUnavailable(
                f"{ref}: no {ref.scheme} backend is configured; add settings.secrets.{ref.scheme}"
            )
        self.stats.fetches += 1
        try:
            secret = await backend.fetch(ref)
        except SecretNotFound:
            self.stats.failures += 1
            self._entries.pop(ref, None)
            raise
        except SecretUnavailable:
            self.stats.failures += 1
            raise
        except Exception as exc:
            # A backend broke its contract. Fail closed; name the type only, as the text
            # of an arbitrary exception could quote anything.
            self.stats.failures += 1
            raise SecretUnavailable(
                f"{ref}: the {ref.scheme} backend failed ({type(exc).__name__})"
            ) from exc
        now = self._clock()
        s = self._settings
        ttl = s.ttl * (1 + s.jitter * (2 * self._rand() - 1))
        entry = _Entry(secret, now, now + ttl)
        self._entries[ref] = entry
        return entry

    def _settle(self, ref: SecretRef, task: asyncio.Task[_Entry]) -> None:
        if self._inflight.get(ref) is task:
            del self._inflight[ref]
        if not task.cancelled():
            # Mark the exception retrieved: if every caller was cancelled, nobody else will.
            with contextlib.suppress(BaseException):
                task.exception()


def build_secret_cache(
    settings: SecretSettings, *, environ: Mapping[str, str] | None = None
) -> SecretCache:
    """A secret cache with env and file backends, and a Vault backend when settings name one."""
    backends: dict[str, SecretBackend] = {"env": EnvBackend(environ), "file": FileBackend()}
    if settings.vault is not None:
        from egress.secrets.vault import VaultBackend  # aiohttp: only when a vault is configured

        backends["vault"] = VaultBackend(settings.vault, environ=environ)
    return SecretCache(backends, settings.cache)
