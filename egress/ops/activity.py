"""What the console shows about skills: activity over time, recent audit records, the policy.

* `Timeline`: requests and denials per skill per minute, counted as decisions happen (fed by
  Metrics.decision), for the last 24 hours of this process. Bounded: at most `max_skills`
  skills (the rest count as "_other"), one bucket per minute.
* `tail_records`: the newest audit records, read from the end of the audit files (at most
  `max_bytes`), so a console refresh never reads gigabytes of rotated logs.
* `recent_records`, `top_denied_hosts`: the "investigating a phone-home attempt" views.
* `skills_view`: each skill's mode, rules, credential names, limits and last activity.

Pure functions over records and the policy, except `tail_records` (reads files).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from egress.audit.query import Query, weight
from egress.audit.records import parse_record
from egress.policy.model import Limits, PolicySet, Rule

__all__ = ["Timeline", "recent_records", "skills_view", "tail_records", "top_denied_hosts"]

_KEEP_MINUTES = 24 * 60
_OTHER = "_other"


class Timeline:
    def __init__(self, *, max_skills: int = 200, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._max_skills = max_skills
        self._buckets: dict[int, dict[str, list[int]]] = {}  # minute -> skill -> [req, deny]
        self._last: dict[str, float] = {}  # skill -> time of its last decision

    def count(self, skill: str | None, verdict: str) -> None:
        skill = skill or ""
        if skill not in self._last and len(self._last) >= self._max_skills:
            skill = _OTHER
        now = self._clock()
        minute = int(now // 60)
        bucket = self._buckets.get(minute)
        if bucket is None:
            bucket = self._buckets[minute] = {}
            for old in [m for m in self._buckets if m <= minute - _KEEP_MINUTES]:
                del self._buckets[old]
        counts = bucket.setdefault(skill, [0, 0])
        counts[0] += 1
        if verdict == "deny":
            counts[1] += 1
        self._last[skill] = now

    def last_seen(self, skill: str) -> float | None:
        return self._last.get(skill)

    def series(self, minutes: int = 60, step: int = 1) -> dict[str, Any]:
        """{"start": epoch seconds, "step": seconds, "skills": {skill: {"requests": [...],
        "denials": [...]}}}: `minutes` of history in buckets of `step` minutes, oldest first."""
        minutes = max(1, min(minutes, _KEEP_MINUTES))
        step = max(1, min(step, minutes))
        now = int(self._clock() // 60)
        first = now - minutes + 1
        n = (minutes + step - 1) // step
        skills: dict[str, dict[str, list[int]]] = {}
        for minute in range(first, now + 1):
            for skill, (req, deny) in self._buckets.get(minute, {}).items():
                s = skills.setdefault(skill, {"requests": [0] * n, "denials": [0] * n})
                i = (minute - first) // step
                s["requests"][i] += req
                s["denials"][i] += deny
        return {"start": first * 60, "step": step * 60, "skills": skills}


def tail_records(paths: Iterable[Path], max_bytes: int = 8 * 2**20) -> list[dict[str, Any]]:
    """The newest records of audit files given oldest first, reading at most `max_bytes`
    from their ends (a cut first line is dropped). Oldest first."""
    chunks: list[bytes] = []
    left = max_bytes
    for path in reversed(list(paths)):
        if left <= 0:
            break
        try:
            with open(path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                start = max(0, size - left)
                fh.seek(start)
                data = fh.read(size - start)
        except OSError:
            continue
        left -= len(data)
        if start > 0:
            data = data.split(b"\n", 1)[1] if b"\n" in data else b""
        chunks.append(data)
    records: list[dict[str, Any]] = []
    for data in reversed(chunks):
        for line in data.split(b"\n"):
            record = parse_record(line)
            if record is not None:
                records.append(record)
    return records


def recent_records(records: list[dict[str, Any]], query: Query, limit: int = 200
                   ) -> list[dict[str, Any]]:
    """The last `limit` records that match, newest first."""
    out: list[dict[str, Any]] = []
    for record in reversed(records):
        if query.matches(record):
            out.append(record)
            if len(out) >= limit:
                break
    return out


def top_denied_hosts(records: Iterable[dict[str, Any]], *, per_skill: int = 5,
                     since: datetime | None = None) -> dict[str, list[tuple[str, int]]]:
    """Per skill, the hosts it was refused most often (a folded summary counts N times)."""
    query = Query(decisions=frozenset({"deny"}), since=since)
    counts: dict[str, Counter[str]] = {}
    for record in query.select(records):
        if record.get("kind") == "approval":
            continue  # steps of an approval, not requests
        host = str(record.get("host") or "")
        if not host or host == "*":
            continue
        n, _, _ = weight(record)
        counts.setdefault(str(record.get("skill") or ""), Counter())[host] += n
    return {skill: c.most_common(per_skill) for skill, c in sorted(counts.items())}


def skills_view(policy: PolicySet, timeline: Timeline | None,
                open_connections: Mapping[str, int]) -> list[dict[str, Any]]:
    out = []
    for name, skill in sorted(policy.skills.items()):
        last = timeline.last_seen(name) if timeline is not None else None
        out.append({
            "name": name, "mode": str(skill.mode), "source": str(skill.source),
            "rules": [_rule(r) for r in skill.rules],
            "credentials": [{"name": c.name, "header": c.header,
                             "placeholder": c.placeholder is not None}
                            for c in skill.credentials.values()],
            "limits": _limits(skill.limits),
            "last_activity": _iso(last) if last is not None else None,
            "open_connections": open_connections.get(name, 0),
        })
    return out


def _rule(rule: Rule) -> dict[str, Any]:
    return {
        "rule": rule.label, "host": ("*." if rule.wildcard else "") + rule.host,
        "ports": sorted(rule.ports),
        "methods": sorted(rule.methods) if rule.methods is not None else None,
        "paths": list(rule.paths) if rule.paths is not None else None,
        "credential": rule.credential, "raw_tcp": rule.raw_tcp,
        "approval": ({"wait": rule.approval.wait, "valid_for": rule.approval.valid_for}
                     if rule.approval is not None else None),
        "limits": _limits(rule.limits),
    }


def _limits(limits: Limits | None) -> dict[str, int] | None:
    if limits is None:
        return None
    return {k: v for k, v in (("requests_per_minute", limits.requests_per_minute),
                              ("concurrent_connections", limits.concurrent_connections))
            if v is not None}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")
