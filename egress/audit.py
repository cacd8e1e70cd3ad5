"""The audit log: one JSON object per line in DATA_DIR/audit.jsonl.

Every denial (and every 407) is written; allowed decisions too when `settings.audit.log_allowed`.
Each record is written with a single `os.write` on an O_APPEND descriptor: the line is in the
kernel the moment the call returns, so it survives a crash of the process, and concurrent
writers never interleave within a line. A line is ~300 bytes, so the write costs microseconds
and can stay on the event loop.

What never goes in: secret values, Authorization/Cookie/Proxy-Authorization values, query
strings, bodies. AuditRecord has no field that could hold them.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["AUDIT_FILE", "SCHEMA_VERSION", "AuditRecord", "AuditWriter", "Rotation", "new_request_id",
           "read_records", "parse_record", "timestamp"]

AUDIT_FILE = "audit.jsonl"
SCHEMA_VERSION = 1


def new_request_id() -> str:
    return secrets.token_hex(8)


def timestamp() -> str:
    """Now, as an audit line's `ts`: RFC 3339 UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class AuditRecord:
    decision: str  # allow | deny | report
    reason: str  # a Reason code
    kind: str  # connect | http | tls
    host: str  # as requested, normalised
    port: int
    skill: str | None = None  # None when unauthenticated
    client: str | None = None  # "ip:port" of the skill's connection
    method: str | None = None
    scheme: str | None = None
    path: str | None = None  # never with a query string
    rule: str | None = None  # "file:line host" of the rule that matched
    resolved: str | None = None  # the address dialled, if any
    policy: str | None = None  # digest of the policy in force
    detail: str | None = None  # short extra context safe to show (e.g. "127.0.0.1 is loopback")
    credential: str | None = None  # the *name* of a brokered credential, never its value
    # A summary line of identical denials folded under the audit budget (egress/audit_fold.py):
    # how many denials it stands for (none of them written on its own), first and last seen.
    folded: int | None = None
    first_seen: str | None = None
    last_seen: str | None = None
    id: str = field(default_factory=new_request_id)
    ts: str = field(default_factory=timestamp)

    def to_json(self) -> str:
        data: dict[str, Any] = {"v": SCHEMA_VERSION}
        data.update((k, v) for k, v in asdict(self).items() if v is not None or k in _ALWAYS)
        # ASCII only: a skill-controlled path with C1 controls (U+009B is a one-character
        # CSI), bidi overrides or U+2028 then cannot act on a terminal running `tail -f`,
        # nor split the line for readers that honour Unicode line breaks (str.splitlines).
        return json.dumps(data, separators=(",", ":"))


_ALWAYS = frozenset({"skill", "ts", "id", "decision", "reason", "host", "port", "kind"})


@dataclass(frozen=True)
class Rotation:
    """When AuditWriter starts a new file: AUDIT.1 is the newest rotated file, AUDIT.N the oldest.

    A file is renamed whole between two lines, so rotation never cuts or drops a line;
    only files beyond `max_files` are deleted (retention).
    """

    max_bytes: int = 0  # rotate before a line would take the file past this; 0: never
    max_files: int = 10
    max_age: float | None = None  # seconds since the file's first line; None: never


class AuditWriter:
    """Appends records to a file (or to stdout with path "-", for container log collectors)."""

    def __init__(self, path: str | os.PathLike[str], rotation: Rotation | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self._fd: int | None = None
        self.lines_written = 0
        self.write_errors = 0
        self.rotation = rotation or Rotation()  # replaced on policy reload
        self.rotations = 0
        self._clock = clock
        self._size = 0
        self._born = 0.0  # time of the current file's first line

    def _open(self) -> int:
        if self._fd is None:
            if self.path == "-":
                self._fd = sys.stdout.fileno()
            else:
                Path(self.path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                self._size = os.fstat(self._fd).st_size
                self._born = _first_line_time(self.path, self._clock())
        return self._fd

    def _rotate_if_due(self, fd: int, size: int) -> int:
        rot = self.rotation
        if self.path == "-" or self._size == 0:
            return fd
        too_big = rot.max_bytes > 0 and self._size + size > rot.max_bytes
        too_old = rot.max_age is not None and self._clock() - self._born >= rot.max_age
        if not (too_big or too_old):
            return fd
        self.close()
        try:
            oldest = f"{self.path}.{rot.max_files}"
            if os.path.exists(oldest):
                os.unlink(oldest)
            for i in range(rot.max_files - 1, 0, -1):
                if os.path.exists(f"{self.path}.{i}"):
                    os.rename(f"{self.path}.{i}", f"{self.path}.{i + 1}")
            os.rename(self.path, f"{self.path}.1")
            self.rotations += 1
        except OSError:
            self.write_errors += 1  # keep appending to the current file rather than lose lines
        return self._open()

    def write(self, record: AuditRecord) -> None:
        line = (record.to_json() + "\n").encode("utf-8")
        try:
            fd = self._rotate_if_due(self._open(), len(line))
            written = os.write(fd, line)
            if written != len(line):  # short write (disk full): finish the line
                os.write(fd, line[written:])
            self.lines_written += 1
            self._size += len(line)
        except OSError:
            # Never let a full disk take the proxy down with it; the denial itself still
            # happens (deciding never depends on logging). Counted for metrics/health.
            self.write_errors += 1
            self.close()

    def reopen(self) -> None:
        """Start a new descriptor (after the file was rotated away)."""
        self.close()

    def close(self) -> None:
        if self._fd is not None and self.path != "-":
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None


def _first_line_time(path: str, default: float) -> float:
    """When the first line of an audit file was written (now, if that cannot be read)."""
    try:
        with open(path, "rb") as fh:
            ts = json.loads(fh.readline(65536))["ts"]
        return datetime.fromisoformat(ts).timestamp()
    except (OSError, ValueError, KeyError, TypeError):
        return default


def read_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the records of one audit file; lines that are not JSON objects are skipped."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            record = parse_record(line)
            if record is not None:
                yield record


def parse_record(line: str | bytes) -> dict[str, Any] | None:
    """One audit line as a dict, or None for a blank, torn or foreign line."""
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None
