"""The benchmark harness runs: decision microbenchmarks at tiny sizes, and hey's output parsed.

No timing is asserted (speed belongs in bench/RESULTS.md); these prove the harness measures
what it says: the generated policy has the rules asked for, every benchmarked decision gets
the verdict it should, and hey's summary is read correctly.
"""

from __future__ import annotations

import pytest

from bench.load import parse_hey
from bench.micro import destinations, generate_policy, run_micro
from egress.policy.decide import Verdict
from egress.policy.load import load_policy_texts


def test_micro_benchmark_runs_at_tiny_sizes() -> None:
    result = run_micro([100], decide_calls=300, other_calls=50, log=lambda _: None)

    assert [lr.rules for lr in result.loads] == [101]  # 100 + the one rule of skill "other"
    assert result.wrong_decisions == 0
    assert [t.name for t in result.timings] == [
        "decide() at 100 rules", "token check: right token", "token check: wrong token",
        "token check: unknown skill", "netguard.classify()",
    ]
    assert [t.calls for t in result.timings] == [300, 50, 50, 50, 50]


def test_generated_policy_mixes_every_kind_of_rule() -> None:
    policy = load_policy_texts([("bench.yaml", generate_policy(20))])
    rules = policy.skills["bench"].rules

    assert sum(r.wildcard for r in rules) == 2
    assert sum(r.methods is not None for r in rules) == 4
    assert {r.ports for r in rules} == {frozenset({443}), frozenset({443, 8443})}


def test_destination_mix_has_allowed_and_denied() -> None:
    verdicts = {v for _, v in destinations(100, 60)}
    assert verdicts == {Verdict.ALLOW, Verdict.DENY}


HEY_OK = """
Summary:
  Total:\t2.5000 secs
  Requests/sec:\t400.0000

Latency distribution:
  10% in 0.0010 secs
  50% in 0.0020 secs
  99% in 0.0150 secs

Status code distribution:
  [200]\t990 responses
  [502]\t10 responses
"""

HEY_ERRORS = HEY_OK.replace("  [502]\t10 responses\n", "") + """
Error distribution:
  [3]\tGet "https://127.0.0.3:1/small": EOF
  [7]\tGet "https://127.0.0.3:1/small": proxyconnect tcp: connection refused
"""


@pytest.mark.parametrize("text, expect, ok, failed, rps, problem", [
    pytest.param(HEY_OK, 200, 990, 10, 396.0, "status 502",
                 id="other statuses count as failed and name the first one"),
    pytest.param(HEY_OK, 502, 10, 990, 4.0, "status 200",
                 id="the expected status decides what counts as a success"),
    pytest.param(HEY_ERRORS, 200, 990, 10, 396.0,
                 'Get "https://127.0.0.3:1/small": proxyconnect tcp: connection refused',
                 id="errors count as failed and the most frequent one is kept"),
    pytest.param("hey: connection refused\n", 200, 0, 0, 0.0,
                 "hey printed no summary: hey: connection refused",
                 id="no summary is a problem, not zero latency"),
])
def test_parse_hey(text: str, expect: int, ok: int, failed: int, rps: float,
                   problem: str) -> None:
    run = parse_hey(text, expect)
    assert (run.ok, run.failed, run.problem) == (ok, failed, problem)
    assert run.rps == pytest.approx(rps)
    if ok:
        assert (run.p50_ms, run.p99_ms) == pytest.approx((2.0, 15.0))
