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

from egress.errors import SecretMisconfigured, SecretNotFound, SecretUnavailable
from egress.policy.secret_refs import SETTINGS_KEY, SecretRef
from egress.policy.secret_settings import CacheSettings, SecretSettings
from egress.secrets.base import Secret, SecretBackend, SecretInfo
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

    def peek(self, ref: SecretRef) -> Secret | None:
        """The last value fetched for ``ref`` (fresh or not), without asking the backend."""
        entry = self._entries.get(ref)
        return entry.secret if entry is not None else None

    async def describe(self, ref: SecretRef) -> SecretInfo:
        """What the backend says about ``ref`` (version, change time); never cached."""
        backend = self._backend(ref)
        describe = getattr(backend, "describe", None)
        if describe is None:
            return SecretInfo(note=f"the {ref.scheme} backend cannot describe secrets")
        try:
            info: SecretInfo = await describe(ref)
        except (SecretNotFound, SecretUnavailable):
            raise
        except Exception as exc:  # a backend broke its contract: the type only, never text
            raise SecretUnavailable(
                f"{ref}: the {ref.scheme} backend failed ({type(exc).__name__})") from exc
        return info

    def writable(self, ref: SecretRef) -> bool:
        """Whether egress can store a new value at ``ref`` (Vault/OpenBao KV v2)."""
        return getattr(self._backends.get(ref.scheme), "write", None) is not None

    async def write(self, ref: SecretRef, value: Secret) -> None:
        """Store ``value`` at ``ref`` in its backend, then serve it from the cache (a rotated
        OAuth refresh token). Raises SecretMisconfigured where the backend cannot write."""
        write = getattr(self._backend(ref), "write", None)
        if write is None:
            raise SecretMisconfigured(f"{ref}: the {ref.scheme} backend cannot store values")
        await write(ref, value)
        now = self._clock()
        self._entries[ref] = _Entry(value, now, now + self._ttl())

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

    def _backend(self, ref: SecretRef) -> SecretBackend:
        backend = self._backends.get(ref.scheme)
        if backend is None:
            key = SETTINGS_KEY.get(ref.scheme, ref.scheme)
            raise SecretMisconfigured(
                f"{ref}: no {ref.scheme} backend is configured; add settings.secrets.{key}"
            )
        return backend

    def _ttl(self) -> float:
        s = self._settings
        return s.ttl * (1 + s.jitter * (2 * self._rand() - 1))

    async def _refresh(self, ref: SecretRef) -> _Entry:
        try:
            backend = self._backend(ref)
        except SecretMisconfigured:
            self.stats.failures += 1
            raise
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
        entry = _Entry(secret, now, now + self._ttl())
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
    """A secret cache with env and file backends, and a Vault, 1Password Connect and Doppler
    backend for each that the settings name (aiohttp is imported only then)."""
    backends: dict[str, SecretBackend] = {"env": EnvBackend(environ), "file": FileBackend()}
    if settings.vault is not None:
        from egress.secrets.vault import VaultBackend

        backends["vault"] = VaultBackend(settings.vault, environ=environ)
    if settings.onepassword is not None:
        from egress.secrets.onepassword import OnePasswordBackend

        backends["op"] = OnePasswordBackend(settings.onepassword, environ=environ)
    if settings.doppler is not None:
        from egress.secrets.doppler import DopplerBackend

        backends["doppler"] = DopplerBackend(settings.doppler, environ=environ)
    return SecretCache(backends, settings.cache)
