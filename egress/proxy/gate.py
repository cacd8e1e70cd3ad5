"""The gate: what arrived at the proxy in, `Admitted` or `Refused` out. No flow, no mitmproxy.

A front end (the mitmproxy addon today; a plain asyncio listener later, issue 16) reads the
wire into an `Arrival` and asks the gate; the gate runs the checks in the order of their cost,
so a denied request costs no DNS lookup, no secret fetch and no upstream connection:

    step          CONNECT   plain HTTP   in a tunnel   refused with
    identity         x          x                      auth_required, auth_invalid
    target           x          x            x         bad_request, bad_header,
                                                       bad_request_target, host_mismatch
    upgrade                     x            x         upgrade_not_allowed, nested_connect
    policy           x          x            x         unknown_skill, host/port/method/
                                                       path_not_allowed, path_not_canonical
    rate limits      x          x            x         rate_limited (report mode: allowed,
                                                       recorded as report/rate_limited)
    approval                    x            x         (none here: Admitted.approval tells the
                                                       front end to hold the request for a
                                                       person; report mode: allowed, recorded
                                                       as report/would_need_approval)
    credential                  x            x         credential_exfiltration, tls_required,
                                                       credential_unavailable
    tunnel state                             x         the tunnel's refusal (upstream TLS)
    address          x          x                      blocked_address, dns_failure
    (no state)       x          x            x         no_policy

The gate keeps no per-connection state: the front end says which skill a connection already
authenticated as, and passes an approved tunnel back with each request inside it. It
reads the policy, tokens, address guard and secret cache from `state()` on every call (a
reload swaps them), and is given the rate limiter, the metrics it counts DNS lookups and
latency in, and a clock. Applying an outcome (the reply, metrics, the audit line) is
egress/proxy/record.py's job, once, for every front end.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from egress.audit.records import new_request_id
from egress.credentials.broker import CredentialBroker, Injected
from egress.identity import parse_proxy_authorization
from egress.netguard import AddressGuard, Blocked
from egress.ops.metrics import Metrics
from egress.ops.ratelimit import RateLimiter
from egress.policy.decide import Decision, Destination, Verdict, decide
from egress.policy.hosts import IPAddress, host_header, is_host_name, normalise_host
from egress.policy.model import Approval, Mode, PolicySet
from egress.proxy.requestcheck import RequestHead, check_head, judged_path
from egress.proxy.tunnels import Tunnel
from egress.proxy.upgrades import request_refusal
from egress.reasons import Problem, Reason
from egress.responses import status_of
from egress.secrets import SecretCache

__all__ = ["Admitted", "Arrival", "Gate", "GateState", "Refused", "TokenCheck"]

ArrivalKind = Literal["connect", "http", "tunnelled"]


class TokenCheck(Protocol):
    def verify(self, skill: str, token: str) -> bool: ...


class GateState(Protocol):
    """What the gate reads on every call (egress/ops/runtime.py's Runtime is one)."""

    @property
    def policy(self) -> PolicySet: ...

    @property
    def tokens(self) -> TokenCheck: ...

    @property
    def guard(self) -> AddressGuard: ...

    @property
    def secrets(self) -> SecretCache: ...


@dataclass(frozen=True)
class Arrival:
    """What arrived, as read off the wire. Never a flow: plain values a front end can fill.

    kind: "connect" (CONNECT host:port), "http" (a plain-HTTP request to the proxy, its
    target absolute-form) or "tunnelled" (a request inside an approved tunnel: `tunnel` set).
    """

    kind: ArrivalKind
    connection: Hashable  # the client connection (its rate-limit slots)
    peer: str | None  # "ip:port" of the client connection, for the audit log
    host: str  # as requested: the CONNECT host, the absolute URI's host (plain HTTP)
    port: int
    proxy_authorization: str | None = field(default=None, repr=False)  # the header's value
    authenticated_as: str | None = None  # the skill this connection authenticated as before
    head: RequestHead | None = None  # a request's head as received (None for CONNECT)
    scheme: str | None = None  # a request's scheme
    path: str | None = None  # a request's target as forwarded (query included)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # without Proxy-Auth.
    tunnel: Tunnel | None = None  # "tunnelled": the CONNECT this request arrived through
    verified_tls: bool = False  # inside TLS egress terminated, upstream certificate verified
    websocket_enabled: bool = True


@dataclass(frozen=True)
class Admitted:
    """Go ahead. The front end pins `address`, sends `credential.fields` as the headers,
    adds `host_header` when set, forwards an absolute-form target in origin-form when
    `origin_form`, and scans the body for `unbound` (credential name -> values).

    `approval` set: an approval rule covers this request. The front end MUST NOT forward any
    of it yet: it reads the body whole (at most settings.approvals.max_body), holds the
    request until a person approves it (egress/ops/approvals.py) and forwards exactly the
    bytes approved, or refuses it (egress/proxy/approval_hold.py)."""

    skill: str
    dest: Destination  # as judged
    decision: Decision  # allow or report, the rule, intercept / raw_tcp at CONNECT time
    request_id: str
    address: IPAddress | None = None  # the one vetted address to dial (not inside a tunnel)
    credential: Injected | None = None
    unbound: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    host_header: str | None = None
    origin_form: bool = False
    elapsed: float = 0.0  # seconds the gate took (DNS and secret fetch included)
    approval: Approval | None = None  # hold for a person's approval before forwarding


@dataclass(frozen=True)
class Refused:
    """Refuse with `reason` (and `detail`, safe to audit; never a secret or header value)."""

    reason: Reason
    detail: str | None
    skill: str | None  # None: not authenticated (yet)
    dest: Destination  # as judged, or as requested when it could not be judged
    request_id: str
    decision: Decision | None = None  # the policy's decision, when it got that far
    counted: bool = False  # the rate limiter already counted this request
    recorded: bool = False  # audited before (a tunnel refused at its TLS handshake)
    elapsed: float = 0.0
    approval: str | None = None  # the approval a refusal is about (approval_pending, _denied)

    @property
    def status(self) -> int:
        return status_of(self.reason)


class Gate:
    def __init__(self, state: Callable[[], GateState | None], limiter: RateLimiter,
                 metrics: Metrics, *, clock: Callable[[], float] = time.perf_counter) -> None:
        """No I/O here: `state` is read per call; DNS and secrets happen in `admit`."""
        self._state = state
        self.limiter = limiter
        self._metrics = metrics
        self._clock = clock
        self.credentials = CredentialBroker()

    async def admit(self, arrival: Arrival) -> Admitted | Refused:
        started = self._clock()
        outcome = await self._admit(arrival, new_request_id())
        return dataclasses.replace(outcome, elapsed=self._clock() - started)

    async def _admit(self, arrival: Arrival, rid: str) -> Admitted | Refused:
        state = self._state()
        if state is None:
            return Refused(Reason.NO_POLICY, "no policy loaded", None, _requested(arrival), rid)
        if arrival.kind == "tunnelled":
            return await self._tunnelled(state, arrival, rid)
        skill = self._identify(state, arrival, rid)
        if isinstance(skill, Refused):
            return skill
        target = self._target(arrival, skill, rid)
        if isinstance(target, Refused):
            return target
        dest, host_hdr = target
        if arrival.kind == "http":
            problem = self._upgrade(arrival)
            judged = self._judge(state, arrival, skill, dest, rid)
            if isinstance(judged, Refused):
                return judged
            if problem is not None:
                return self._refused(problem, skill, dest, rid, judged, counted=True)
            credential = await self._credential(state, arrival, skill, dest, judged, rid, tls=False)
            if isinstance(credential, Refused):
                return credential
        else:
            judged = self._judge(state, arrival, skill, dest, rid)
            if isinstance(judged, Refused):
                return judged
            credential = None
        vetted = await state.guard.vet(dest.host, dest.port)
        if is_host_name(dest.host):
            self._metrics.dns(failed=isinstance(vetted, Blocked)
                              and vetted.reason is Reason.DNS_FAILURE)
        if isinstance(vetted, Blocked):
            # Never relaxed by report mode: these protect the operator, not the policy.
            return Refused(vetted.reason, vetted.detail, skill, dest, rid, judged, counted=True)
        judged, approval = _approval(state, skill, judged, dest)
        return Admitted(skill, dest, judged, rid, address=vetted.ip, credential=credential,
                        unbound=self._unbound(state, skill, dest, judged, credential),
                        host_header=host_hdr, approval=approval)

    async def _tunnelled(self, state: GateState, arrival: Arrival, rid: str
                         ) -> Admitted | Refused:
        tunnel, head = arrival.tunnel, arrival.head
        assert tunnel is not None and head is not None
        skill = tunnel.skill
        problem = check_head(head, tunnel.host, tunnel.port, require_host=True)
        if problem is not None:
            return self._refused(problem, skill, Destination(tunnel.host, tunnel.port), rid)
        dest = Destination(tunnel.host, tunnel.port, head.method, judged_path(arrival.path or ""))
        problem = self._upgrade(arrival)
        if problem is not None:
            return self._refused(problem, skill, dest, rid)
        judged = self._judge(state, arrival, skill, dest, rid)
        if isinstance(judged, Refused):
            return judged
        credential = await self._credential(state, arrival, skill, dest, judged, rid,
                                            tls=arrival.verified_tls)
        if isinstance(credential, Refused):
            return credential
        if tunnel.refused is not None:  # its upstream failed TLS verification (audited then)
            # The reply names the audit line that refused the tunnel, not a new request id.
            return Refused(tunnel.refused, None, skill, Destination(tunnel.host, tunnel.port),
                           tunnel.refused_id or rid, counted=True, recorded=True)
        judged, approval = _approval(state, skill, judged, dest)
        # An absolute-form target naming the CONNECT host is forwarded in origin-form.
        return Admitted(skill, dest, judged, rid, credential=credential,
                        unbound=self._unbound(state, skill, dest, judged, credential),
                        origin_form=bool(head.authority) and not head.http2,
                        approval=approval)

    # -- steps -----------------------------------------------------------------------------
    def _identify(self, state: GateState, arrival: Arrival, rid: str) -> str | Refused:
        header = arrival.proxy_authorization
        if header is None and arrival.authenticated_as is not None:
            return arrival.authenticated_as  # plain-HTTP keep-alive, authenticated before
        creds = parse_proxy_authorization(header)
        if creds is None:
            reason = Reason.AUTH_REQUIRED if header is None else Reason.AUTH_INVALID
            return Refused(reason, None, None, _requested(arrival), rid)
        skill, token = creds
        if not state.tokens.verify(skill, token):
            return Refused(Reason.AUTH_INVALID, f"claimed skill {skill[:64]!r}", None,
                           _requested(arrival), rid)
        return skill

    def _target(self, arrival: Arrival, skill: str, rid: str
                ) -> tuple[Destination, str | None] | Refused:
        """CONNECT: the destination. Plain HTTP: the destination with method and path, after
        the head's checks (header bytes, origin-form, one Host naming the URI's host), and the
        Host header to add when there is none (RFC 9112 7.2: a proxy generates it)."""
        try:
            host = normalise_host(arrival.host)
        except ValueError as exc:
            return Refused(Reason.BAD_REQUEST, f"host: {exc}", skill, _requested(arrival), rid)
        if arrival.kind == "connect":
            return Destination(host, arrival.port), None
        head = arrival.head
        assert head is not None
        problem = check_head(head, host, arrival.port, require_host=False)
        if problem is not None:
            return self._refused(problem, skill, Destination(host, arrival.port), rid)
        added = None if head.hosts else host_header(arrival.scheme or "http", host, arrival.port)
        return (Destination(host, arrival.port, head.method, judged_path(arrival.path or "")),
                added)

    @staticmethod
    def _upgrade(arrival: Arrival) -> Problem | None:
        """Upgrade other than WebSocket, and CONNECT-style methods (egress/proxy/upgrades.py)."""
        head = arrival.head
        assert head is not None
        return request_refusal(head.method.upper(), arrival.headers, http2=head.http2,
                               websocket_enabled=arrival.websocket_enabled)

    def _judge(self, state: GateState, arrival: Arrival, skill: str, dest: Destination,
               rid: str) -> Decision | Refused:
        """The policy decision, then rate limits. In report mode an excess is let through and
        recorded as report/rate_limited instead."""
        decision = decide(state.policy, skill, dest)
        if not decision.allowed:
            return Refused(decision.reason, decision.detail, skill, dest, rid, decision)
        policy = state.policy.skills.get(skill)
        rule = decision.rule
        report = policy is not None and policy.mode is Mode.REPORT
        exceeded = self.limiter.admit(
            arrival.connection, skill, policy.limits if policy else None,
            rule.label if rule is not None else None, rule.limits if rule is not None else None,
            enforce=not report)
        if exceeded is None:
            return decision
        if report:
            if decision.verdict is Verdict.REPORT:
                return decision  # already recorded as a would-be denial for its own reason
            return dataclasses.replace(decision, verdict=Verdict.REPORT,
                                       reason=Reason.RATE_LIMITED)
        return Refused(Reason.RATE_LIMITED, exceeded.detail, skill, dest, rid, decision)

    async def _credential(self, state: GateState, arrival: Arrival, skill: str,
                          dest: Destination, decision: Decision, rid: str, *, tls: bool
                          ) -> Injected | Refused | None:
        """Refuse stray credentials, fetch and inject the rule's one (egress/credentials)."""
        policy = state.policy.skills.get(skill)
        if policy is None or not policy.credentials:
            return None
        head = arrival.head
        assert head is not None
        outcome = await self.credentials.prepare(
            state.secrets, policy, decision.rule, dest, list(arrival.headers),
            arrival.path or "", verified_tls=tls,
            authority=head.hosts[0] if head.hosts else (head.authority or None),
            http2=head.http2, endpoint=getattr(state, "oauth", None))
        if isinstance(outcome, Problem):
            return self._refused(outcome, skill, dest, rid, decision, counted=True)
        return outcome

    def _unbound(self, state: GateState, skill: str, dest: Destination, decision: Decision,
                 credential: Injected | None) -> Mapping[str, tuple[str, ...]]:
        policy = state.policy.skills.get(skill)
        if policy is None or not policy.credentials or dest.method is None:
            return {}
        wanted = decision.rule.credential if decision.rule is not None else None
        return self.credentials.unbound(policy, dest, wanted)

    @staticmethod
    def _refused(problem: Problem, skill: str | None, dest: Destination, rid: str,
                 decision: Decision | None = None, *, counted: bool = False) -> Refused:
        return Refused(problem.reason, problem.detail, skill, dest, rid, decision,
                       counted=counted)


def _approval(state: GateState, skill: str, decision: Decision, dest: Destination
              ) -> tuple[Decision, Approval | None]:
    """A request an approval rule allows waits for a person. In report mode it is let through
    and recorded as report/would_need_approval: report mode never approves anything itself."""
    rule = decision.rule
    if dest.method is None or rule is None or rule.approval is None \
            or decision.verdict is Verdict.DENY:
        return decision, None
    policy = state.policy.skills.get(skill)
    if policy is not None and policy.mode is Mode.REPORT:
        if decision.verdict is Verdict.ALLOW:
            return dataclasses.replace(decision, verdict=Verdict.REPORT,
                                       reason=Reason.WOULD_NEED_APPROVAL), None
        return decision, None  # already a would-be refusal for its own reason (rate_limited)
    return decision, rule.approval


def _requested(arrival: Arrival) -> Destination:
    """The destination as requested, best effort, for refusals before it is validated."""
    try:
        host = normalise_host(arrival.host)
    except ValueError:
        host = arrival.host[:253]
    return Destination(host, arrival.port)
