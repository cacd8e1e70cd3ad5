"""decide(): a table over (policy, skill, Destination) -> (verdict, reason, rule, intercept).

The policy is tests/policy/fixtures/decide/policy.yaml; rules are named "LINE host" after the
line of their allow entry there.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from egress.policy.decide import Decision, Destination, Verdict, decide
from egress.policy.load import load_policy_dir, load_policy_texts
from egress.policy.model import PolicySet
from egress.reasons import Reason

FIXTURE = Path(__file__).parent / "fixtures" / "decide"

ALLOW, DENY, REPORT = Verdict.ALLOW, Verdict.DENY, Verdict.REPORT
R = Reason


@pytest.fixture(scope="module")
def policy() -> PolicySet:
    return load_policy_dir(FIXTURE)


def rule_name(decision: Decision) -> str | None:
    if decision.rule is None:
        return None
    r = decision.rule
    return f"{r.source.line} {'*.' if r.wildcard else ''}{r.host}"


def connect(host: str, port: int = 443) -> Destination:
    return Destination(host, port)


def request(method: str, path: str | None, host: str = "api.example.org",
            port: int = 443) -> Destination:
    return Destination(host, port, method, path)


CASES = [
    # who is asking
    pytest.param("nobody", connect("api.stripe.com"), DENY, R.UNKNOWN_SKILL, None, False,
                 id="unknown skill is denied"),
    pytest.param("empty", connect("api.stripe.com"), DENY, R.HOST_NOT_ALLOWED, None, False,
                 id="skill with no rules is denied"),
    # hosts and ports
    pytest.param("stripe", connect("api.stripe.com"), ALLOW, R.ALLOWED, "5 api.stripe.com", False,
                 id="exact host on the default port 443 is allowed"),
    pytest.param("stripe", connect("api.stripe.com", 80), DENY, R.PORT_NOT_ALLOWED,
                 "5 api.stripe.com", False, id="default port is only 443"),
    pytest.param("stripe", connect("files.stripe.com", 8443), ALLOW, R.ALLOWED,
                 "6 files.stripe.com", False, id="listed extra port is allowed"),
    pytest.param("stripe", connect("files.stripe.com", 8080), DENY, R.PORT_NOT_ALLOWED,
                 "6 files.stripe.com", False, id="port not in the list is denied"),
    pytest.param("stripe", connect("evil.test"), DENY, R.HOST_NOT_ALLOWED, None, False,
                 id="host not listed is denied"),
    pytest.param("stripe", connect("a.example.com"), DENY, R.HOST_NOT_ALLOWED, None, False,
                 id="another skill's host is denied"),
    pytest.param("stripe", connect("www.api.stripe.com"), DENY, R.HOST_NOT_ALLOWED, None, False,
                 id="exact host does not cover its subdomains"),
    # wildcards
    pytest.param("wild", connect("a.example.com"), ALLOW, R.ALLOWED, "10 *.example.com", False,
                 id="wildcard matches a subdomain"),
    pytest.param("wild", connect("a.b.example.com"), ALLOW, R.ALLOWED, "10 *.example.com", False,
                 id="wildcard matches a deeper subdomain"),
    pytest.param("wild", connect("example.com"), DENY, R.HOST_NOT_ALLOWED, None, False,
                 id="wildcard does not match the apex"),
    pytest.param("wild", connect("evilexample.com"), DENY, R.HOST_NOT_ALLOWED, None, False,
                 id="wildcard does not match a lookalike"),
    pytest.param("wild", connect("example.com.evil.test"), DENY, R.HOST_NOT_ALLOWED, None, False,
                 id="wildcard does not match the domain used as a prefix"),
    pytest.param("wild", connect("a.example.com", 80), DENY, R.PORT_NOT_ALLOWED,
                 "10 *.example.com", False, id="wildcard keeps the default port"),
    # method and path rules, at CONNECT time
    pytest.param("api", connect("api.example.org"), ALLOW, R.ALLOWED, "13 api.example.org", True,
                 id="host with method and path rules is allowed at CONNECT and intercepted"),
    pytest.param("api", connect("api.example.org", 8443), DENY, R.PORT_NOT_ALLOWED,
                 "13 api.example.org", False, id="intercepted host still checks the port"),
    pytest.param("api", connect("plain.example.org", 80), ALLOW, R.ALLOWED,
                 "19 plain.example.org", False, id="host without method or path rules passes through"),
    # ... and at request time
    pytest.param("api", request("GET", "/v1/invoices"), ALLOW, R.ALLOWED, "13 api.example.org",
                 True, id="allowed method on an exact path"),
    pytest.param("api", request("HEAD", "/v1/invoices/in_1"), ALLOW, R.ALLOWED,
                 "13 api.example.org", True, id="allowed method on a star path"),
    pytest.param("api", request("GET", "/v1/invoices/in_1/lines"), DENY, R.PATH_NOT_ALLOWED,
                 "13 api.example.org", True, id="star path does not reach deeper"),
    pytest.param("api", request("DELETE", "/v1/invoices"), DENY, R.METHOD_NOT_ALLOWED,
                 "13 api.example.org", True, id="method no rule lists is denied"),
    pytest.param("api", request("GET", "/v1/charges"), DENY, R.PATH_NOT_ALLOWED,
                 "13 api.example.org", True, id="path of another method's rule is denied"),
    pytest.param("api", request("POST", "/v1/charges"), ALLOW, R.ALLOWED, "16 api.example.org",
                 True, id="second rule for the same host allows its own method and path"),
    pytest.param("api", request("POST", "/v1/invoices"), DENY, R.PATH_NOT_ALLOWED,
                 "16 api.example.org", True, id="rules do not combine one's method with another's path"),
    pytest.param("api", request("GET", None), DENY, R.PATH_NOT_ALLOWED, "13 api.example.org", True,
                 id="unnormalisable path is denied where rules name paths"),
    pytest.param("api", request("GET", "/v1/invoices", port=8443), DENY, R.PORT_NOT_ALLOWED,
                 "13 api.example.org", False, id="request on a port not allowed is denied"),
    pytest.param("api", request("DELETE", "/anything", host="plain.example.org", port=80), ALLOW,
                 R.ALLOWED, "19 plain.example.org", True,
                 id="rule without methods or paths allows any request"),
    pytest.param("api", request("GET", None, host="plain.example.org", port=80), ALLOW,
                 R.ALLOWED, "19 plain.example.org", True,
                 id="unnormalisable path is allowed where no rule names paths"),
    pytest.param("api", request("GET", "/v1/invoices", host="evil.test"), DENY,
                 R.HOST_NOT_ALLOWED, None, False, id="request to a host not listed is denied"),
    # report mode
    pytest.param("watcher", connect("api.stripe.com"), ALLOW, R.ALLOWED, "26 api.stripe.com", True,
                 id="report mode allows what the policy allows"),
    pytest.param("watcher", request("GET", "/", host="api.stripe.com"), ALLOW, R.ALLOWED,
                 "26 api.stripe.com", True, id="report mode allows an allowed request"),
    pytest.param("watcher", connect("evil.test"), REPORT, R.HOST_NOT_ALLOWED, None, False,
                 id="report mode reports a host it would deny"),
    pytest.param("watcher", connect("api.stripe.com", 80), REPORT, R.PORT_NOT_ALLOWED,
                 "26 api.stripe.com", False, id="report mode reports a port it would deny"),
    pytest.param("watcher", request("POST", "/", host="api.stripe.com"), REPORT,
                 R.METHOD_NOT_ALLOWED, "26 api.stripe.com", True,
                 id="report mode reports a method it would deny"),
]


@pytest.mark.parametrize("skill, dest, verdict, reason, rule, intercept", CASES)
def test_decide(
    policy: PolicySet, skill: str, dest: Destination, verdict: Verdict, reason: Reason,
    rule: str | None, intercept: bool,
) -> None:
    decision = decide(policy, skill, dest)
    assert (decision.verdict, decision.reason, rule_name(decision), decision.intercept) == (
        verdict, reason, rule, intercept)
    assert decision.allowed is (verdict is not DENY)


def test_global_report_mode_never_relaxes_an_unknown_skill() -> None:
    policy = load_policy_texts([("p.yaml", "settings:\n  mode: report\nskills:\n  s: {}\n")])
    assert decide(policy, "nobody", connect("evil.test")) == Decision(DENY, R.UNKNOWN_SKILL)
    assert decide(policy, "s", connect("evil.test")) == Decision(REPORT, R.HOST_NOT_ALLOWED)


def test_decide_does_not_normalise_for_the_caller(policy: PolicySet) -> None:
    # Hosts reach decide() normalised (normalise_host); a raw spelling simply matches nothing.
    assert decide(policy, "stripe", connect("API.Stripe.COM.")).reason is R.HOST_NOT_ALLOWED


# -- scale --------------------------------------------------------------------------------------
SKILLS, RULES_PER_SKILL, SKILLS_PER_FILE = 10_000, 10, 1_000


def _scale_files() -> list[tuple[str, str]]:
    """10,000 skills x 10 rules: even rules exact hosts on 443/8443, odd rules wildcards."""
    files = []
    for f in range(SKILLS // SKILLS_PER_FILE):
        lines = ["skills:"]
        for s in range(f * SKILLS_PER_FILE, (f + 1) * SKILLS_PER_FILE):
            lines += [f"  skill-{s}:", "    allow:"]
            for r in range(RULES_PER_SKILL):
                if r % 2:
                    lines.append(f'      - host: "*.w{r}.s{s}.example"')
                else:
                    lines += [f"      - host: h{r}.s{s}.example", "        ports: [443, 8443]"]
        files.append((f"scale-{f}.yaml", "\n".join(lines) + "\n"))
    return files


def test_policy_of_ten_thousand_skills_and_100k_rules_decides_correctly() -> None:
    policy = load_policy_texts(_scale_files())
    assert (len(policy.skills), policy.rule_count) == (SKILLS, SKILLS * RULES_PER_SKILL)

    rng = random.Random(1234)  # fixed seed: the sample is the same on every run
    for _ in range(500):
        s, other = rng.randrange(SKILLS), rng.randrange(SKILLS)
        r_exact, r_wild = 2 * rng.randrange(5), 2 * rng.randrange(5) + 1
        skill = f"skill-{s}"
        expected = {
            connect(f"h{r_exact}.s{s}.example"): (ALLOW, R.ALLOWED),
            connect(f"h{r_exact}.s{s}.example", 8443): (ALLOW, R.ALLOWED),
            connect(f"h{r_exact}.s{s}.example", 80): (DENY, R.PORT_NOT_ALLOWED),
            connect(f"x.w{r_wild}.s{s}.example"): (ALLOW, R.ALLOWED),
            connect(f"w{r_wild}.s{s}.example"): (DENY, R.HOST_NOT_ALLOWED),  # apex
            connect(f"x.w{r_wild}.s{s}.example", 8443): (DENY, R.PORT_NOT_ALLOWED),
            connect(f"h{r_exact + 1}.s{s}.example"): (DENY, R.HOST_NOT_ALLOWED),
        }
        if other != s:  # another skill's hosts are never this skill's
            expected[connect(f"h{r_exact}.s{other}.example")] = (DENY, R.HOST_NOT_ALLOWED)
            expected[connect(f"x.w{r_wild}.s{other}.example")] = (DENY, R.HOST_NOT_ALLOWED)
        for dest, (verdict, reason) in expected.items():
            decision = decide(policy, skill, dest)
            assert (decision.verdict, decision.reason) == (verdict, reason), (skill, dest)
    assert decide(policy, f"skill-{SKILLS}", connect("h0.s0.example")).reason is R.UNKNOWN_SKILL
