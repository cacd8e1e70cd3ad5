"""`approval:` on a rule and `settings.approvals`: loading, every problem with its line and
fix, and the decision that an approval rule cannot be bypassed by a wider rule."""

from __future__ import annotations

import textwrap

import pytest

from egress.errors import PolicyErrors
from egress.policy.decide import Destination, Verdict, decide
from egress.policy.load import load_policy_texts
from egress.policy.model import Approval, ApprovalNotify, ApprovalSettings


def load(text: str):  # type: ignore[no-untyped-def]
    return load_policy_texts([("p.yaml", textwrap.dedent(text))])


def rule_with(approval: str) -> str:
    return f"""
        skills:
          s:
            allow:
              - host: api.example.com
                methods: [POST]
                approval: {approval}
        """


@pytest.mark.parametrize("written, expected", [
    pytest.param("true", Approval(), id="true: the defaults"),
    pytest.param("{}", Approval(), id="empty mapping: the defaults"),
    pytest.param("false", None, id="false: none"),
    pytest.param("{wait: 5}", Approval(wait=5.0), id="wait only"),
    pytest.param("{wait: 0, valid_for: 10m}", Approval(wait=0.0, valid_for=600.0),
                 id="wait 0 (428 at once), a duration"),
    pytest.param("{valid_for: 1h}", Approval(valid_for=3600.0), id="valid_for only"),
])
def test_rule_approval_is_read(written: str, expected: Approval | None) -> None:
    [rule] = load(rule_with(written)).skills["s"].rules
    assert rule.approval == expected
    assert rule.needs_interception


def test_an_approval_alone_makes_a_host_intercepted() -> None:
    [rule] = load("""
        skills:
          s:
            allow:
              - host: api.example.com
                approval: true
        """).skills["s"].rules
    assert rule.methods is None and rule.approval == Approval() and rule.needs_interception


@pytest.mark.parametrize("written, message", [
    pytest.param("{wait: -1}", "p.yaml:7: skills.s.allow[0].approval.wait: -1 is negative",
                 id="negative wait"),
    pytest.param("{wait: 601}", "p.yaml:7: skills.s.allow[0].approval.wait: must be between "
                                "0s and 600s", id="wait too long"),
    pytest.param("{valid_for: 5}", "p.yaml:7: skills.s.allow[0].approval.valid_for: must be "
                                   "between 10s and 604800s", id="valid_for too short"),
    pytest.param("{wait: soon}", "p.yaml:7: skills.s.allow[0].approval.wait: 'soon' is not a "
                                 "duration", id="not a duration"),
    pytest.param("{timeout: 5}", "p.yaml:7: skills.s.allow[0].approval.timeout: unknown key; "
                                 "expected one of: wait, valid_for", id="unknown key"),
    pytest.param("yes please", "p.yaml:7: skills.s.allow[0].approval: must be true, or a "
                               "mapping such as {wait: 20, valid_for: 600}", id="a string"),
])
def test_bad_rule_approvals_name_line_field_and_fix(written: str, message: str) -> None:
    with pytest.raises(PolicyErrors) as err:
        load(rule_with(written))
    assert str(err.value).startswith(message)


def test_raw_tcp_cannot_go_with_an_approval() -> None:
    with pytest.raises(PolicyErrors, match=r"raw_tcp: cannot be combined with approval"):
        load("""
            skills:
              s:
                allow:
                  - host: db.example.com
                    ports: [5432]
                    raw_tcp: true
                    approval: true
            """)


def test_settings_approvals_are_read() -> None:
    settings = load("""
        settings:
          approvals:
            notify:
              webhook: "env:EGRESS_HOOK"
              command: [/usr/local/bin/page, --team, pay]
              timeout: 2s
            max_body: 64KiB
            max_pending: 5
            console_url: "https://egress-admin.example.com/ui/"
        """).settings.approvals
    assert settings == ApprovalSettings(
        notify=ApprovalNotify(webhook="env:EGRESS_HOOK",
                              command=("/usr/local/bin/page", "--team", "pay"), timeout=2.0),
        max_body=65536, max_pending=5, console_url="https://egress-admin.example.com/ui/")
    assert load("skills: {}").settings.approvals == ApprovalSettings()


@pytest.mark.parametrize("block, message", [
    pytest.param("notify: {webhook: ftp://x}", "p.yaml:4: settings.approvals.notify.webhook: "
                 "must be an http(s) URL, env:NAME or file:/PATH", id="webhook scheme"),
    pytest.param("notify: {webhook: 'file:rel/path'}", "settings.approvals.notify.webhook: "
                 "file:PATH needs an absolute path", id="relative webhook file"),
    pytest.param("notify: {command: [notify-send]}", "settings.approvals.notify.command: "
                 "'notify-send': give the program's absolute path", id="command without path"),
    pytest.param("notify: {command: []}", "settings.approvals.notify.command: empty",
                 id="empty command"),
    pytest.param("notify: {timeout: 5m}", "settings.approvals.notify.timeout: must be between "
                 "0.1s and 60s", id="timeout"),
    pytest.param("max_body: 1GiB", "settings.approvals.max_body: must be between 1KiB and "
                 "64MiB", id="max_body"),
    pytest.param("max_pending: 0", "settings.approvals.max_pending: must be between 1 and 1000",
                 id="max_pending"),
    pytest.param("console_url: egress.local/ui", "settings.approvals.console_url: "
                 "'egress.local/ui' is not an http(s) URL", id="console_url"),
    pytest.param("notifications: {}", "settings.approvals.notifications: unknown key",
                 id="unknown key"),
])
def test_bad_approval_settings_name_line_field_and_fix(block: str, message: str) -> None:
    with pytest.raises(PolicyErrors) as err:
        load(f"""
            settings:
              approvals:
                {block}
            """)
    assert message in str(err.value)


POLICY = """
skills:
  s:
    allow:
      - host: pay.example.com                # wider, written first, no approval
        methods: [GET, POST]
      - host: pay.example.com                # the approval rule for writes
        methods: [POST]
        paths: ["/v1/refunds"]
        approval: {wait: 5}
"""


@pytest.mark.parametrize("method, path, approval", [
    pytest.param("POST", "/v1/refunds", True, id="covered by the approval rule: needs it"),
    pytest.param("POST", "/v1/other", False, id="only the wider rule matches"),
    pytest.param("GET", "/v1/refunds", False, id="a read the approval rule does not cover"),
])
def test_an_approval_rule_wins_over_a_wider_rule_that_allows_the_same_request(
        method: str, path: str, approval: bool) -> None:
    policy = load_policy_texts([("p.yaml", POLICY)])
    decision = decide(policy, "s", Destination("pay.example.com", 443, method, path))
    assert decision.verdict is Verdict.ALLOW
    assert decision.rule is not None and (decision.rule.approval is not None) is approval
