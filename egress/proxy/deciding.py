"""What every front end decides and records with: one gate, one recorder, one set of metrics
and rate limits, one book of approvals per process.

`egress serve` builds one `Deciding` and gives it to the fast path (egress/proxy/front/) and to
the mitmproxy addon, so a skill's requests count against one rate limit and appear in one set
of metrics whichever path carried them. Under `mitmdump -s` the addon builds its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from egress.audit.records import AuditRecord
from egress.ops.approvals import ApprovalBook
from egress.ops.metrics import Metrics
from egress.ops.ratelimit import RateLimiter
from egress.ops.runtime import Runtime
from egress.policy.model import ApprovalSettings
from egress.proxy.gate import Gate
from egress.proxy.record import Recorder

__all__ = ["Deciding"]


@dataclass(frozen=True)
class Deciding:
    metrics: Metrics
    limiter: RateLimiter
    gate: Gate
    recorder: Recorder
    # Requests held for a person (egress/proxy/approval_hold.py); the admin endpoint, whichever
    # front end runs, is where people decide.
    approvals: ApprovalBook

    @classmethod
    def create(cls, runtime: Callable[[], Runtime | None]) -> Deciding:
        """No I/O: the runtime is read on every decision (a reload swaps it)."""
        metrics, limiter = Metrics(), RateLimiter()

        def record_step(record: AuditRecord) -> None:
            rt = runtime()
            if rt is not None:
                rt.record(dataclasses.replace(record, policy=rt.policy.digest))

        def max_pending() -> int:
            rt = runtime()
            settings = rt.policy.settings.approvals if rt is not None else ApprovalSettings()
            return settings.max_pending

        return cls(metrics, limiter, Gate(runtime, limiter, metrics),
                   Recorder(runtime, metrics, limiter),
                   ApprovalBook(record=record_step, max_pending=max_pending))
