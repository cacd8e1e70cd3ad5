"""Rate limits per skill and per rule: requests per minute and concurrent connections.

A runaway loop in a skill must not exhaust an API budget. Two limits, each optional, each
settable on a skill (`limits:` under the skill) and on one rule (`limits:` under an allow
entry; both apply then):

- ``requests_per_minute``: a token bucket holding up to N tokens, refilled at N per minute.
  A burst of N goes through at once, then one request every 60/N seconds. What counts as a
  request is what egress sees: a CONNECT (a passthrough tunnel is one request, whatever runs
  inside it), a plain-HTTP request, a request inside an intercepted tunnel.
  Refused requests count too (`charge`): a skill flooding egress with denied requests
  empties its own bucket.
- ``concurrent_connections``: client connections a skill holds open at once. A connection
  takes its slot with its first admitted request and gives it back when it closes.

The bucket arithmetic (`refill`, `Bucket`) is pure; `RateLimiter` keeps the buckets and open
slots in memory (one process, one event loop: no locks) with an injectable clock.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from egress.policy.model import Limits

__all__ = ["Bucket", "Exceeded", "RateLimiter", "refill"]

# Buckets untouched this long are full again and can be forgotten.
_IDLE_SECONDS = 120.0
_MAX_BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    stamp: float  # clock reading of the last refill


def refill(bucket: Bucket | None, per_minute: int, now: float) -> Bucket:
    """The bucket at `now`: topped up at per_minute/60 tokens a second, at most per_minute."""
    if bucket is None:
        return Bucket(float(per_minute), now)
    elapsed = max(0.0, now - bucket.stamp)
    return Bucket(min(float(per_minute), bucket.tokens + elapsed * per_minute / 60.0), now)


@dataclass(frozen=True, slots=True)
class Exceeded:
    """Which limit a request ran into; `detail` is safe to audit and to show the skill."""

    scope: str  # "skill" or "rule FILE:LINE HOST"
    limit: str  # requests_per_minute | concurrent_connections
    value: int

    @property
    def detail(self) -> str:
        what = ("requests per minute" if self.limit == "requests_per_minute"
                else "concurrent connections")
        return f"{self.scope} limit of {self.value} {what} reached"


_Key = tuple[str, ...]  # ("skill", NAME) or ("rule", NAME, RULE LABEL)


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[_Key, Bucket] = {}
        self._open: Counter[_Key] = Counter()
        self._held: dict[Hashable, set[_Key]] = {}

    def admit(
        self, conn: Hashable, skill: str, skill_limits: Limits | None,
        rule: str | None = None, rule_limits: Limits | None = None, *, enforce: bool = True,
    ) -> Exceeded | None:
        """Count one request of `skill` on client connection `conn`.

        Returns None when every limit has room (and takes a token and, for a connection's
        first request, a slot), or the first limit exceeded (taking nothing). With
        enforce=False (report mode) the request is counted either way: the skill goes on
        and the caller only records what would have been refused.
        """
        scopes: list[tuple[_Key, str, Limits | None]] = [(("skill", skill), "skill", skill_limits)]
        if rule is not None:
            scopes.append((("rule", skill, rule), f"rule {rule}", rule_limits))
        now = self._clock()
        held = self._held.get(conn, set())
        exceeded: Exceeded | None = None
        refilled: dict[_Key, tuple[Bucket, int]] = {}
        for key, scope, limits in scopes:
            if limits is None:
                continue
            cap = limits.concurrent_connections
            if exceeded is None and cap is not None and key not in held and self._open[key] >= cap:
                exceeded = Exceeded(scope, "concurrent_connections", cap)
            rpm = limits.requests_per_minute
            if rpm is not None:
                bucket = refill(self._buckets.get(key), rpm, now)
                refilled[key] = (bucket, rpm)
                if exceeded is None and bucket.tokens < 1.0:
                    exceeded = Exceeded(scope, "requests_per_minute", rpm)
        for key, (bucket, _) in refilled.items():
            take = exceeded is None or not enforce
            self._buckets[key] = Bucket(max(0.0, bucket.tokens - 1.0), now) if take else bucket
        if exceeded is None or not enforce:
            # Slots are counted for every scope, limited or not, so a limit added by a
            # policy reload sees the connections already open.
            for key, _, _ in scopes:
                if key not in held:
                    self._open[key] += 1
                    held.add(key)
            self._held[conn] = held
        self._forget_idle(now)
        return exceeded

    def charge(self, skill: str, skill_limits: Limits | None) -> None:
        """Count a *refused* request of `skill` against its requests_per_minute (taking a token
        if one is left): denials count toward the rate limit, so a skill flooding egress with
        denied requests soon finds its allowed ones limited too. Takes no connection slot."""
        rpm = skill_limits.requests_per_minute if skill_limits is not None else None
        if rpm is None:
            return
        now = self._clock()
        bucket = refill(self._buckets.get(("skill", skill)), rpm, now)
        self._buckets[("skill", skill)] = Bucket(max(0.0, bucket.tokens - 1.0), now)
        self._forget_idle(now)

    def release(self, conn: Hashable) -> None:
        """The client connection closed: give its slots back."""
        for key in self._held.pop(conn, ()):
            self._open[key] -= 1
            if self._open[key] <= 0:
                del self._open[key]

    def rekey(self, old: Hashable, new: Hashable) -> None:
        """A client connection changes hands (the fast path gives it to mitmproxy, which
        knows it by another key): its slots go along, counted once."""
        moved = self._held.pop(old, None)
        if not moved:
            return
        held = self._held.setdefault(new, set())
        for key in moved & held:  # already held under the new key: give the extra back
            self._open[key] -= 1
        held |= moved

    def open_connections(self, skill: str) -> int:
        return self._open.get(("skill", skill), 0)

    def _forget_idle(self, now: float) -> None:
        if len(self._buckets) <= _MAX_BUCKETS:
            return
        for key in [k for k, b in self._buckets.items() if now - b.stamp > _IDLE_SECONDS]:
            del self._buckets[key]
