"""Rate limits: the token bucket and slots (pure, with a fake clock) and 429s end to end."""

from __future__ import annotations

import pytest

from egress.ops.ratelimit import Bucket, Exceeded, RateLimiter, refill
from egress.policy.model import Limits
from tests.ops.conftest import (
    OpsWorld,
    audit_where,
    connect_status,
    policy_text,
    rule_line,
    tunnel,
    wait_until,
)
from tests.fakes import FakeClock


@pytest.mark.parametrize("bucket, per_minute, now, tokens", [
    pytest.param(None, 60, 5.0, 60.0, id="a new bucket starts full"),
    pytest.param(Bucket(0.0, 0.0), 60, 1.0, 1.0, id="60 per minute refills one a second"),
    pytest.param(Bucket(0.0, 0.0), 6, 5.0, 0.5, id="6 per minute refills one every 10s"),
    pytest.param(Bucket(3.0, 0.0), 6, 600.0, 6.0, id="never above the limit"),
    pytest.param(Bucket(2.0, 10.0), 6, 5.0, 2.0, id="a clock going back adds nothing"),
])
def test_refill(bucket: Bucket | None, per_minute: int, now: float, tokens: float) -> None:
    assert refill(bucket, per_minute, now) == Bucket(tokens, now)


def test_requests_per_minute_burst_then_refill() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    limits = Limits(requests_per_minute=3)
    results = [limiter.admit("c1", "s", limits) for _ in range(4)]
    assert results == [None, None, None, Exceeded("skill", "requests_per_minute", 3)]
    clock.now += 19.9  # 3 per minute: one token every 20 seconds
    assert limiter.admit("c1", "s", limits) is not None
    clock.now += 0.2
    assert limiter.admit("c1", "s", limits) is None
    assert limiter.admit("c1", "s", limits) is not None


def test_refused_requests_take_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    skill = Limits(requests_per_minute=10)
    rule = Limits(requests_per_minute=1)
    assert limiter.admit("c", "s", skill, "r", rule) is None
    assert limiter.admit("c", "s", skill, "r", rule) == Exceeded("rule r", "requests_per_minute", 1)
    # The skill bucket lost only the admitted request: 9 more to other rules.
    assert [limiter.admit("c", "s", skill, "other", None) for _ in range(10)].count(None) == 9


def test_concurrent_connections_slot_per_connection() -> None:
    limiter = RateLimiter(FakeClock())
    limits = Limits(concurrent_connections=2)
    assert limiter.admit("c1", "s", limits) is None
    assert limiter.admit("c1", "s", limits) is None  # same connection: same slot
    assert limiter.admit("c2", "s", limits) is None
    assert limiter.admit("c3", "s", limits) == Exceeded("skill", "concurrent_connections", 2)
    assert limiter.open_connections("s") == 2
    limiter.release("c1")
    assert limiter.admit("c3", "s", limits) is None
    limiter.release("never-seen")  # harmless
    assert limiter.open_connections("s") == 2


def test_skills_do_not_share_buckets() -> None:
    limiter = RateLimiter(FakeClock())
    limits = Limits(requests_per_minute=1)
    assert limiter.admit("c", "a", limits) is None
    assert limiter.admit("c", "b", limits) is None
    assert limiter.admit("c", "a", limits) is not None


def test_report_mode_counts_but_never_refuses() -> None:
    limiter = RateLimiter(FakeClock())
    limits = Limits(requests_per_minute=1, concurrent_connections=1)
    assert limiter.admit("c1", "s", limits, enforce=False) is None
    assert limiter.admit("c2", "s", limits, enforce=False) == Exceeded(
        "skill", "concurrent_connections", 1)
    assert limiter.open_connections("s") == 2  # counted although over the limit


def test_limit_added_later_sees_connections_already_open() -> None:
    limiter = RateLimiter(FakeClock())
    assert limiter.admit("c1", "s", None) is None
    assert limiter.admit("c2", "s", Limits(concurrent_connections=1)) is not None


@pytest.mark.parametrize("exceeded, detail", [
    pytest.param(Exceeded("skill", "requests_per_minute", 60),
                 "skill limit of 60 requests per minute reached", id="skill rate"),
    pytest.param(Exceeded("rule p.yaml:4 api.test", "concurrent_connections", 2),
                 "rule p.yaml:4 api.test limit of 2 concurrent connections reached", id="rule slots"),
])
def test_exceeded_detail(exceeded: Exceeded, detail: str) -> None:
    assert exceeded.detail == detail


# -- end to end ----------------------------------------------------------------------------

def test_429_after_the_requests_per_minute_limit(ops: OpsWorld) -> None:
    target = f"api.allowed.test:{ops.tls.port}"
    statuses = [connect_status(ops, "limited", target).status for _ in range(2)]
    refused = connect_status(ops, "limited", target)
    assert statuses == [200, 200]
    assert refused.status == 429
    assert refused.headers["retry-after"] == "60"
    body = refused.json()
    assert body["reason"] == "rate_limited"
    assert body["skill"] == "limited"
    assert "exceeded its request rate" in body["message"]
    record = ops.proxy.audit_for(body["request_id"])
    assert (record["decision"], record["reason"]) == ("deny", "rate_limited")
    assert record["detail"] == "skill limit of 2 requests per minute reached"
    assert "resolved" not in record  # refused before DNS and before any connection


def test_429_when_too_many_connections_are_open(ops: OpsWorld) -> None:
    target = f"api.allowed.test:{ops.tls.port}"
    with tunnel(ops, "single", "api.allowed.test"):
        refused = connect_status(ops, "single", target)
        assert refused.status == 429
        record = ops.proxy.audit_for(refused.json()["request_id"])
        assert record["detail"] == "skill limit of 1 concurrent connections reached"
    # The slot comes back when egress sees the tunnel close.
    wait_until(lambda: connect_status(ops, "single", target).status == 200)


def test_rule_limit_applies_to_its_rule_only(ops: OpsWorld) -> None:
    text = policy_text(ops.dns, ops.tls, ops.plain)
    line = rule_line(text, "api.allowed.test", "ruled")
    api, other = f"api.allowed.test:{ops.tls.port}", f"other.test:{ops.tls.port}"
    assert connect_status(ops, "ruled", api).status == 200
    refused = connect_status(ops, "ruled", api)
    assert refused.status == 429
    assert [connect_status(ops, "ruled", other).status for _ in range(3)] == [200, 200, 200]
    [record] = audit_where(ops.proxy, skill="ruled", reason="rate_limited")
    assert record["detail"] == (f"rule {ops.policy_file}:{line} api.allowed.test "
                                f"limit of 1 requests per minute reached")
