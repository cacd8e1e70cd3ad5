"""Decision microbenchmarks, no network: what egress's pure steps cost per call.

* policy load: `load_policy_texts` on a generated policy of N rules (one skill holds them all,
  the worst case for a per-skill index), and the rule count it produced;
* decide(): a fixed mix of destinations against that policy, timed call by call;
* TokenStore.verify: right token, wrong token, unknown skill (each call stats the token file);
* netguard.classify: public, private, metadata, IPv6 and IPv4-in-IPv6 addresses.

Each call is timed alone with perf_counter_ns and the timer's own cost (median of empty timings)
is subtracted, so p50/p99 are per call, not averages over batches.
"""

from __future__ import annotations

import functools
import gc
import ipaddress
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from egress.identity import TokenStore
from egress.policy.addresses import NetworkPolicy, classify
from egress.policy.decide import Decision, Destination, Verdict, decide
from egress.policy.load import load_policy_texts
from egress.policy.model import PolicySet

__all__ = ["Timing", "generate_policy", "run_micro", "time_calls"]

SKILL = "bench"


@dataclass(frozen=True)
class Timing:
    name: str
    calls: int
    p50_us: float
    p99_us: float
    note: str = ""


def generate_policy(rules: int) -> str:
    """YAML for one skill with `rules` allow entries: exact hosts, wildcards, method/path rules.

    Rule i is `hI.sK.example.com` (exact) except: every 10th is `*.wI.example.net`, every 5th
    carries methods and paths (so it needs interception). Ports alternate [443] / [443, 8443].
    """
    lines = ["skills:", f"  {SKILL}:", "    allow:"]
    for i in range(rules):
        host = f'"*.w{i}.example.net"' if i % 10 == 0 else f"h{i}.s{i % 97}.example.com"
        lines.append(f"      - host: {host}")
        lines.append("        ports: [443, 8443]" if i % 2 else "        ports: [443]")
        if i % 5 == 0:
            lines.append("        methods: [GET, POST]")
            lines.append(f'        paths: ["/v1/items/*", "/api/{i}/**"]')
    lines.append("  other:\n    allow:\n      - host: other.example.org")
    return "\n".join(lines) + "\n"


def destinations(rules: int, count: int, seed: int = 7) -> list[tuple[Destination, Verdict]]:
    """A reproducible mix of destinations with the verdict each must get."""
    rng = random.Random(seed)
    out: list[tuple[Destination, Verdict]] = []
    for k in range(count):
        i = rng.randrange(rules)
        kind = k % 6
        exact = f"h{i}.s{i % 97}.example.com"
        if kind == 0 and i % 10:  # CONNECT to an allowed exact host
            out.append((Destination(exact, 443), Verdict.ALLOW))
        elif kind == 1:  # a deep name under a wildcard rule, CONNECT time
            w = i - i % 10
            out.append((Destination(f"a.b.w{w}.example.net", 443), Verdict.ALLOW))
        elif kind == 2:  # a request inside an intercepted tunnel: method and path match
            w = i - i % 10
            out.append((Destination(f"x.w{w}.example.net", 443, "GET", "/v1/items/42"),
                        Verdict.ALLOW))
        elif kind == 3:  # a host nobody allowed
            out.append((Destination(f"nope{i}.example.org", 443), Verdict.DENY))
        elif kind == 4:  # an intercepted request whose method is not allowed
            w = i - i % 10
            out.append((Destination(f"x.w{w}.example.net", 443, "DELETE", "/v1/items/1"),
                        Verdict.DENY))
        else:  # the apex of a wildcard: not covered by "*."
            w = i - i % 10
            out.append((Destination(f"w{w}.example.net", 443), Verdict.DENY))
    return out


def _timer_overhead_ns(samples: int = 2000) -> int:
    clock = time.perf_counter_ns
    spans = []
    for _ in range(samples):
        t0 = clock()
        spans.append(clock() - t0)
    return int(statistics.median(spans))


def time_calls(name: str, calls: Sequence[Callable[[], object]], note: str = "") -> Timing:
    """Time each call alone; p50/p99 in microseconds, timer overhead subtracted."""
    clock = time.perf_counter_ns
    overhead = _timer_overhead_ns()
    spans = []
    for call in calls:
        t0 = clock()
        call()
        spans.append(clock() - t0 - overhead)
    spans.sort()

    def pct(q: float) -> float:
        return max(spans[min(len(spans) - 1, int(q * len(spans)))], 0) / 1000

    return Timing(name, len(spans), pct(0.50), pct(0.99), note)


@dataclass(frozen=True)
class LoadResult:
    rules: int
    yaml_kb: float
    seconds: float
    policy: PolicySet


def load_policy(rules: int, repeats: int) -> LoadResult:
    text = generate_policy(rules)
    times = []
    policy = None
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        policy = load_policy_texts([("bench.yaml", text)])
        times.append(time.perf_counter() - t0)
    assert policy is not None
    return LoadResult(policy.rule_count, len(text) / 1024, statistics.median(times), policy)


def check_decisions(policy: PolicySet, dests: list[tuple[Destination, Verdict]]) -> int:
    """How many destinations got a verdict other than the expected one (must be 0)."""
    wrong = 0
    for dest, expected in dests:
        decision: Decision = decide(policy, SKILL, dest)
        if decision.verdict is not expected:
            wrong += 1
    return wrong


def bench_decide(policy: PolicySet, rules: int, calls: int) -> tuple[Timing, int]:
    dests = destinations(rules, calls)
    wrong = check_decisions(policy, dests)
    timing = time_calls(f"decide() at {rules:,} rules",
                        [functools.partial(decide, policy, SKILL, d) for d, _ in dests],
                        note="mix: allow exact/wildcard/request, deny host/method/apex")
    return timing, wrong


def bench_tokens(calls: int) -> list[Timing]:
    with tempfile.TemporaryDirectory(prefix="egress-bench-tokens-") as tmp:
        store = TokenStore(Path(tmp))
        token = store.issue(SKILL)
        for i in range(99):
            store.issue(f"skill{i}")
        out = []
        for label, skill, tok, expect in (
            ("token check: right token", SKILL, token, True),
            ("token check: wrong token", SKILL, token[:-1] + ("A" if token[-1] != "A" else "B"),
             False),
            ("token check: unknown skill", "ghost", token, False),
        ):
            if store.verify(skill, tok) is not expect:
                raise AssertionError(f"{label}: verify() gave the wrong answer")
            out.append(time_calls(label, [functools.partial(store.verify, skill, tok)] * calls,
                                  note="100 skills in the store; includes the stat() of the file"))
        return out


def bench_classify(calls: int) -> Timing:
    nets = NetworkPolicy(
        allow=(ipaddress.ip_network("10.20.0.0/16"),),
        deny=(ipaddress.ip_network("203.0.113.0/24"),),
        self_addresses=frozenset({(ipaddress.ip_address("127.0.0.1"), 8080)}),
    )
    samples = [ipaddress.ip_address(a) for a in (
        "93.184.216.34", "10.20.1.1", "10.1.1.1", "169.254.169.254", "127.0.0.1",
        "2606:4700::1111", "::ffff:192.168.1.1", "64:ff9b::a01:101", "fd00::1", "8.8.8.8",
    )]
    ips = [samples[i % len(samples)] for i in range(calls)]
    return time_calls("netguard.classify()", [functools.partial(classify, ip, 443, nets)
                                              for ip in ips],
                      note="mix of public, private, metadata, v6, v4-in-v6; with allow/deny lists")


@dataclass(frozen=True)
class MicroResult:
    loads: list[LoadResult]
    timings: list[Timing]
    wrong_decisions: int


def run_micro(sizes: Sequence[int], decide_calls: int, other_calls: int,
              log: Callable[[str], None] = print) -> MicroResult:
    loads, timings, wrong = [], [], 0
    for rules in sizes:
        repeats = 3 if rules <= 10_000 else 1
        result = load_policy(rules, repeats)
        log(f"  policy of {rules:,} rules: loaded in {result.seconds:.3f}s")
        timing, bad = bench_decide(result.policy, rules, decide_calls)
        log(f"  {timing.name}: p50 {timing.p50_us:.2f} us, p99 {timing.p99_us:.2f} us")
        loads.append(result)
        timings.append(timing)
        wrong += bad
    timings.extend(bench_tokens(other_calls))
    timings.append(bench_classify(other_calls))
    return MicroResult(loads, timings, wrong)
