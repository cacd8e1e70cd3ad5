"""Policy additions for operations: `limits` (skill and rule) and `settings.audit` rotation."""

from __future__ import annotations

import textwrap

import pytest

from egress.errors import PolicyErrors
from egress.policy.load import load_policy_texts
from egress.policy.model import AuditSettings, Limits
from egress.policy.units import format_duration, parse_duration, parse_size


def load(text: str):  # type: ignore[no-untyped-def]
    return load_policy_texts([("p.yaml", textwrap.dedent(text))])


def errors(text: str) -> list[str]:
    with pytest.raises(PolicyErrors) as info:
        load(text)
    return [str(e) for e in info.value.errors]


def test_limits_on_a_skill_and_a_rule() -> None:
    policy = load("""
        skills:
          s:
            limits: {requests_per_minute: 60, concurrent_connections: 4}
            allow:
              - host: a.test
                limits: {requests_per_minute: 5}
              - host: b.test
        """)
    skill = policy.skills["s"]
    assert skill.limits == Limits(requests_per_minute=60, concurrent_connections=4)
    assert [r.limits for r in skill.rules] == [Limits(requests_per_minute=5), None]


def test_limits_survive_the_global_report_default() -> None:
    policy = load("""
        settings: {mode: report}
        skills:
          s: {limits: {concurrent_connections: 2}}
        """)
    assert policy.skills["s"].limits == Limits(concurrent_connections=2)


@pytest.mark.parametrize("text, expected", [
    pytest.param("skills: {s: {limits: {}}}",
                 ["p.yaml:1: skills.s.limits: empty; set requests_per_minute and/or "
                  "concurrent_connections"], id="empty limits"),
    pytest.param("skills: {s: {limits: 10}}",
                 ["p.yaml:1: skills.s.limits: must be a mapping (key: value)"], id="not a mapping"),
    pytest.param("skills: {s: {limits: {requests_per_minute: 0}}}",
                 ["p.yaml:1: skills.s.limits.requests_per_minute: must be between 1 and "
                  "1000000; leave it out for no limit"], id="zero"),
    pytest.param("skills: {s: {limits: {concurrent_connections: ten}}}",
                 ["p.yaml:1: skills.s.limits.concurrent_connections: must be a whole number"],
                 id="not a number"),
    pytest.param("skills: {s: {limits: {requests_per_minute: true}}}",
                 ["p.yaml:1: skills.s.limits.requests_per_minute: must be a whole number"],
                 id="a boolean is not a number"),
    pytest.param("skills: {s: {limits: {burst: 3}}}",
                 ["p.yaml:1: skills.s.limits.burst: unknown key; expected one of: "
                  "requests_per_minute, concurrent_connections"], id="unknown key"),
    pytest.param("skills:\n  s:\n    allow:\n      - host: a.test\n        limits: {requests_per_minute: -1}\n",
                 ["p.yaml:5: skills.s.allow[0].limits.requests_per_minute: must be between 1 "
                  "and 1000000; leave it out for no limit"], id="rule limit"),
])
def test_limit_errors(text: str, expected: list[str]) -> None:
    assert errors(text) == expected


@pytest.mark.parametrize("text, expected", [
    pytest.param("{}", AuditSettings(), id="defaults: 100 MiB, 10 files, no age"),
    pytest.param("{max_bytes: 10MB, max_files: 3, max_age: 1d}",
                 AuditSettings(max_bytes=10_000_000, max_files=3, max_age=86400.0), id="units"),
    pytest.param("{max_bytes: 1048576, max_age: 3600}",
                 AuditSettings(max_bytes=1048576, max_age=3600.0), id="plain numbers"),
    pytest.param("{max_bytes: 0, log_allowed: true}",
                 AuditSettings(max_bytes=0, log_allowed=True), id="zero turns size rotation off"),
])
def test_audit_rotation_settings(text: str, expected: AuditSettings) -> None:
    assert load(f"settings:\n  audit: {text}\n").settings.audit == expected


@pytest.mark.parametrize("text, expected", [
    pytest.param("{max_bytes: lots}", ["p.yaml:2: settings.audit.max_bytes: 'lots' is not a "
                                       "size; write e.g. 100MB, 64MiB or 500000"], id="bad size"),
    pytest.param("{max_files: 0}", ["p.yaml:2: settings.audit.max_files: must be between 1 and "
                                    "1000"], id="no files"),
    pytest.param("{max_age: 10s}", ["p.yaml:2: settings.audit.max_age: must be at least 1m"],
                 id="too young"),
    pytest.param("{max_age: soon}", ["p.yaml:2: settings.audit.max_age: 'soon' is not a "
                                     "duration; write e.g. 30s, 15m, 1h30m or 7d"], id="bad age"),
    pytest.param("{max_age: [1]}", ["p.yaml:2: settings.audit.max_age: must be a duration such "
                                    "as 1d"], id="a list"),
    pytest.param("{rotate: yes}", ["p.yaml:2: settings.audit.rotate: unknown key; expected one "
                                   "of: log_allowed, max_bytes, max_files, max_age, budget, "
                                   "budget_interval, budget_distinct, ship, spool_max_bytes, "
                                   "ship_degraded_after"], id="unknown"),
])
def test_audit_setting_errors(text: str, expected: list[str]) -> None:
    assert errors(f"settings:\n  audit: {text}\n") == expected


@pytest.mark.parametrize("text, size", [
    pytest.param("500", 500, id="bytes"),
    pytest.param("500k", 500_000, id="kilo"),
    pytest.param("100MB", 100_000_000, id="mega, decimal"),
    pytest.param("64MiB", 64 * 2**20, id="mebi, binary"),
    pytest.param("1gib", 2**30, id="case-insensitive"),
])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text, seconds", [
    pytest.param("90", 90.0, id="plain seconds"),
    pytest.param("90s", 90.0, id="seconds"),
    pytest.param("15m", 900.0, id="minutes"),
    pytest.param("1h30m", 5400.0, id="compound"),
    pytest.param("7d", 604800.0, id="days"),
    pytest.param("1w", 604800.0, id="weeks"),
    pytest.param("250ms", 0.25, id="milliseconds"),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "1x", "1h 30m", "-5m", "h1"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("seconds, text", [(5400, "1h30m"), (86400, "1d"), (59, "59s"), (0, "0s")])
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds
