"""What each skill tried in a window of time, from audit records (`egress report`). Pure.

Per skill: denials, the hosts it was denied (each marked `new` when no record of that skill
names the host before the window: a first attempt, the thing to look at), credential
exfiltration attempts, attempts at blocked addresses (private, loopback, metadata), rate-limit
hits and approvals. Records of every decision are read, so that a host the skill reached
before (with `log_allowed`) or was denied before does not count as new. A summary line of
folded denials (egress/audit/fold.py) counts as the denials it stands for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from egress.audit.query import DENIAL_DECISIONS, record_time, weight
from egress.reasons import Reason

__all__ = ["HostCount", "SkillReport", "build_report"]


@dataclass
class HostCount:
    host: str
    count: int = 0
    first: str = ""
    last: str = ""
    new: bool = False
    reasons: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "count": self.count, "first": self.first,
                "last": self.last, "new": self.new, "reasons": sorted(self.reasons)}


@dataclass
class SkillReport:
    skill: str
    denials: int = 0
    hosts: dict[str, HostCount] = field(default_factory=dict)
    exfiltration: dict[str, HostCount] = field(default_factory=dict)
    blocked_address: int = 0
    rate_limited: int = 0
    approvals: int = 0

    @property
    def new_hosts(self) -> int:
        return sum(1 for h in self.hosts.values() if h.new)

    def to_json(self) -> dict[str, Any]:
        return {"skill": self.skill, "denials": self.denials,
                "denied_hosts": [h.to_json() for h in _ordered(self.hosts)],
                "new_hosts": self.new_hosts,
                "exfiltration": [h.to_json() for h in _ordered(self.exfiltration)],
                "blocked_address": self.blocked_address, "rate_limited": self.rate_limited,
                "approvals": self.approvals}


def _ordered(hosts: dict[str, HostCount]) -> list[HostCount]:
    return sorted(hosts.values(), key=lambda h: (not h.new, -h.count, h.host))


def _is_approval(record: dict[str, Any]) -> bool:
    """An approval line (issue #14 writes them): kind, event or reason names it."""
    return any(str(record.get(k) or "").startswith("approv") for k in ("kind", "event", "reason"))


def build_report(records: Iterable[dict[str, Any]], since: datetime,
                 until: datetime | None = None) -> list[SkillReport]:
    """Reports for every skill with something in [since, until], by skill name."""
    before: set[tuple[str, str]] = set()  # (skill, host) named by a record before `since`
    out: dict[str, SkillReport] = {}
    for record in records:
        when = record_time(record)
        if when is None:
            continue
        skill = str(record.get("skill") or "-")
        host = str(record.get("host") or "")
        if when < since:
            if host:
                before.add((skill, host))
            continue
        if until is not None and when > until:
            continue
        decision = record.get("decision")
        approval = _is_approval(record)
        if decision not in DENIAL_DECISIONS and not approval:
            continue
        report = out.setdefault(skill, SkillReport(skill))
        if approval:
            report.approvals += 1
            continue
        count, first, last = weight(record)
        reason = str(record.get("reason") or "")
        report.denials += count
        if host:
            _add(report.hosts, host, count, first, last, reason, new=(skill, host) not in before)
        if reason == Reason.CREDENTIAL_EXFILTRATION:
            _add(report.exfiltration, host or "-", count, first, last, reason, new=False)
        elif reason == Reason.BLOCKED_ADDRESS:
            report.blocked_address += count
        elif reason == Reason.RATE_LIMITED:
            report.rate_limited += count
    return [out[k] for k in sorted(out)]


def _add(table: dict[str, HostCount], host: str, count: int, first: str, last: str,
         reason: str, *, new: bool) -> None:
    entry = table.get(host)
    if entry is None:
        entry = table[host] = HostCount(host, first=first, last=last, new=new)
    entry.count += count
    entry.first = min(entry.first, first) if entry.first else first
    entry.last = max(entry.last, last)
    if reason:
        entry.reasons.add(reason)
