"""The allow/deny decision: a pure function of (policy, skill, destination).

decide() is called twice for an intercepted connection: once at CONNECT time (method and path
unknown, so only host and port are judged, and the caller learns whether it must look inside),
and again for every request inside the tunnel. For plain HTTP it is called once per request.

What stays out: proxy credentials (identity is settled before), DNS and addresses (netguard
judges the address that will be dialled), secrets, clocks and flows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from egress.policy.match import path_matches, path_spelling_problem
from egress.policy.model import Mode, PolicySet, Rule
from egress.reasons import Reason

__all__ = ["Decision", "Destination", "Verdict", "decide"]


class Verdict(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    REPORT = "report"  # would be denied; allowed because the skill runs in report mode


@dataclass(frozen=True, slots=True)
class Destination:
    host: str  # normalised: lowercase, IDNA, no trailing dot, canonical IP literal
    port: int
    method: str | None = None  # None at CONNECT time
    # The request path as forwarded, without the query; None at CONNECT time. Never
    # normalised: rules with paths refuse a path that is not spelt plainly.
    path: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: Reason
    rule: Rule | None = None  # the rule that allowed it (or, for a denial, the nearest one)
    intercept: bool = False  # CONNECT time: some rule for this host looks inside requests
    # CONNECT time: a rule for this host and port allows raw TCP, and none looks inside.
    raw_tcp: bool = False
    detail: str | None = None  # what exactly was wrong, safe to audit (path_not_canonical)

    @property
    def allowed(self) -> bool:
        return self.verdict is not Verdict.DENY


def decide(policy: PolicySet, skill: str, dest: Destination) -> Decision:
    skill_policy = policy.skills.get(skill)
    if skill_policy is None:
        # No report-mode relaxation: a skill nobody wrote a policy for is never let through.
        return Decision(Verdict.DENY, Reason.UNKNOWN_SKILL)

    decision = _match(skill_policy.index.lookup(dest.host), dest)
    if decision.verdict is Verdict.DENY and skill_policy.mode is Mode.REPORT:
        return dataclasses.replace(decision, verdict=Verdict.REPORT)
    return decision


def _match(rules: tuple[Rule, ...], dest: Destination) -> Decision:
    if not rules:
        return Decision(Verdict.DENY, Reason.HOST_NOT_ALLOWED)
    on_port = [r for r in rules if dest.port in r.ports]
    if not on_port:
        return Decision(Verdict.DENY, Reason.PORT_NOT_ALLOWED, rules[0])
    if dest.method is None:
        intercept = any(r.needs_interception for r in on_port)
        raw_tcp = not intercept and any(r.raw_tcp for r in on_port)
        return Decision(Verdict.ALLOW, Reason.ALLOWED, on_port[0], intercept, raw_tcp)

    by_method = [r for r in on_port if r.methods is None or dest.method in r.methods]
    if not by_method:
        return Decision(Verdict.DENY, Reason.METHOD_NOT_ALLOWED, on_port[0], True)
    path = dest.path
    # A path that is not spelt plainly has more than one reading: only rules that do not look
    # at paths may allow it (see path_spelling_problem).
    spelling = None
    if path is not None and any(r.paths is not None for r in by_method):
        spelling = path_spelling_problem(path)
    by_path = [
        r for r in by_method if r.paths is None or (
            path is not None and spelling is None and any(path_matches(p, path) for p in r.paths))
    ]
    if not by_path:
        if spelling is not None:
            return Decision(Verdict.DENY, Reason.PATH_NOT_CANONICAL, by_method[0], True,
                            detail=spelling)
        return Decision(Verdict.DENY, Reason.PATH_NOT_ALLOWED, by_method[0], True)
    # A request any approval rule covers needs approval, whichever rule comes first: a wider
    # rule written above it must not let the same request skip the person.
    chosen = next((r for r in by_path if r.approval is not None), by_path[0])
    return Decision(Verdict.ALLOW, Reason.ALLOWED, chosen, True)
