"""The audit budget, on plain records with a fake clock (egress/audit_fold.py)."""

from __future__ import annotations

import pytest

from egress.audit import AuditRecord
from egress.audit.fold import Budget, DenialFolder
from egress.ops.ratelimit import RateLimiter
from egress.policy.load import load_policy_texts
from egress.policy.model import AuditSettings, Limits
from tests.fakes import FakeClock


def deny(host: str = "evil.test", *, skill: str | None = "mallory", path: str | None = "/x",
         reason: str = "host_not_allowed", ts: str = "2025-01-01T00:00:00.000Z",
         decision: str = "deny", client: str = "127.0.0.1:1") -> AuditRecord:
    return AuditRecord(decision=decision, reason=reason, kind="http", host=host, port=443,
                       skill=skill, method="GET", path=path, ts=ts, client=client)


def feed(folder: DenialFolder, records: list[AuditRecord]) -> list[AuditRecord]:
    out: list[AuditRecord] = []
    for r in records:
        out += folder.admit(r)
    return out


def test_within_the_budget_every_denial_is_written() -> None:
    folder = DenialFolder(Budget(lines=5, interval=60, distinct=2), clock=FakeClock())
    records = [deny() for _ in range(5)]
    assert feed(folder, records) == records
    assert folder.flush() == [] and folder.folded == 0


def test_past_the_budget_identical_denials_fold_into_one_summary() -> None:
    clock = FakeClock()
    folder = DenialFolder(Budget(lines=3, interval=60, distinct=10), clock=clock)
    stamps = [f"2025-01-01T00:00:{i:02d}.000Z" for i in range(10)]
    written = feed(folder, [deny(ts=t, client=f"127.0.0.1:{i}") for i, t in enumerate(stamps)])
    assert len(written) == 3  # the budget; then 7 identical ones fold
    assert folder.folded == 7
    assert folder.due() == []  # the interval has not ended
    clock.now += 60
    [summary] = folder.due()
    assert (summary.folded, summary.first_seen, summary.last_seen) == (7, stamps[3], stamps[9])
    assert (summary.host, summary.path, summary.reason, summary.skill) == (
        "evil.test", "/x", "host_not_allowed", "mallory")
    assert summary.client is None and summary.id != written[0].id
    assert summary.detail == "7 identical denials folded (audit budget of 3 denial lines per 60s exceeded)"
    assert len(written) + summary.folded == 10
    assert folder.summaries == 1


def test_the_first_occurrence_of_each_distinct_denial_is_written_in_full() -> None:
    folder = DenialFolder(Budget(lines=2, interval=60, distinct=3), clock=FakeClock())
    flood = [deny()] * 5 + [deny("a.test"), deny("b.test"), deny(path="/other")] + [deny("a.test")] * 4
    written = feed(folder, flood)
    assert [(r.host, r.path) for r in written] == [
        ("evil.test", "/x"), ("evil.test", "/x"), ("a.test", "/x"), ("b.test", "/x"),
        ("evil.test", "/other")]
    summaries = folder.flush()
    assert {(s.host, s.folded) for s in summaries} == {("evil.test", 3), ("a.test", 4)}
    assert len(written) + sum(s.folded or 0 for s in summaries) == len(flood)


def test_a_spray_of_distinct_denials_past_the_cap_folds_coarsely() -> None:
    folder = DenialFolder(Budget(lines=2, interval=60, distinct=3), clock=FakeClock())
    flood = [deny(f"h{i}.test") for i in range(50)]
    written = feed(folder, flood)
    assert [r.host for r in written] == [f"h{i}.test" for i in range(5)]
    [coarse] = folder.flush()
    assert (coarse.host, coarse.port, coarse.path, coarse.folded) == ("*", 0, None, 45)
    assert coarse.reason == "host_not_allowed" and coarse.skill == "mallory"
    assert coarse.detail is not None and "h5.test:443, h6.test:443" in coarse.detail


def test_budgets_are_per_skill_and_unauthenticated_clients_share_one() -> None:
    folder = DenialFolder(Budget(lines=2, interval=60, distinct=1), clock=FakeClock())
    written = feed(folder, [deny(skill="a")] * 3 + [deny(skill="b")] * 3
                   + [deny(skill=None, reason="auth_invalid")] * 3)
    assert [r.skill for r in written] == ["a", "a", "b", "b", None, None]
    assert sorted((s.skill or "-", s.folded) for s in folder.flush()) == [
        ("-", 1), ("a", 1), ("b", 1)]


def test_allowed_lines_are_never_budgeted() -> None:
    folder = DenialFolder(Budget(lines=1, interval=60, distinct=1), clock=FakeClock())
    allowed = [deny(decision="allow", reason="allowed")] * 10
    assert feed(folder, allowed) == allowed


def test_report_mode_would_be_denials_are_budgeted_like_denials() -> None:
    folder = DenialFolder(Budget(lines=1, interval=60, distinct=1), clock=FakeClock())
    assert len(feed(folder, [deny(decision="report")] * 4)) == 1
    assert [s.folded for s in folder.flush()] == [3]


def test_a_new_interval_starts_a_new_budget_and_writes_summaries_first() -> None:
    clock = FakeClock()
    folder = DenialFolder(Budget(lines=1, interval=10, distinct=1), clock=clock)
    assert len(feed(folder, [deny()] * 4)) == 1
    clock.now += 10
    out = folder.admit(deny(path="/late"))
    assert [(r.folded, r.path) for r in out] == [(3, "/x"), (None, "/late")]


def test_budget_settings_are_read_with_defaults() -> None:
    assert AuditSettings() .budget == 60
    policy = load_policy_texts([("p.yaml", "settings:\n  audit: {budget: 10, budget_interval: 30s,"
                                           " budget_distinct: 5}\nskills: {}\n")])
    a = policy.settings.audit
    assert (a.budget, a.budget_interval, a.budget_distinct) == (10, 30.0, 5)


@pytest.mark.parametrize("text, message", [
    pytest.param("budget: 0", "settings.audit.budget: must be between 1 and 1000000 (lines per "
                              "skill per interval)", id="zero budget"),
    pytest.param("budget_interval: 0s", "settings.audit.budget_interval: must be between 1s "
                                        "and 1d", id="zero interval"),
    pytest.param("budget_distinct: many", "settings.audit.budget_distinct: must be a whole "
                                          "number", id="not a number"),
])
def test_bad_budget_settings_name_the_field(text: str, message: str) -> None:
    from egress.errors import PolicyErrors

    with pytest.raises(PolicyErrors) as exc:
        load_policy_texts([("p.yaml", f"settings:\n  audit: {{{text}}}\nskills: {{}}\n")])
    assert [f"{e.field}: {e.message}" for e in exc.value.errors] == [message]


def test_denials_take_tokens_from_the_skill_bucket() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    limits = Limits(requests_per_minute=3)
    for _ in range(3):
        limiter.charge("s", limits)
    assert limiter.admit("c", "s", limits) is not None  # refused: the denials used the budget
    limiter.charge("s", None)  # no limit: nothing to charge, no error
