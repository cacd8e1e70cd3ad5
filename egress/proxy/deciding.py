"""What every front end decides and records with: one gate, one recorder, one set of metrics
and rate limits per process.

`egress serve` builds one `Deciding` and gives it to the fast path (egress/proxy/front/) and to
the mitmproxy addon, so a skill's requests count against one rate limit and appear in one set
of metrics whichever path carried them. Under `mitmdump -s` the addon builds its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from egress.ops.metrics import Metrics
from egress.ops.ratelimit import RateLimiter
from egress.ops.runtime import Runtime
from egress.proxy.gate import Gate
from egress.proxy.record import Recorder

__all__ = ["Deciding"]


@dataclass(frozen=True)
class Deciding:
    metrics: Metrics
    limiter: RateLimiter
    gate: Gate
    recorder: Recorder

    @classmethod
    def create(cls, runtime: Callable[[], Runtime | None]) -> Deciding:
        """No I/O: the runtime is read on every decision (a reload swaps it)."""
        metrics, limiter = Metrics(), RateLimiter()
        return cls(metrics, limiter, Gate(runtime, limiter, metrics),
                   Recorder(runtime, metrics, limiter))
