"""Questions asked of the audit log: which denials, by whom, where, when, how often.

Reads DATA_DIR/audit.jsonl and its rotated predecessors (audit.jsonl.N ... audit.jsonl.1,
oldest first), filters records with a `Query`, groups them with `group`, and tails the live
file with `follow` (surviving rotation). Pure functions over dicts, except for the readers.
Used by `egress denials` and `egress policy suggest`.
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from egress.audit.records import parse_record, read_records
from egress.audit.writer import AUDIT_FILE
from egress.policy.units import parse_duration

__all__ = [
    "DENIAL_DECISIONS",
    "Group",
    "Query",
    "audit_files",
    "follow",
    "group",
    "parse_time",
    "read_all",
    "weight",
]

DENIAL_DECISIONS = frozenset({"deny", "report"})  # report: would have been denied
_ROTATED = re.compile(r"\.(\d+)$")
_GROUP_KEYS = ("host", "skill", "reason")


def audit_files(data_dir: str | os.PathLike[str], name: str = AUDIT_FILE) -> list[Path]:
    """The audit file and its rotated copies, oldest first (AUDIT.N, ..., AUDIT.1, AUDIT)."""
    root = Path(data_dir)
    rotated: list[tuple[int, Path]] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return []
    for path in entries:
        if path.name.startswith(name + "."):
            match = _ROTATED.search(path.name)
            if match and path.name == f"{name}.{match.group(1)}" and path.is_file():
                rotated.append((int(match.group(1)), path))
    out = [p for _, p in sorted(rotated, reverse=True)]
    if (root / name).is_file():
        out.append(root / name)
    return out


def read_all(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Records of every file in order; a file rotated away while reading is skipped."""
    for path in paths:
        try:
            yield from read_records(path)
        except FileNotFoundError:
            continue


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """`--since`/`--until`: an age ("1h", "30m", "7d": that long before now) or a UTC time
    ("2025-01-31", "2025-01-31T12:00", "2025-01-31T12:00:00Z"; no zone means UTC)."""
    now = now or datetime.now(UTC)
    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither an age (30m, 1h, 7d) nor a time "
                         f"(2025-01-31T12:00:00Z)") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def record_time(record: dict[str, Any]) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(record["ts"]))
    except (KeyError, ValueError):
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


@dataclass(frozen=True)
class Query:
    """Which records to keep. `host` may be a glob: "*.example.com", "api.*"."""

    skill: str | None = None
    host: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    decisions: frozenset[str] = DENIAL_DECISIONS

    def matches(self, record: dict[str, Any]) -> bool:
        if record.get("decision") not in self.decisions:
            return False
        if self.skill is not None and record.get("skill") != self.skill:
            return False
        if self.reason is not None and record.get("reason") != self.reason:
            return False
        if self.host is not None:
            host = str(record.get("host", "")).lower()
            pattern = self.host.lower().rstrip(".")
            if host != pattern and not fnmatch.fnmatchcase(host, pattern):
                return False
        if self.since is not None or self.until is not None:
            when = record_time(record)
            if when is None:
                return False
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when > self.until:
                return False
        return True

    def select(self, records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        return (r for r in records if self.matches(r))


@dataclass(frozen=True)
class Group:
    key: str
    count: int
    first: str  # ts of the first record
    last: str  # ts of the last record


def group(records: Iterable[dict[str, Any]], by: str) -> list[Group]:
    """Counts and first/last seen per value of `by` (host, skill or reason), most first.

    A summary line of folded denials (egress/audit/fold.py) counts as the `folded` denials it
    stands for, seen from its `first_seen` to its `last_seen`."""
    if by not in _GROUP_KEYS:
        raise ValueError(f"cannot group by {by!r}; use one of {', '.join(_GROUP_KEYS)}")
    seen: dict[str, list[Any]] = {}
    for record in records:
        value = record.get(by)
        key = "-" if value is None else str(value)
        count, first, last = weight(record)
        entry = seen.get(key)
        if entry is None:
            seen[key] = [count, first, last]
        else:
            entry[0] += count
            entry[1] = min(entry[1], first)
            entry[2] = max(entry[2], last)
    groups = [Group(k, v[0], v[1], v[2]) for k, v in seen.items()]
    return sorted(groups, key=lambda g: (-g.count, g.key))


def weight(record: dict[str, Any]) -> tuple[int, str, str]:
    """(how many requests a record stands for, first ts, last ts): 1 and its own ts, or, for
    a summary line of folded denials, its `folded` count and `first_seen`/`last_seen`."""
    ts = str(record.get("ts", ""))
    folded = record.get("folded")
    if isinstance(folded, int) and not isinstance(folded, bool) and folded > 0:
        return folded, str(record.get("first_seen") or ts), str(record.get("last_seen") or ts)
    return 1, ts, ts


def follow(
    path: Path, *, from_start: bool = False, poll: float = 0.5,
    stop: Callable[[], bool] = lambda: False, sleep: Callable[[float], None] = time.sleep,
) -> Iterator[list[dict[str, Any]]]:
    """Batches of records appended to `path` (from its start with from_start, else from now
    on), one batch per read, until stop() is true; follows rotation.

    When the file is renamed away (rotation), the rest of the old file is read to its end
    before the new file is opened, so no line written meanwhile is missed. (A file that
    rotated twice within one `poll` interval would skip the middle file: with rotation
    sizes in megabytes that takes thousands of denials a second.)
    """
    handle = _open(path, at_end=not from_start)
    buffer = b""
    while not stop():
        if handle is None:
            handle = _open(path, at_end=False)
            if handle is None:
                sleep(poll)
                continue
        chunk = handle.read(1 << 20)
        if chunk:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            batch = [r for r in map(parse_record, lines) if r is not None]
            if batch:
                yield batch
            continue
        if _replaced(handle, path):
            handle.close()
            handle, buffer = None, b""  # a partial last line of a rotated file is never completed
            continue
        sleep(poll)
    if handle is not None:
        handle.close()


def _open(path: Path, *, at_end: bool) -> Any:
    try:
        fh = open(path, "rb")  # noqa: SIM115 -- closed by follow()
    except OSError:
        return None
    if at_end:
        fh.seek(0, os.SEEK_END)
    return fh


def _replaced(handle: Any, path: Path) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino
    except OSError:
        return True
