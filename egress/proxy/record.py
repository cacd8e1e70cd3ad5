"""Every decision, written down once: the metrics, the rate-limit charge and the audit line.

`Recorder.refused` is where a `Refused` from the gate becomes a reply (egress/responses.py),
a denial counted in the metrics and toward the skill's rate limit, and one audit line;
`allowed` counts an admission and audits it when it must be (report mode, a stale
credential, `settings.audit.log_allowed`). `denied` records a refusal that has no reply to
send: a connection closed by a timeout, a TLS handshake, a WebSocket message, a body.
Front ends only send the reply; none of them writes metrics or audit lines itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from egress.audit.records import AuditKind, AuditRecord, new_request_id
from egress.ops.metrics import Metrics
from egress.ops.ratelimit import RateLimiter
from egress.ops.runtime import Runtime
from egress.policy.decide import Verdict
from egress.proxy.gate import Admitted, Arrival, Refused
from egress.reasons import Reason
from egress.responses import Reply, refusal

__all__ = ["Recorder", "RequestLine"]

log = logging.getLogger("egress")

STALE = "stale credential: secret manager unavailable"


@dataclass(frozen=True)
class RequestLine:
    """What the audit log keeps of a request: the method as sent, the scheme, the path
    without its query. None of it for a CONNECT."""

    method: str | None = None
    scheme: str | None = None
    path: str | None = None

    @classmethod
    def of(cls, method: str, scheme: str | None, target: str) -> RequestLine:
        return cls(method[:16], scheme, target.split("?", 1)[0][:2048])


class Recorder:
    def __init__(self, runtime: Callable[[], Runtime | None], metrics: Metrics,
                 limiter: RateLimiter) -> None:
        self._runtime = runtime
        self.metrics = metrics
        self._limiter = limiter

    def refused(self, arrival: Arrival, refused: Refused) -> Reply:
        """Record a refusal of the gate (unless it was recorded before); its reply."""
        rule = refused.decision.rule if refused.decision is not None else None
        dest = refused.dest
        reply = refusal(refused.reason, skill=refused.skill, host=dest.host, port=dest.port,
                        request_id=refused.request_id,
                        policy_source=str(rule.source) if rule is not None else None,
                        approval=refused.approval)
        self.metrics.observe_latency(_latency_kind(arrival), refused.elapsed)
        if refused.recorded:
            return reply
        runtime = self._runtime()
        if runtime is None:
            # No policy, so no data dir to audit to: the process log says it.
            self.metrics.decision(Verdict.DENY, refused.reason, None, None)
            log.error("egress: refused %s:%d: no policy loaded", dest.host, dest.port)
            return reply
        self.metrics.decision(Verdict.DENY, refused.reason, refused.skill, dest.host)
        if refused.skill is not None and refused.reason is not Reason.RATE_LIMITED \
                and not refused.counted:
            # Denials count toward the skill's rate limit (a flood ends up rate-limited).
            policy = runtime.policy.skills.get(refused.skill)
            self._limiter.charge(refused.skill, policy.limits if policy is not None else None)
        runtime.record(AuditRecord(
            id=refused.request_id, decision=Verdict.DENY, reason=refused.reason,
            kind=_audit_kind(arrival), skill=refused.skill, client=arrival.peer,
            host=dest.host, port=dest.port, **_line(arrival).__dict__,
            rule=rule.label if rule is not None else None, policy=runtime.policy.digest,
            detail=refused.detail, approval=refused.approval))
        return reply

    def allowed(self, arrival: Arrival, admitted: Admitted, resolved: str | None, *,
                approval: str | None = None, detail: str | None = None) -> None:
        """Count an admission; audit it in report mode, with a stale key, when a person
        approved it (`approval`), or with `settings.audit.log_allowed`."""
        decision, credential = admitted.decision, admitted.credential
        self.metrics.observe_latency(_latency_kind(arrival), admitted.elapsed)
        self.metrics.decision(decision.verdict, decision.reason, admitted.skill,
                              admitted.dest.host)
        runtime = self._runtime()
        stale = credential is not None and credential.stale
        if runtime is None or not (decision.verdict is Verdict.REPORT or stale
                                   or approval is not None
                                   or runtime.policy.settings.audit.log_allowed):
            return
        runtime.record(AuditRecord(
            id=admitted.request_id, decision=decision.verdict, reason=decision.reason,
            kind=_audit_kind(arrival), skill=admitted.skill, client=arrival.peer,
            host=admitted.dest.host, port=admitted.dest.port, **_line(arrival).__dict__,
            rule=decision.rule.label if decision.rule is not None else None,
            resolved=resolved, policy=runtime.policy.digest,
            detail=STALE if stale else detail or decision.detail,
            credential=credential.credential if credential is not None else None,
            approval=approval))

    def denied(self, reason: Reason, *, kind: AuditKind, skill: str | None, host: str,
               port: int, client: str | None, detail: str,
               request: RequestLine | None = None, credential: str | None = None,
               request_id: str | None = None) -> None:
        """Record a refusal that has no reply: the connection, message or body is closed."""
        self.metrics.decision(Verdict.DENY, reason, skill, host or None)
        runtime = self._runtime()
        if runtime is None:
            return
        runtime.record(AuditRecord(
            id=request_id or new_request_id(), decision=Verdict.DENY, reason=reason, kind=kind,
            skill=skill,
            client=client, host=host, port=port, **(request or RequestLine()).__dict__,
            policy=runtime.policy.digest, detail=detail, credential=credential))


def _audit_kind(arrival: Arrival) -> AuditKind:
    return "connect" if arrival.kind == "connect" else "http"


def _latency_kind(arrival: Arrival) -> str:
    return "connect" if arrival.kind == "connect" else "http"


def _line(arrival: Arrival) -> RequestLine:
    if arrival.head is None:
        return RequestLine()
    return RequestLine.of(arrival.head.method, arrival.scheme, arrival.path or "")
