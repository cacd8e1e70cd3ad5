"""Hostname resolution for the network guard: a Resolver protocol and a dnspython adapter.

``DnsResolver`` asks the configured nameservers (or the system's, from /etc/resolv.conf) for A
and AAAA records, keeps answers for their TTL clamped to ``[min_ttl, max_ttl]``, and keeps
failures (NXDOMAIN, SERVFAIL, no records, timeout) for ``min_ttl``. Concurrent lookups of one
name share one query (single-flight) and at most ``max_concurrency`` lookups run at once.
dnspython's exceptions become ``ResolveError(host, detail)`` here, with a short detail fit to
show the skill. /etc/hosts is not read: what egress dials is what DNS said.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from egress.errors import ResolveError
from egress.policy.hosts import IPAddress, parse_nameserver

__all__ = ["DnsResolver", "Resolver"]

log = logging.getLogger(__name__)


class Resolver(Protocol):
    """Turns a hostname into its addresses; raises ``ResolveError`` when DNS says no or nothing."""

    async def resolve(self, host: str) -> tuple[IPAddress, ...]: ...


@dataclass(frozen=True)
class _Entry:
    """A cached outcome: addresses, or the detail of a failure."""

    expires: float
    addresses: tuple[IPAddress, ...]
    failure: str | None

    def unwrap(self, host: str) -> tuple[IPAddress, ...]:
        if self.failure is not None:
            raise ResolveError(host, self.failure)  # a fresh exception each time
        return self.addresses


class DnsResolver:
    """A ``Resolver`` on dnspython with a TTL cache, single-flight and bounded concurrency.

    ``lookups`` (queries sent, one per name per cache miss), ``failures`` (lookups that ended
    in an error), ``cache_hits`` and ``coalesced`` (callers that joined a lookup already under
    way) are plain counters for metrics. Nothing is read or sent until the first ``resolve``.
    """

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        *,
        timeout: float = 3.0,
        min_ttl: int = 5,
        max_ttl: int = 300,
        max_concurrency: int = 64,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(nameservers, str):
            raise TypeError("nameservers is a sequence of strings, not one string")
        if timeout <= 0 or min_ttl < 0 or max_ttl < min_ttl or max_concurrency < 1 or max_entries < 1:
            raise ValueError("need timeout > 0, 0 <= min_ttl <= max_ttl, max_concurrency >= 1, max_entries >= 1")
        self._nameservers = tuple(parse_nameserver(ns) for ns in nameservers)
        self._timeout = float(timeout)
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._max_entries = max_entries
        self._clock = clock
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._dns: dns.asyncresolver.Resolver | None = None
        self._cache: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Task[_Entry]] = {}
        self.lookups = 0
        self.failures = 0
        self.cache_hits = 0
        self.coalesced = 0

    def __repr__(self) -> str:
        servers = ", ".join(f"{a}:{p}" for a, p in self._nameservers) or "system"
        return f"DnsResolver({servers}, timeout={self._timeout}s)"

    async def resolve(self, host: str) -> tuple[IPAddress, ...]:
        key = host.lower().rstrip(".")
        entry = self._cache.get(key)
        if entry is not None and entry.expires > self._clock():
            self.cache_hits += 1
            return entry.unwrap(host)
        task = self._inflight.get(key)
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            self.coalesced += 1
        else:
            task = asyncio.get_running_loop().create_task(self._lookup(key))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        # shield: one caller giving up must not cancel the lookup the others are waiting on.
        entry = await asyncio.shield(task)
        return entry.unwrap(host)

    def _forget(self, key: str, task: asyncio.Task[_Entry]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]

    async def _lookup(self, key: str) -> _Entry:
        async with self._semaphore:
            self.lookups += 1
            try:
                addresses, ttl = await self._query(key)
            except ResolveError as exc:
                entry = _Entry(self._clock() + self._min_ttl, (), exc.detail)
            else:
                ttl = min(max(ttl, self._min_ttl), self._max_ttl)
                entry = _Entry(self._clock() + ttl, addresses, None)
        if entry.failure is not None:
            self.failures += 1
        self._store(key, entry)
        return entry

    def _store(self, key: str, entry: _Entry) -> None:
        self._cache.pop(key, None)  # re-insert so dict order is age order
        self._cache[key] = entry
        if len(self._cache) > self._max_entries:
            now = self._clock()
            for stale in [k for k, e in self._cache.items() if e.expires <= now]:
                del self._cache[stale]
            while len(self._cache) > self._max_entries:
                del self._cache[next(iter(self._cache))]

    def _resolver(self, host: str) -> dns.asyncresolver.Resolver:
        if self._dns is None:
            try:
                resolver = dns.asyncresolver.Resolver(configure=not self._nameservers)
            except dns.resolver.NoResolverConfiguration as exc:
                raise ResolveError(host, "no nameservers configured") from exc
            if self._nameservers:
                resolver.nameservers = [dns.nameserver.Do53Nameserver(a, port=p) for a, p in self._nameservers]
            # Several tries within the lifetime, so one lost UDP packet is not a failure.
            resolver.timeout = self._timeout / 3
            resolver.lifetime = self._timeout
            resolver.cache = None
            resolver.retry_servfail = False
            self._dns = resolver
        return self._dns

    async def _query(self, host: str) -> tuple[tuple[IPAddress, ...], int]:
        """Ask for A and AAAA; any error in either fails the lookup (fail closed)."""
        try:
            name = dns.name.from_text(host)
        except dns.exception.DNSException as exc:
            raise ResolveError(host, "not a valid DNS name") from exc
        resolver = self._resolver(host)
        try:
            # dnspython bounds each query by its lifetime; this outer limit is a backstop.
            async with asyncio.timeout(self._timeout + 1.0):
                results = await asyncio.gather(
                    resolver.resolve(name, dns.rdatatype.A, raise_on_no_answer=False, search=False),
                    resolver.resolve(name, dns.rdatatype.AAAA, raise_on_no_answer=False, search=False),
                    return_exceptions=True,
                )
        except TimeoutError as exc:
            raise ResolveError(host, f"timed out after {self._timeout}s") from exc
        addresses: list[IPAddress] = []
        ttls: list[int] = []
        for result in results:
            if isinstance(result, BaseException):
                raise ResolveError(host, self._detail(result)) from result
            if result.rrset is not None:
                ttls.append(result.chaining_result.minimum_ttl)
                addresses.extend(ipaddress.ip_address(rdata.to_text()) for rdata in result.rrset)
        if not addresses:
            raise ResolveError(host, "no A/AAAA records")
        return tuple(dict.fromkeys(addresses)), min(ttls)

    def _detail(self, exc: BaseException) -> str:
        if isinstance(exc, asyncio.CancelledError):
            raise exc
        if isinstance(exc, dns.resolver.NXDOMAIN):
            return "NXDOMAIN"
        if isinstance(exc, dns.exception.Timeout):
            return f"timed out after {self._timeout}s"
        if isinstance(exc, dns.resolver.YXDOMAIN):
            return "YXDOMAIN"
        if isinstance(exc, dns.resolver.NoNameservers):
            # errors: (server, tcp, port, exception or rcode text, response) per attempt.
            rcodes = [err[3] for err in exc.kwargs.get("errors", []) if isinstance(err[3], str)]
            if "SERVFAIL" in rcodes:
                return "SERVFAIL"
            return rcodes[0] if rcodes else "no nameserver answered"
        if isinstance(exc, dns.exception.DNSException):
            return f"DNS error ({type(exc).__name__})"
        log.error("unexpected error from dnspython", exc_info=exc)
        return "resolver error"
