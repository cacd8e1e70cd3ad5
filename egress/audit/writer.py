"""Writing the audit log: one JSON object per line in DATA_DIR/audit.jsonl.

Each record is written with a single `os.write` on an O_APPEND descriptor: the line is in the
kernel the moment the call returns, so it survives a crash of the process, and concurrent
writers never interleave within a line. A line is ~300 bytes, so the write costs microseconds
and can stay on the event loop.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from egress.audit.records import AuditRecord

__all__ = ["AUDIT_FILE", "AuditWriter", "Rotation"]

AUDIT_FILE = "audit.jsonl"


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
