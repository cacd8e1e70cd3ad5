"""The ApprovalBook alone: one decision per identical request, denials stand, expiry, the
audit line of every step. Time for expiry is a FakeClock; waits are short and real."""

from __future__ import annotations

import asyncio

import pytest

from egress.audit.records import AuditRecord
from egress.ops.approval_view import request_view
from egress.ops.approvals import (
    ApprovalBook,
    ApprovalConflict,
    ApprovalNotFound,
    ApprovalState,
    HeldRequest,
    Outcome,
    request_key,
)
from tests.fakes import FakeClock

HEADERS = (("Content-Type", "application/json"),)


def held(body: bytes = b'{"amount": 1}', *, skill: str = "payer", path: str = "/v1/refunds",
         wait: float = 0.0, valid_for: float = 600.0, rid: str = "r1") -> HeldRequest:
    key, digest = request_key(skill=skill, method="POST", scheme="https", host="api.pay.test",
                              port=443, path=path, query="", body=body, headers=HEADERS)
    return HeldRequest(skill=skill, method="POST", scheme="https", host="api.pay.test",
                       port=443, path=path, key=key, body_digest=digest,
                       view=request_view(path=path, query="", headers=HEADERS, body=body),
                       rule="p.yaml:7 api.pay.test", request_id=rid, wait=wait,
                       valid_for=valid_for, client="127.0.0.1:5000", credential="stripe")


class Book:
    def __init__(self, *, max_pending: int = 20) -> None:
        self.clock = FakeClock()
        self.records: list[AuditRecord] = []
        self.opened: list[str] = []
        self.book = ApprovalBook(record=self.records.append,
                                 on_open=lambda e: self.opened.append(e.id),
                                 max_pending=lambda: max_pending, clock=self.clock)
        self.book.available = True

    def steps(self) -> list[tuple[str, str, str]]:
        return [(r.kind, str(r.decision), str(r.reason)) for r in self.records]


async def test_an_undecided_request_is_pending_and_the_approval_stays_open() -> None:
    b = Book()
    answer = await b.book.hold(held())
    assert answer.outcome is Outcome.PENDING and answer.approval is not None
    assert answer.approval.state is ApprovalState.PENDING
    assert [e.id for e in b.book.entries()] == [answer.approval.id] == b.opened
    [line] = b.records
    assert (line.kind, line.decision, line.reason, line.approval, line.id) == (
        "approval", "hold", "approval_requested", answer.approval.id, "r1")
    assert line.method == "POST" and line.path == "/v1/refunds" and line.credential == "stripe"


async def test_a_decision_while_the_request_is_held_forwards_it_once() -> None:
    b = Book()
    task = asyncio.create_task(b.book.hold(held(wait=10)))
    for _ in range(100):
        if b.book.entries():
            break
        await asyncio.sleep(0.01)
    [entry] = b.book.entries()
    b.book.decide(entry.id, grant=True, by="alice (cli)", note="ok")
    answer = await asyncio.wait_for(task, 5)
    assert answer.outcome is Outcome.FORWARD and answer.approval is entry
    assert entry.state is ApprovalState.USED and entry.used_by == "r1"
    assert b.steps() == [("approval", "hold", "approval_requested"),
                         ("approval", "allow", "approval_granted")]
    assert b.records[1].decided_by == "alice (cli)" and b.records[1].note == "ok"


async def test_a_grant_covers_one_identical_request() -> None:
    b = Book()
    first = (await b.book.hold(held())).approval
    assert first is not None
    b.book.decide(first.id, grant=True, by="alice")
    assert (await b.book.hold(held(rid="r2"))).outcome is Outcome.FORWARD
    again = await b.book.hold(held(rid="r3"))
    assert again.outcome is Outcome.PENDING and again.approval is not None
    assert again.approval.id != first.id and again.approval.previous == {"used": 1}


@pytest.mark.parametrize("changed", [
    pytest.param({"body": b'{"amount": 2}'}, id="body"),
    pytest.param({"path": "/v1/charges"}, id="path"),
    pytest.param({"skill": "other"}, id="skill"),
])
async def test_a_changed_request_needs_its_own_approval(changed: dict[str, object]) -> None:
    b = Book()
    first = (await b.book.hold(held())).approval
    assert first is not None
    b.book.decide(first.id, grant=True, by="alice")
    other = await b.book.hold(held(**changed))  # type: ignore[arg-type]
    assert other.outcome is Outcome.PENDING and other.approval is not None
    assert other.approval.id != first.id and first.state is ApprovalState.GRANTED


def test_request_key_covers_what_makes_a_request_another() -> None:
    base_headers = [("Content-Type", "text/plain"), ("Stripe-Account", "acct_1"),
                    ("Idempotency-Key", "k1"), ("Authorization", "Bearer injected-1")]

    def key(**kw: object) -> str:
        args: dict[str, object] = dict(skill="s", method="POST", scheme="https", host="h",
                                       port=443, path="/p", query="a=1", body=b"x",
                                       headers=base_headers, ignore=["authorization"])
        args.update(kw)
        return request_key(**args)[0]  # type: ignore[arg-type]

    def with_headers(*extra: tuple[str, str], drop: str = "") -> list[tuple[str, str]]:
        return [h for h in base_headers if h[0] != drop] + list(extra)

    base = key()
    for change in ({"skill": "t"}, {"method": "PUT"}, {"scheme": "http"}, {"host": "g"},
                   {"port": 8443}, {"path": "/q"}, {"query": "a=2"}, {"body": b"y"},
                   {"headers": with_headers(("Content-Type", "application/json"),
                                            drop="Content-Type")},
                   {"headers": with_headers(("Stripe-Account", "acct_evil"),
                                            drop="Stripe-Account")},  # another account
                   {"headers": with_headers(drop="Stripe-Account")},  # the account left out
                   {"headers": with_headers(("X-HTTP-Method-Override", "DELETE"))},
                   {"headers": with_headers(("Cookie", "session=other"))},
                   {"headers": with_headers(("Stripe-Account", "acct_2"))},  # a second value
                   {"ignore": []}):  # the credential header counts unless egress injects it
        assert key(**change) != base, change
    # What a retry may change without changing what the request does: the same request.
    same = [with_headers(("Idempotency-Key", "k2"), drop="Idempotency-Key"),
            with_headers(("Date", "Tue, 01 Dec 2026 10:00:00 GMT"), ("User-Agent", "x/2"),
                         ("traceparent", "00-abc-def-01"), ("X-Stainless-Retry-Count", "1")),
            with_headers(("Authorization", "Bearer injected-2"), drop="Authorization"),
            [(k.lower(), v) for k, v in reversed(base_headers)]]  # case and order of names
    for headers in same:
        assert key(headers=headers) == base, headers
    assert request_key(skill="s", method="POST", scheme="https", host="h", port=443, path="/p",
                       query="", body=b"x", headers=[])[1] == (
        "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881")


async def test_retries_while_open_join_the_approval_and_are_counted() -> None:
    b = Book()
    ids = {(await b.book.hold(held(rid=f"r{i}"))).approval.id for i in range(3)}  # type: ignore[union-attr]
    assert len(ids) == 1
    [entry] = b.book.entries()
    assert entry.asked == 3 and len(b.records) == 1 and len(b.opened) == 1


async def test_a_denial_stands_for_valid_for_then_the_request_asks_again() -> None:
    b = Book()
    first = (await b.book.hold(held(valid_for=60))).approval
    assert first is not None
    b.book.decide(first.id, grant=False, by="bob (console)", note="no")
    denied = await b.book.hold(held(valid_for=60, rid="r2"))
    assert denied.outcome is Outcome.DENIED and denied.approval is first
    assert len(b.records) == 2  # asked once, denied once: the retry asked nobody
    b.clock.advance(61)
    later = await b.book.hold(held(valid_for=60, rid="r3"))
    assert later.outcome is Outcome.PENDING and later.approval is not None
    assert later.approval.previous == {"denied": 1}


async def test_approvals_nobody_decides_and_grants_nobody_uses_expire_audited() -> None:
    b = Book()
    pending = (await b.book.hold(held(valid_for=30))).approval
    granted = (await b.book.hold(held(b"other", valid_for=30))).approval
    assert pending is not None and granted is not None
    b.book.decide(granted.id, grant=True, by="alice")
    b.clock.advance(29)
    b.book.expire()
    assert pending.state is ApprovalState.PENDING
    b.clock.advance(2)
    b.book.expire()
    assert pending.state is granted.state is ApprovalState.EXPIRED
    expired = [r for r in b.records if r.reason == "approval_expired"]
    assert [(r.approval, r.decision, r.kind) for r in expired] == [
        (pending.id, "deny", "approval"), (granted.id, "deny", "approval")]
    assert expired[0].detail == "nobody decided within 30s"
    assert expired[1].detail == "approved by alice, not used within 30s"
    with pytest.raises(ApprovalConflict):
        b.book.decide(pending.id, grant=True, by="late")
    assert b.book.entries() == []


async def test_a_pending_approval_stays_open_at_least_as_long_as_its_wait() -> None:
    b = Book()
    task = asyncio.create_task(b.book.hold(held(wait=30, valid_for=10)))
    for _ in range(100):
        if b.book.entries():
            break
        await asyncio.sleep(0.01)
    [entry] = b.book.entries()
    assert entry.expires == b.clock.now + 30  # not 10: the request is held that long
    b.book.decide(entry.id, grant=False, by="x")
    assert (await asyncio.wait_for(task, 5)).outcome is Outcome.DENIED
    assert entry.expires == b.clock.now + 10  # a decision stands for valid_for


async def test_deciding_unknown_or_decided_approvals_is_refused() -> None:
    b = Book()
    entry = (await b.book.hold(held())).approval
    assert entry is not None
    with pytest.raises(ApprovalNotFound):
        b.book.decide("000000000000", grant=True, by="x")
    b.book.decide(entry.id, grant=False, by="x")
    with pytest.raises(ApprovalConflict, match="denied already"):
        b.book.decide(entry.id, grant=True, by="y")


async def test_open_approvals_are_capped_per_skill() -> None:
    b = Book(max_pending=2)
    outcomes = [(await b.book.hold(held(f"{i}".encode()))).outcome for i in range(3)]
    assert outcomes == [Outcome.PENDING, Outcome.PENDING, Outcome.FULL]
    assert (await b.book.hold(held(skill="other"))).outcome is Outcome.PENDING
    # A retry of an open one still joins it: the cap is on new approvals.
    assert (await b.book.hold(held(b"0"))).outcome is Outcome.PENDING


async def test_requests_held_at_once_are_capped_per_skill() -> None:
    """A skill cannot pile up held requests (each keeps its body in memory) by sending the
    identical request over many connections: at most max_pending wait at once."""
    b = Book(max_pending=2)
    waiting = [asyncio.create_task(b.book.hold(held(wait=30, rid=f"r{i}"))) for i in range(2)]
    for _ in range(200):
        if b.book.held_count("payer") == 2:
            break
        await asyncio.sleep(0.01)
    assert b.book.held_count("payer") == 2
    third = await b.book.hold(held(wait=30, rid="r3"))
    assert third.outcome is Outcome.FULL
    assert (await b.book.hold(held(wait=0.01, skill="other"))).outcome is Outcome.PENDING
    [entry] = [e for e in b.book.entries() if e.request.skill == "payer"]
    assert entry.asked == 2  # the refused one did not join
    b.book.decide(entry.id, grant=False, by="alice")
    answers = await asyncio.wait_for(asyncio.gather(*waiting), 5)
    assert [a.outcome for a in answers] == [Outcome.DENIED, Outcome.DENIED]
    assert b.book.held_count("payer") == 0
    # A decided request answers at once, so the cap does not stand in its way.
    blockers = [asyncio.create_task(b.book.hold(held(b"{}", wait=30, rid=f"b{i}")))
                for i in range(2)]
    for _ in range(200):
        if b.book.held_count("payer") == 2:
            break
        await asyncio.sleep(0.01)
    assert (await b.book.hold(held(wait=30, rid="r4"))).outcome is Outcome.DENIED
    for task in blockers:
        task.cancel()
    await asyncio.gather(*blockers, return_exceptions=True)
    assert b.book.held_count("payer") == 0


async def test_nobody_can_decide_without_the_admin_endpoint() -> None:
    b = Book()
    b.book.available = False
    assert (await b.book.hold(held())).outcome is Outcome.UNAVAILABLE
    assert b.records == [] and b.book.entries() == []


async def test_a_grant_is_kept_for_the_retry_when_the_client_left() -> None:
    b = Book()
    entry = (await b.book.hold(held())).approval
    assert entry is not None
    b.book.decide(entry.id, grant=True, by="alice")
    gone = await b.book.hold(held(rid="r2"), alive=lambda: False)
    assert gone.outcome is Outcome.PENDING and entry.state is ApprovalState.GRANTED
    assert (await b.book.hold(held(rid="r3"))).outcome is Outcome.FORWARD


async def test_two_identical_held_requests_and_one_grant_send_one() -> None:
    b = Book()
    tasks = [asyncio.create_task(b.book.hold(held(wait=0.5, rid=f"r{i}"))) for i in range(2)]
    for _ in range(100):
        if b.book.entries() and b.book.entries()[0].asked == 2:
            break
        await asyncio.sleep(0.01)
    [entry] = b.book.entries()
    b.book.decide(entry.id, grant=True, by="alice")
    answers = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert sorted(a.outcome for a in answers) == [Outcome.FORWARD, Outcome.PENDING]
    late = next(a for a in answers if a.outcome is Outcome.PENDING)
    assert late.approval is not None and late.approval.id != entry.id  # asks anew


async def test_a_failing_notifier_does_not_break_the_request_path() -> None:
    b = Book()

    def broken(entry: object) -> None:
        raise RuntimeError("webhook down")

    b.book.on_open = broken
    assert (await b.book.hold(held())).outcome is Outcome.PENDING


async def test_listeners_hear_of_every_change() -> None:
    b = Book()
    with b.book.subscribe() as changes:
        entry = (await b.book.hold(held())).approval
        assert entry is not None
        await asyncio.wait_for(changes.get(), 1)
        b.book.decide(entry.id, grant=False, by="x")
        await asyncio.wait_for(changes.get(), 1)
        assert changes.empty()


async def test_what_people_type_is_cut_and_made_visible() -> None:
    b = Book()
    entry = (await b.book.hold(held())).approval
    assert entry is not None
    b.book.decide(entry.id, grant=True, by="  eve\u202e  ", note="x" * 900 + "\x1b")
    assert entry.decided_by == "eve\\u202e"
    assert entry.note is not None and len(entry.note) == 500
    described = entry.describe()
    assert described["decided_by"] == "eve\\u202e" and described["state"] == "granted"
    assert described["body"] == '{\n  "amount": 1\n}' and described["body_kind"] == "json"
