"""Approvals: requests held until a person decides; one decision covers one identical request.

    proxy (approval_hold.py)          ApprovalBook                     admin endpoint / CLI
    held request --- hold(req) ---->  find the open approval of the
                                      identical request, or open one
                                      (audit approval_requested,
                                      notify) and wait up to `wait` <--- decide(id, grant, by)
                 <-- FORWARD ------   granted: taken once (used)        (audit granted/denied)
                 <-- DENIED -------   refused
                 <-- PENDING ------   nobody decided in time (428; the approval stays open)

"The identical request" is `request_key`: skill, method, scheme, host, port, path, query,
the body's SHA-256 and the request's headers, but for those a retry may legitimately change
without changing what the request does (VOLATILE_HEADERS: Date, User-Agent, Idempotency-Key,
trace ids, ...) and the header egress injects the credential into. A header that changes
what a write does (`Stripe-Account`, `X-HTTP-Method-Override`, `Cookie`) counts.

A grant is taken by the first matching request within `valid_for` seconds of the
decision, once; a denial refuses every identical request for `valid_for` seconds without
asking again; an approval nobody decides expires `valid_for` seconds after it was asked (at
least `wait`). A skill has at most `max_pending` open approvals and as many requests held
at once (each keeps its body in memory). Every step is one audit line (kind "approval");
expiry runs from `run_expiry`.

State lives in this process's memory: a restart forgets open approvals and unused grants
(fail closed: the agent's retry asks again). Pure asyncio, no I/O: audit lines and
notifications go to callables the owner passes in.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from egress.audit.records import AuditDecision, AuditRecord, timestamp
from egress.ops.approval_view import PREVIEW_LIMIT, RequestView, visible
from egress.policy.decide import Verdict
from egress.reasons import Reason

__all__ = ["VOLATILE_HEADERS", "Answer", "ApprovalBook", "ApprovalConflict", "ApprovalEntry",
           "ApprovalNotFound", "ApprovalState", "HeldRequest", "Outcome", "request_key"]

_HISTORY = 500  # decided approvals kept for `list --all`, `show` and the console
_PAST_KEYS = 10_000  # identical requests whose earlier outcomes are remembered
_MAX_ROUNDS = 8  # a held request re-asks at most this often (a grant another request took)
_NOTE_MAX = 500
_NAME_MAX = 100
# Headers left out of "the identical request": a client's retry may change them without
# changing what the request does (transport, caching, tracing, a regenerated idempotency key).
# Every other header counts: one the person did not see (`Stripe-Account: acct_other`, a
# method override, another Cookie) makes another request that needs its own approval.
VOLATILE_HEADERS = frozenset({
    "host", "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
    "content-length", "proxy-connection", "date", "user-agent", "accept", "accept-encoding",
    "accept-language", "cache-control", "pragma", "idempotency-key", "x-idempotency-key",
    "x-request-id", "x-correlation-id", "request-id", "traceparent", "tracestate", "baggage",
    "sentry-trace", "x-amzn-trace-id", "x-cloud-trace-context"})
VOLATILE_PREFIXES = ("x-b3-", "x-stainless-")  # Zipkin trace ids; OpenAI/Anthropic SDK retries


class ApprovalState(StrEnum):
    PENDING = "pending"  # waiting for a person
    GRANTED = "granted"  # approved, not used yet
    DENIED = "denied"  # refused (identical requests are refused while it stands)
    EXPIRED = "expired"  # nobody decided in time, or a grant nobody used
    USED = "used"  # approved and forwarded, once


class Outcome(StrEnum):
    FORWARD = "forward"  # approved: send it (the grant is used)
    DENIED = "denied"  # 403 approval_denied
    PENDING = "pending"  # 428 approval_pending: retry the identical request later
    FULL = "full"  # 429 approval_queue_full: too many open approvals or held requests
    UNAVAILABLE = "unavailable"  # 503: nobody can decide (no admin endpoint)


class ApprovalNotFound(LookupError):
    """No approval with that id (never was, or forgotten: egress restarted)."""


class ApprovalConflict(ValueError):
    """The approval was decided already (or expired): a decision is made once."""


def request_key(*, skill: str, method: str, scheme: str, host: str, port: int, path: str,
                query: str, body: bytes, headers: Iterable[tuple[str, str]],
                ignore: Iterable[str] = ()) -> tuple[str, str]:
    """(the identity of the request, its body's SHA-256), both hex. `headers` count but for
    VOLATILE_HEADERS and those named in `ignore` (the header egress injects a credential
    into: a rotated key must not turn an approved request into another)."""
    body_digest = hashlib.sha256(body).hexdigest()
    skip = VOLATILE_HEADERS | {name.lower() for name in ignore}
    # Sorted by name, keeping the order of repeated headers (it may matter to the upstream).
    counted = sorted(((k.lower(), i, v) for i, (k, v) in enumerate(headers)
                      if k.lower() not in skip and not k.lower().startswith(VOLATILE_PREFIXES)))
    h = hashlib.sha256()
    for part in (skill, method, scheme, host, str(port), path, query, body_digest,
                 *(f"{k}:{v}" for k, _, v in counted)):
        h.update(part.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest(), body_digest


@dataclass(frozen=True)
class HeldRequest:
    """A request an approval rule covers, as the proxy read it (plain values)."""

    skill: str
    method: str
    scheme: str
    host: str
    port: int
    path: str  # as sent, without the query
    key: str  # request_key()
    body_digest: str
    view: RequestView  # what the person sees (masked)
    rule: str  # "file:line host" of the approval rule
    request_id: str
    wait: float
    valid_for: float
    client: str | None = None
    credential: str | None = None  # the name of the credential it will carry


@dataclass(eq=False)
class ApprovalEntry:
    id: str
    request: HeldRequest
    state: ApprovalState
    asked_at: str  # RFC 3339
    expires: float  # monotonic: when a pending approval, a grant or a denial ends
    expires_at: str  # the same, RFC 3339
    asked: int = 1  # how often it was asked for (held requests and retries while open)
    previous: dict[str, int] = field(default_factory=dict)  # outcomes of earlier identical
    skill_asked: int = 0  # approvals the skill asked for before this one (since start)
    decided_by: str | None = None
    decided_at: str | None = None
    note: str | None = None
    used_by: str | None = None  # the request id that was forwarded
    changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def describe(self, *, full: bool = False) -> dict[str, Any]:
        """JSON for the CLI and the console. Text comes masked and made visible; the body is
        cut to PREVIEW_LIMIT characters unless `full`."""
        r, v = self.request, self.request.view
        body, cut = (v.body, False) if full else v.summary(PREVIEW_LIMIT)
        return {
            "id": self.id, "state": str(self.state), "skill": r.skill, "method": visible(r.method),
            "scheme": r.scheme, "host": r.host, "port": r.port, "path": v.path,
            "query": v.query, "headers": [list(h) for h in v.headers],
            "content_type": v.content_type, "body_kind": v.body_kind, "body": body,
            "body_truncated": cut, "body_size": v.body_size, "body_sha256": r.body_digest,
            "rule": r.rule, "credential": r.credential, "request_id": r.request_id,
            "client": r.client, "asked_at": self.asked_at, "asked": self.asked,
            "previous": dict(self.previous), "skill_asked_before": self.skill_asked,
            "wait": r.wait, "valid_for": r.valid_for, "expires_at": self.expires_at,
            "decided_by": self.decided_by, "decided_at": self.decided_at, "note": self.note,
            "used_by": self.used_by,
        }


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    approval: ApprovalEntry | None = None


class ApprovalBook:
    def __init__(self, *, record: Callable[[AuditRecord], None] = lambda r: None,
                 on_open: Callable[[ApprovalEntry], None] = lambda e: None,
                 max_pending: Callable[[], int] = lambda: 20,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        """`record` writes an audit line, `on_open` tells people (egress/ops/notify.py); both
        must return at once. No I/O here."""
        self.record, self.on_open = record, on_open
        self._max_pending = max_pending
        self._clock, self._wall = clock, wall
        self.available = False  # someone can decide (the admin endpoint is up)
        self._open: dict[tuple[str, str], ApprovalEntry] = {}  # (skill, key) -> current
        self._entries: OrderedDict[str, ApprovalEntry] = OrderedDict()  # id -> entry
        self._past: OrderedDict[tuple[str, str], Counter[str]] = OrderedDict()
        self._skill_asked: Counter[str] = Counter()
        self._held: Counter[str] = Counter()  # skill -> requests waiting in `hold` now
        self._listeners: set[asyncio.Queue[None]] = set()

    # -- the request path ------------------------------------------------------------------
    async def hold(self, req: HeldRequest, *, alive: Callable[[], bool] = lambda: True
                   ) -> Answer:
        """Decide what happens to a held request, waiting up to `req.wait` for a person.
        `alive()` false (the client went away) leaves a grant for the retry."""
        if not self.available:
            return Answer(Outcome.UNAVAILABLE)
        # Each held request keeps its body (up to max_body) in memory while it waits: a skill
        # holds at most max_pending at once, identical retries joining an approval included.
        if req.wait > 0 and self._held[req.skill] >= self._max_pending():
            self.expire()
            entry = self._open.get((req.skill, req.key))
            if entry is None or entry.state is ApprovalState.PENDING:
                return Answer(Outcome.FULL, entry)
        self._held[req.skill] += 1
        try:
            return await self._hold(req, alive)
        finally:
            self._held[req.skill] -= 1
            if self._held[req.skill] <= 0:
                del self._held[req.skill]

    async def _hold(self, req: HeldRequest, alive: Callable[[], bool]) -> Answer:
        deadline = self._clock() + req.wait
        joined: ApprovalEntry | None = None
        entry: ApprovalEntry | None = None
        for _ in range(_MAX_ROUNDS):
            self.expire()
            entry = self._open.get((req.skill, req.key))
            if entry is not None and entry.state is ApprovalState.GRANTED:
                if not alive():
                    return Answer(Outcome.PENDING, entry)
                self._use(entry, req.request_id)
                return Answer(Outcome.FORWARD, entry)
            if entry is not None and entry.state is ApprovalState.DENIED:
                return Answer(Outcome.DENIED, entry)
            if entry is None:
                if self.pending_count(req.skill) >= self._max_pending():
                    return Answer(Outcome.FULL)
                entry = self._ask(req)
            elif entry is not joined:
                entry.asked += 1
                self._publish()
            joined = entry
            left = deadline - self._clock()
            if left <= 0:
                return Answer(Outcome.PENDING, entry)
            try:
                await asyncio.wait_for(entry.changed.wait(), left)
            except TimeoutError:
                return Answer(Outcome.PENDING, entry)
        return Answer(Outcome.PENDING, entry)

    def held_count(self, skill: str) -> int:
        """Requests of `skill` waiting for a decision right now."""
        return self._held[skill]

    def pending_count(self, skill: str) -> int:
        return sum(1 for (s, _), e in self._open.items()
                   if s == skill and e.state is ApprovalState.PENDING)

    # -- people ----------------------------------------------------------------------------
    def decide(self, approval_id: str, *, grant: bool, by: str, note: str | None = None
               ) -> ApprovalEntry:
        """A person's decision. Raises ApprovalNotFound, or ApprovalConflict when it is not
        pending any more (decided, expired)."""
        self.expire()
        entry = self._entries.get(approval_id)
        if entry is None:
            raise ApprovalNotFound(approval_id)
        if entry.state is not ApprovalState.PENDING:
            raise ApprovalConflict(f"approval {approval_id} is {entry.state} already")
        entry.state = ApprovalState.GRANTED if grant else ApprovalState.DENIED
        entry.decided_by = visible(by.strip()[:_NAME_MAX]) or "unknown"
        entry.decided_at = timestamp()
        entry.note = visible(note.strip()[:_NOTE_MAX]) if note and note.strip() else None
        self._set_expiry(entry, entry.request.valid_for)
        self._audit(entry, Reason.APPROVAL_GRANTED if grant else Reason.APPROVAL_DENIED,
                    Verdict.ALLOW if grant else Verdict.DENY,
                    f"{'approved' if grant else 'refused'}; stands for "
                    f"{entry.request.valid_for:g}s")
        entry.changed.set()
        self._publish()
        return entry

    def get(self, approval_id: str) -> ApprovalEntry:
        self.expire()
        entry = self._entries.get(approval_id)
        if entry is None:
            raise ApprovalNotFound(approval_id)
        return entry

    def entries(self, *, everything: bool = False) -> list[ApprovalEntry]:
        """Pending approvals, oldest first; `everything`: the remembered history too."""
        self.expire()
        return [e for e in self._entries.values()
                if everything or e.state is ApprovalState.PENDING]

    # -- time ------------------------------------------------------------------------------
    def expire(self) -> None:
        """End what is due: pending approvals nobody decided, grants nobody used (both
        audited as approval_expired), denials that stood their time."""
        now = self._clock()
        due = [(k, e) for k, e in self._open.items() if e.expires <= now]
        for key, entry in due:
            del self._open[key]
            if entry.state is ApprovalState.PENDING:
                entry.state = ApprovalState.EXPIRED
                self._audit(entry, Reason.APPROVAL_EXPIRED, Verdict.DENY,
                            f"nobody decided within {entry.request.valid_for:g}s")
                entry.changed.set()
            elif entry.state is ApprovalState.GRANTED:
                entry.state = ApprovalState.EXPIRED
                self._audit(entry, Reason.APPROVAL_EXPIRED, Verdict.DENY,
                            f"approved by {entry.decided_by}, not used within "
                            f"{entry.request.valid_for:g}s")
            self._remember(entry)
        if due:
            self._publish()

    async def run_expiry(self, period: float = 1.0) -> None:
        """Expire on time even when nobody asks (until cancelled)."""
        while True:
            await asyncio.sleep(period)
            self.expire()

    # -- listeners (server-sent events) ----------------------------------------------------
    @contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[None]]:
        """A queue that gets an item whenever approvals change (changes coalesce)."""
        queue: asyncio.Queue[None] = asyncio.Queue(maxsize=1)
        self._listeners.add(queue)
        try:
            yield queue
        finally:
            self._listeners.discard(queue)

    # -- inside ----------------------------------------------------------------------------
    def _ask(self, req: HeldRequest) -> ApprovalEntry:
        entry = ApprovalEntry(
            id=secrets.token_hex(6), request=req, state=ApprovalState.PENDING,
            asked_at=timestamp(), expires=0.0, expires_at="",
            previous=dict(self._past.get((req.skill, req.key), {})),
            skill_asked=self._skill_asked[req.skill])
        self._set_expiry(entry, max(req.valid_for, req.wait))
        self._skill_asked[req.skill] += 1
        self._open[(req.skill, req.key)] = entry
        self._entries[entry.id] = entry
        self._trim()
        self._audit(entry, Reason.APPROVAL_REQUESTED, "hold",
                    f"held up to {req.wait:g}s; open for {max(req.valid_for, req.wait):g}s")
        try:
            self.on_open(entry)
        except Exception:  # a notifier never breaks the request path
            pass
        self._publish()
        return entry

    def _use(self, entry: ApprovalEntry, request_id: str) -> None:
        entry.state = ApprovalState.USED
        entry.used_by = request_id
        self._open.pop((entry.request.skill, entry.request.key), None)
        self._remember(entry)
        self._publish()

    def _set_expiry(self, entry: ApprovalEntry, seconds: float) -> None:
        entry.expires = self._clock() + seconds
        entry.expires_at = datetime.fromtimestamp(self._wall() + seconds, UTC).isoformat(
            timespec="seconds").replace("+00:00", "Z")

    def _remember(self, entry: ApprovalEntry) -> None:
        key = (entry.request.skill, entry.request.key)
        past = self._past.setdefault(key, Counter())
        past[str(entry.state)] += 1
        self._past.move_to_end(key)
        while len(self._past) > _PAST_KEYS:
            self._past.popitem(last=False)

    def _trim(self) -> None:
        """Forget the oldest decided approvals past the history size (never an open one)."""
        ended = [i for i, e in self._entries.items()
                 if (e.request.skill, e.request.key) not in self._open
                 or self._open[(e.request.skill, e.request.key)] is not e]
        for approval_id in ended[: max(0, len(ended) - _HISTORY)]:
            del self._entries[approval_id]

    def _audit(self, entry: ApprovalEntry, reason: Reason, decision: AuditDecision,
               detail: str) -> None:
        r = entry.request
        self.record(AuditRecord(
            id=r.request_id, decision=decision, reason=reason, kind="approval", host=r.host,
            port=r.port, skill=r.skill, client=r.client, method=r.method[:16], scheme=r.scheme,
            path=r.path[:2048], rule=r.rule, detail=detail, credential=r.credential,
            approval=entry.id, decided_by=entry.decided_by, note=entry.note))

    def _publish(self) -> None:
        for queue in list(self._listeners):
            if queue.empty():
                queue.put_nowait(None)
