"""The audit budget: a flood of denials is folded into summary lines instead of rotating the
evidence away.

One hostile skill wrote ~2,300 denials in 5 s; at that rate the default rotation (100 MiB x 10
files) deletes every older line within ~17 minutes, including what the skill did before the
flood. So denial lines are budgeted per skill (unauthenticated clients share one budget), per
interval (`settings.audit.budget_interval`, default 1m):

1. The first `budget` denial lines (default 60) of a skill in an interval are written in full.
2. Past the budget, the first occurrence of each *distinct* denial is still written in full,
   for up to `budget_distinct` (default 100) distinct denials more. Two denials are identical
   when skill, decision, reason, kind, host, port, method, path, rule and detail agree (not
   time, id, client port or resolved address).
3. Every other denial is folded: counted, with its first and last time, into one summary line
   per distinct denial, written when the interval ends (a timer, or the next record after
   it) and on shutdown. A summary is the record it stands for with `folded: N`, `first_seen`,
   `last_seen` (and `detail` saying why); none of those N denials has a line of its own.
4. A skill that sprays more distinct denials than `budget_distinct` (random host names, random
   paths) has the rest folded by skill, decision, reason and kind alone: `host: "*"`, `port: 0`,
   and a few sample destinations in `detail`.

So a skill can make egress write at most `budget + budget_distinct` full lines and as many
summaries, plus one coarse summary per reason and kind, per interval (with the defaults at
most ~330 lines, ~110 KiB, a minute; a flood of one repeated denial: ~62 lines),
whatever it sends, and every distinct denial up to that cap is kept verbatim. Allowed lines
(`log_allowed`) are not budgeted. A crash loses the counts of the current interval (at most
`budget_interval` of them), never a line already written. Pure: the caller writes what it
returns and supplies a monotonic clock.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from egress.audit.records import AuditRecord, new_request_id, timestamp

__all__ = ["Budget", "DenialFolder", "FOLDED_DECISIONS"]

FOLDED_DECISIONS = frozenset({"deny", "report"})
_SAMPLES = 5  # destinations named in the detail of a coarse summary
_COARSE = object()  # marks the key of a fold by skill, decision, reason and kind alone


@dataclass(frozen=True)
class Budget:
    lines: int = 60  # denial lines per skill per interval written in full
    interval: float = 60.0  # seconds
    distinct: int = 100  # more full lines past `lines`, one per distinct denial


_Key = tuple[object, ...]


@dataclass
class _Fold:
    template: AuditRecord  # the first denial folded under this key
    count: int = 0
    first: str = ""
    last: str = ""
    samples: list[str] = field(default_factory=list)  # coarse folds only


class DenialFolder:
    def __init__(self, budget: Budget | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget or Budget()  # replaced on policy reload; applies from now on
        self._clock = clock
        self._start = clock()
        self._written: Counter[str] = Counter()  # full lines per skill this interval
        self._extra: Counter[str] = Counter()  # of which past the budget (distinct ones)
        self._seen: dict[str, set[_Key]] = {}  # keys written in full this interval
        self._folds: dict[_Key, _Fold] = {}
        self.folded = 0  # denials folded (never written on their own), since start
        self.summaries = 0  # summary lines produced, since start

    def admit(self, record: AuditRecord) -> list[AuditRecord]:
        """What to write now for `record`: summaries of an interval that just ended, then the
        record itself unless it was folded."""
        out = self.due()
        # A step of an approval (a person's decision, an expiry) is never folded: a flood of
        # denials must not hide who approved what.
        if record.decision not in FOLDED_DECISIONS or record.kind == "approval":
            out.append(record)
            return out
        skill = record.skill or ""
        key = _identity(record)
        seen = self._seen.setdefault(skill, set())
        if self._written[skill] < self.budget.lines or (
                key not in seen and self._extra[skill] < self.budget.distinct):
            if self._written[skill] >= self.budget.lines:
                self._extra[skill] += 1
            self._written[skill] += 1
            seen.add(key)
            out.append(record)
            return out
        coarse = key not in seen
        if coarse:
            key = (_COARSE, skill, record.decision, record.reason, record.kind)
        fold = self._folds.get(key)
        if fold is None:
            fold = self._folds[key] = _Fold(record, first=record.ts)
        fold.count += 1
        fold.last = record.ts
        if coarse and len(fold.samples) < _SAMPLES:
            where = f"{record.host}:{record.port}"
            if where not in fold.samples:
                fold.samples.append(where[:100])
        self.folded += 1
        return out

    def due(self) -> list[AuditRecord]:
        """The summaries of the interval, if it has ended (call it from a timer)."""
        if self._clock() - self._start < self.budget.interval:
            return []
        return self.flush()

    def flush(self) -> list[AuditRecord]:
        """Every pending summary now, and a fresh interval (shutdown, or the interval ended)."""
        out = [self._summary(key, fold) for key, fold in self._folds.items()]
        self.summaries += len(out)
        self._start = self._clock()
        self._written.clear()
        self._extra.clear()
        self._seen.clear()
        self._folds.clear()
        return out

    def _summary(self, key: _Key, fold: _Fold) -> AuditRecord:
        t = fold.template
        why = (f"audit budget of {self.budget.lines} denial lines per "
               f"{self.budget.interval:g}s exceeded")
        common: dict[str, Any] = {"folded": fold.count, "first_seen": fold.first, "last_seen": fold.last,
                  "client": None, "resolved": None, "id": new_request_id(), "ts": timestamp()}
        if key[0] is _COARSE:
            return replace(t, host="*", port=0, method=None, path=None, scheme=None, rule=None,
                           detail=(f"{fold.count} denials to more than "
                                   f"{self.budget.distinct} distinct destinations folded "
                                   f"({why}); e.g. {', '.join(fold.samples)}"),
                           **common)
        return replace(t, detail=f"{fold.count} identical denials folded ({why})"
                       + (f"; {t.detail}" if t.detail else ""),
                       **common)


def _identity(r: AuditRecord) -> _Key:
    """What makes two denials the same denial (not when, which connection or request id)."""
    return (r.skill or "", r.decision, r.reason, r.kind, r.host, r.port, r.method, r.scheme,
            r.path, r.rule, r.detail, r.credential)
