"""Metrics: exact Prometheus text, bounded labels, snapshot families."""

from __future__ import annotations

import pytest

from egress.ops.metrics import Metrics, Snapshot, render_family
from egress.secrets import CacheStats
from tests.ops.conftest import parse_metrics, series


def test_decision_counter_text() -> None:
    m = Metrics()
    m.decision("deny", "host_not_allowed", "alpha", "evil.test")
    m.decision("deny", "host_not_allowed", "alpha", "evil.test")
    m.decision("allow", "allowed", "alpha", "api.test")
    assert render_family(m.decisions) == (
        "# HELP egress_decisions_total Decisions by skill, decision (allow, deny, report) and "
        "reason code.\n"
        "# TYPE egress_decisions_total counter\n"
        'egress_decisions_total{skill="alpha",decision="allow",reason="allowed"} 1\n'
        'egress_decisions_total{skill="alpha",decision="deny",reason="host_not_allowed"} 2\n'
    )
    assert 'host="api.test"' not in m.render(Snapshot())  # allowed hosts are never labels


def test_histogram_is_cumulative() -> None:
    m = Metrics()
    for seconds in (0.0001, 0.003, 0.003, 20.0):
        m.observe_latency("connect", seconds)
    values = parse_metrics(render_family(m.latency))
    assert values[series("egress_decision_seconds_bucket", kind="connect", le="0.0005")] == 1
    assert values[series("egress_decision_seconds_bucket", kind="connect", le="0.0025")] == 1
    assert values[series("egress_decision_seconds_bucket", kind="connect", le="0.005")] == 3
    assert values[series("egress_decision_seconds_bucket", kind="connect", le="10")] == 3
    assert values[series("egress_decision_seconds_bucket", kind="connect", le="+Inf")] == 4
    assert values[series("egress_decision_seconds_count", kind="connect")] == 4
    assert values[series("egress_decision_seconds_sum", kind="connect")] == pytest.approx(20.0061)


def test_denied_hosts_are_capped() -> None:
    m = Metrics(max_denied_hosts=2)
    for host in ("a.test", "b.test", "c.test", "d.test", "a.test"):
        m.decision("deny", "host_not_allowed", "s", host)
    values = parse_metrics(render_family(m.denied_hosts))
    assert values == {
        series("egress_denied_hosts_total", skill="s", host="_other"): 2,
        series("egress_denied_hosts_total", skill="s", host="a.test"): 2,
        series("egress_denied_hosts_total", skill="s", host="b.test"): 1,
    }


def test_unauthenticated_denials_name_no_host() -> None:
    m = Metrics(max_denied_hosts=1)
    m.decision("deny", "auth_required", None, "scanner-1.test")
    m.decision("deny", "host_not_allowed", "s", "real.test")
    values = parse_metrics(m.render(Snapshot()))
    assert values[series("egress_denied_hosts_total", skill="s", host="real.test")] == 1
    assert values[series("egress_auth_failures_total", reason="auth_required")] == 1
    assert values[series("egress_decisions_total", skill="", decision="deny",
                         reason="auth_required")] == 1
    assert not any("scanner-1.test" in key for key in values)


def test_series_are_capped_per_family() -> None:
    m = Metrics(max_series=2)
    for skill in ("a", "b", "c", "d"):
        m.decision("allow", "allowed", skill, None)
    values = parse_metrics(render_family(m.decisions))
    assert values[series("egress_decisions_total", skill="_other", decision="_other",
                         reason="_other")] == 2
    assert len(values) == 3


@pytest.mark.parametrize("value, rendered", [
    pytest.param('a"b', 'a\\"b', id="quote"),
    pytest.param("a\\b", "a\\\\b", id="backslash"),
    pytest.param("a\nb", "a\\nb", id="newline"),
])
def test_label_values_are_escaped(value: str, rendered: str) -> None:
    m = Metrics()
    m.decision("deny", "host_not_allowed", "s", value)
    assert f'host="{rendered}"' in render_family(m.denied_hosts)


def test_snapshot_families() -> None:
    snap = Snapshot(policy_digest="abc123", reloads_ok=3, reloads_failed=1, reload_failing=True,
                    open_connections={"alpha": 2, "": 1},
                    secrets=CacheStats(fetches=4, failures=1, hits=10, stale_uses=2),
                    audit_lines=7, audit_write_errors=0, audit_rotations=1, token_store_ok=True)
    values = parse_metrics(Metrics().render(snap))
    assert values[series("egress_policy_info", digest="abc123")] == 1
    assert values[series("egress_policy_reloads_total", result="ok")] == 3
    assert values[series("egress_policy_reloads_total", result="failed")] == 1
    assert values["egress_policy_reload_failing"] == 1
    assert values[series("egress_open_connections", skill="alpha")] == 2
    assert values[series("egress_open_connections", skill="")] == 1
    assert values["egress_secret_fetches_total"] == 4
    assert values["egress_secret_fetch_failures_total"] == 1
    assert values["egress_secret_cache_hits_total"] == 10
    assert values["egress_secret_stale_uses_total"] == 2
    assert values["egress_audit_lines_total"] == 7
    assert values["egress_audit_rotations_total"] == 1
    assert values["egress_token_store_ok"] == 1


def test_every_family_has_help_and_type() -> None:
    text = Metrics().render(Snapshot(policy_digest="d", secrets=CacheStats()))
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}
    types = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert names == types
    assert len(names) == 21  # + egress_audit_folded_total, egress_audit_summaries_total
