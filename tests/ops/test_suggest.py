"""`egress policy suggest`: a policy that `egress check` accepts and that allows exactly what
the skill was seen doing."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from egress.cli.policy import suggest
from egress.policy.decide import Destination, decide
from egress.policy.load import load_policy_dir, load_policy_texts
from tests.ops.conftest import OpsWorld, connect_status, get, tunnel
from tests.proxy import EGRESS


def rec(host: str, port: int = 443, *, skill: str = "s", decision: str = "report",
        reason: str = "host_not_allowed", ts: str = "2025-01-01T00:00:00.000Z",
        kind: str = "connect") -> dict[str, Any]:
    return {"skill": skill, "host": host, "port": port, "decision": decision,
            "reason": reason, "ts": ts, "kind": kind}


def test_exact_hosts_and_ports() -> None:
    text = suggest("s", [
        rec("api.example.com", ts="2025-01-01T00:00:00.000Z"),
        rec("api.example.com", 8443, ts="2025-01-01T01:00:00.000Z"),
        rec("cdn.example.com", decision="deny", ts="2025-01-01T02:00:00.000Z"),
        rec("api.example.com", decision="allow", reason="allowed", ts="2025-01-01T03:00:00.000Z"),
    ])
    assert text == (
        "# Suggested by `egress policy suggest` from 4 audit records "
        "(2025-01-01T00:00:00.000Z .. 2025-01-01T03:00:00.000Z).\n"
        "# Review every host before enforcing; `egress check DIR` validates this file.\n"
        "skills:\n"
        '  "s":\n'
        "    mode: enforce\n"
        "    allow:\n"
        '      - host: "api.example.com"  # 3 requests\n'
        "        ports: [443, 8443]\n"
        '      - host: "cdn.example.com"  # 1 requests\n'
        "        ports: [443]\n"
    )


@pytest.mark.parametrize("records", [
    pytest.param([rec("x.test", reason="blocked_address")], id="blocked address: no rule can allow it"),
    pytest.param([rec("x.test", reason="dns_failure")], id="dns failure"),
    pytest.param([rec("x.test", reason="rate_limited")], id="rate limited"),
    pytest.param([rec("x.test", reason="host_mismatch", kind="tls")], id="SNI mismatch"),
    pytest.param([rec("x.test", skill="other")], id="another skill"),
    pytest.param([rec("bad host!")], id="not a host name a policy can hold"),
    pytest.param([], id="no records"),
])
def test_records_that_suggest_nothing(records: list[dict[str, Any]]) -> None:
    # suggest() receives records already filtered to the skill by the CLI's query;
    # here the skill filter is the caller's, so "another skill" is filtered explicitly.
    records = [r for r in records if r["skill"] == "s"]
    assert suggest("s", records) is None


@pytest.mark.parametrize("hosts, expected", [
    pytest.param(["a.example.com", "b.example.com"], ["*.example.com"], id="two siblings collapse"),
    pytest.param(["a.example.com"], ["a.example.com"], id="a single host stays exact"),
    pytest.param(["a.example.com", "b.example.com", "example.com"], ["*.example.com", "example.com"],
                 id="the apex stays exact: a wildcard never matches it"),
    pytest.param(["example.com", "example.org"], ["example.com", "example.org"],
                 id="never a wildcard over a top-level domain"),
    pytest.param(["10.0.0.1", "10.0.0.2"], ["10.0.0.1", "10.0.0.2"], id="addresses never collapse"),
    pytest.param(["a.x.example.com", "b.example.com"], ["a.x.example.com", "b.example.com"],
                 id="only siblings under the same parent"),
])
def test_wildcards_only_when_asked(hosts: list[str], expected: list[str]) -> None:
    records = [rec(h) for h in hosts]
    policy = load_policy_texts([("s.yaml", suggest("s", records, wildcards=True) or "")])
    assert [r.host if not r.wildcard else f"*.{r.host}" for r in policy.skills["s"].rules] == expected
    exact = load_policy_texts([("s.yaml", suggest("s", records) or "")])
    assert [r.host for r in exact.skills["s"].rules] == sorted(hosts)


# -- end to end: a report-mode skill, then its suggestion -------------------------------------

def run_suggest(world: OpsWorld, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EGRESS, "policy", "suggest", "reporter", "--data-dir",
                           str(world.proxy.data_dir), *args],
                          capture_output=True, text=True, timeout=30)


def check(directory: Path) -> dict[str, Any]:
    # --skip-env: a policy with a vault: reference, checked where no VAULT_TOKEN is set
    out = subprocess.run([EGRESS, "check", "--json", "--skip-env", str(directory)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_suggestion_from_report_mode_allows_exactly_the_observed_hosts(
        ops: OpsWorld, tmp_path: Path) -> None:
    port = ops.tls.port
    observed = [("api.allowed.test", port), ("other.test", port), ("www.allowed.test", port)]
    for host, p in observed:
        with tunnel(ops, "reporter", host, p) as tls:
            assert get(tls, host).status == 200
    # Refused whatever the policy says: must not be suggested.
    assert connect_status(ops, "reporter", "metadata.test:80").status == 403

    out = run_suggest(ops)
    assert out.returncode == 0, out.stderr
    (tmp_path / "exact").mkdir()
    (tmp_path / "exact" / "reporter.yaml").write_text(out.stdout)
    summary = check(tmp_path / "exact")
    assert (summary["skills"], summary["rules"]) == (1, 3)

    policy = load_policy_dir(tmp_path / "exact")
    for host, p in observed:
        assert decide(policy, "reporter", Destination(host, p)).allowed, host
    for host, p in [("deep.sub.allowed.test", port), ("metadata.test", 80),
                    ("api.allowed.test", 443), ("allowed.test", port)]:
        assert not decide(policy, "reporter", Destination(host, p)).allowed, host

    wild = run_suggest(ops, "--wildcards")
    assert wild.returncode == 0, wild.stderr
    (tmp_path / "wild").mkdir()
    (tmp_path / "wild" / "reporter.yaml").write_text(wild.stdout)
    assert check(tmp_path / "wild")["rules"] == 2
    assert '- host: "*.allowed.test"  # 2 requests: api.allowed.test, www.allowed.test' in wild.stdout


def test_suggest_for_a_skill_never_seen(ops: OpsWorld) -> None:
    out = subprocess.run([EGRESS, "policy", "suggest", "nobody", "--data-dir",
                          str(ops.proxy.data_dir)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr == ("egress: no requests of skill 'nobody' in the audit log; run it with "
                          "`mode: report` first, so egress records what it would refuse\n")


MERGE_POLICY = """\
settings:
  secrets:
    vault: {addr: "https://bao.internal:8200", auth: {token_env: VAULT_TOKEN}}
skills:
  invoices:
    mode: report
    allow:
      - host: api.stripe.com
        methods: [GET]
        paths: ["/v1/invoices/*"]
        credential: stripe-read
    credentials:
      stripe-read:
        secret: "vault:secret/skills/stripe#api_key"
        placeholder: "sk_live_egress_placeholder_0000000000000000"
  other:
    allow:
      - host: other.test
"""


def test_merge_keeps_the_current_rules_and_adds_only_what_is_not_allowed(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "skills.yaml").write_text(MERGE_POLICY)
    data = tmp_path / "data"
    data.mkdir()
    seen = [rec("new.example.com", skill="invoices"),
            rec("api.stripe.com", skill="invoices", reason="path_not_allowed", kind="http"),
            rec("api.stripe.com", 8443, skill="invoices", reason="port_not_allowed"),
            rec("elsewhere.test", skill="other")]
    (data / "audit.jsonl").write_text("".join(json.dumps(r) + "\n" for r in seen))
    out = subprocess.run([EGRESS, "policy", "suggest", "invoices", "--merge", "--policies",
                          str(policies), "--data-dir", str(data)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "already allowed (host and port; refused by method or path, or allowed): " \
           "api.stripe.com:443: not widened" in out.stdout
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "skills.yaml").write_text(out.stdout)
    before, after = load_policy_dir(policies), load_policy_dir(merged)
    assert check(merged)["skills"] == 2
    assert after.skills["other"].rules[0].host == "other.test"  # the rest of the file stays
    assert after.settings.secrets == before.settings.secrets
    old, new = before.skills["invoices"], after.skills["invoices"]
    def same(c: Any) -> Any:
        return dataclasses.replace(c, source=None)

    # Credentials and all (only where they were written differs).
    assert {k: same(c) for k, c in old.credentials.items()} == \
        {k: same(c) for k, c in new.credentials.items()}
    assert new.mode == old.mode
    first = new.rules[0]
    assert (first.host, first.methods, first.paths, first.credential) == (
        "api.stripe.com", frozenset({"GET"}), ("/v1/invoices/*",), "stripe-read")
    assert [(r.host, sorted(r.ports)) for r in new.rules[1:]] == [
        ("api.stripe.com", [8443]), ("new.example.com", [443])]
    # The path refusal was not widened: /v1/charges is still outside the rules on 443.
    enforce = load_policy_texts([("p.yaml", out.stdout.replace("mode: report", "mode: enforce"))])
    assert decide(enforce, "invoices", Destination("api.stripe.com", 443, "GET", "/v1/charges")
                  ).reason == "path_not_allowed"
    assert decide(enforce, "invoices", Destination("new.example.com", 443)).allowed
    # The policy directory itself was only read.
    assert (policies / "skills.yaml").read_text() == MERGE_POLICY
    missing = subprocess.run([EGRESS, "policy", "suggest", "nobody", "--merge", "--policies",
                              str(policies), "--data-dir", str(data)],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "no policy file in" in missing.stderr
