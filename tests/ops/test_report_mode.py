"""Report mode: would-be denials are allowed and recorded; safety checks are never relaxed."""

from __future__ import annotations

import socket

import pytest

from egress.policy.decide import Destination, Verdict, decide
from egress.policy.load import load_policy_texts
from egress.reasons import Reason
from tests.clients import basic, read_response
from tests.ops.conftest import OpsWorld, audit_where, connect_status, get, tunnel


def test_report_mode_allows_and_records_what_enforce_would_deny(ops: OpsWorld) -> None:
    with tunnel(ops, "reporter", "other.test") as tls:
        resp = get(tls, "other.test")
    assert resp.status == 200
    assert resp.json()["path"] == "/echo"
    [record] = audit_where(ops.proxy, skill="reporter", host="other.test")
    assert record["decision"] == "report"
    assert record["reason"] == "host_not_allowed"
    assert record["kind"] == "connect"
    assert record["port"] == ops.tls.port
    assert record["resolved"] == "127.0.0.2"
    assert len(record["policy"]) == 16  # the digest of the policy that decided


def test_report_mode_records_a_port_the_policy_does_not_list(ops: OpsWorld) -> None:
    # plain.allowed.test resolves to the upstream; the plain-HTTP port is not in the policy.
    resp = connect_status(ops, "reporter", f"api.allowed.test:{ops.plain.port}")
    assert resp.status == 200
    [record] = audit_where(ops.proxy, skill="reporter", port=ops.plain.port)
    assert (record["decision"], record["reason"]) == ("report", "port_not_allowed")


def test_allowed_host_in_report_mode_is_a_plain_allow(ops: OpsWorld) -> None:
    with tunnel(ops, "reporter", "api.allowed.test") as tls:
        assert get(tls, "api.allowed.test").status == 200
    records = audit_where(ops.proxy, skill="reporter", host="api.allowed.test",
                          port=ops.tls.port)
    assert [(r["decision"], r["reason"]) for r in records] == [("allow", "allowed")]


@pytest.mark.parametrize("target, detail", [
    pytest.param("metadata.test:80", "169.254.169.254", id="name resolving to the metadata address"),
    pytest.param("169.254.169.254:80", "169.254.169.254", id="metadata address literal"),
    pytest.param("loop.test:{tls}", "127.0.0.1", id="name resolving to loopback"),
    pytest.param("127.0.0.1:{proxy}", "127.0.0.1", id="egress itself"),
])
def test_blocked_addresses_are_never_relaxed_by_report_mode(ops: OpsWorld, target: str,
                                                            detail: str) -> None:
    target = target.format(tls=ops.tls.port, proxy=ops.proxy.port)
    resp = connect_status(ops, "reporter", target)
    assert resp.status == 403
    body = resp.json()
    assert body["reason"] == "blocked_address"
    record = ops.proxy.audit_for(body["request_id"])
    assert (record["decision"], record["reason"], record["skill"]) == (
        "deny", "blocked_address", "reporter")
    assert detail in record["detail"]
    assert "resolved" not in record  # nothing was dialled


@pytest.mark.parametrize("token, reason", [
    pytest.param("egr_wrong", "auth_invalid", id="wrong token"),
    pytest.param(None, "auth_required", id="no credentials"),
])
def test_auth_failures_are_never_relaxed_by_report_mode(ops: OpsWorld, token: str | None,
                                                        reason: str) -> None:
    real = ops.proxy.tokens["reporter"]
    target = f"other.test:{ops.tls.port}"
    head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
    if token is not None:
        head += f"Proxy-Authorization: {basic('reporter', token)}\r\n"
    with socket.create_connection(ops.addr, timeout=10) as sock:
        sock.sendall((head + "\r\n").encode())
        resp = read_response(sock)
    assert resp.status == 407
    record = ops.proxy.audit_for(resp.request_id)
    assert (record["decision"], record["reason"], record["skill"]) == ("deny", reason, None)
    assert real not in str(record)


def test_rate_limit_in_report_mode_is_recorded_not_enforced(ops: OpsWorld) -> None:
    first = connect_status(ops, "lavish", f"api.allowed.test:{ops.tls.port}")
    second = connect_status(ops, "lavish", f"api.allowed.test:{ops.tls.port}")
    assert (first.status, second.status) == (200, 200)
    records = audit_where(ops.proxy, skill="lavish")
    assert [(r["decision"], r["reason"]) for r in records] == [
        ("allow", "allowed"), ("report", "rate_limited")]


GLOBAL_REPORT = """
settings:
  mode: report
skills:
  inherits:
    allow: [{host: a.test}]
  enforcing:
    mode: enforce
    allow: [{host: a.test}]
"""


@pytest.mark.parametrize("skill, verdict, reason", [
    pytest.param("inherits", Verdict.REPORT, Reason.HOST_NOT_ALLOWED, id="global report default applies"),
    pytest.param("enforcing", Verdict.DENY, Reason.HOST_NOT_ALLOWED, id="a skill's own mode wins"),
    pytest.param("nobody", Verdict.DENY, Reason.UNKNOWN_SKILL, id="no policy is never relaxed"),
])
def test_global_report_default(skill: str, verdict: Verdict, reason: Reason) -> None:
    policy = load_policy_texts([("p.yaml", GLOBAL_REPORT)])
    decision = decide(policy, skill, Destination("b.test", 443))
    assert (decision.verdict, decision.reason) == (verdict, reason)
