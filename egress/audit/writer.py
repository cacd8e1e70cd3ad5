"""Writing the audit log: one JSON object per line in DATA_DIR/audit.jsonl.

Each record is written with a single `os.write` on an O_APPEND descriptor: the line is in the
kernel the moment the call returns, so it survives a crash of the process, and concurrent
writers never interleave within a line. A line is ~300 bytes, so the write costs microseconds
and can stay on the event loop.

Every line is linked into the hash chain and some are signed (egress/audit/chain.py); the
chain continues from the last line on disk after a restart. With shipping configured, each
line is also appended to the spool (egress/audit/spool.py: one more `os.write`), from which
a separate thread sends it off the host; lines the spool had to drop are audited here.
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
from typing import Any, Protocol

from egress.audit.chain import (
    CHECKPOINT_LINES,
    CHECKPOINT_SECONDS,
    ChainState,
    Signer,
    advance,
    last_line,
    link,
)
from egress.audit.records import SCHEMA_VERSION, AuditRecord, new_request_id, timestamp

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


class Spooler(Protocol):
    """Where written lines go besides the file (egress/audit/spool.py)."""

    def append(self, line: bytes) -> None: ...

    def take_drops(self) -> list[tuple[str, int]]:
        """(destination, lines) dropped unshipped since the last call (spool full)."""
        ...


class AuditWriter:
    """Appends records to a file (or to stdout with path "-", for container log collectors)."""

    def __init__(self, path: str | os.PathLike[str], rotation: Rotation | None = None, *,
                 clock: Callable[[], float] = time.time, signer: Signer | None = None,
                 spool: Spooler | None = None) -> None:
        self.path = str(path)
        self._fd: int | None = None
        self.lines_written = 0
        self.write_errors = 0
        self.rotation = rotation or Rotation()  # replaced on policy reload
        self.rotations = 0
        self._clock = clock
        self._size = 0
        self._born = 0.0  # time of the current file's first line
        self.signer = signer  # checkpoints are signed with it (None: the chain only)
        self.spool = spool  # set and replaced by the runtime when shipping is configured
        self.chain: ChainState | None = None  # read from the file's tail on first open
        self._sign_next = True  # the first line after a start or a rotation is signed
        self._unsigned = 0  # lines since the last signed one
        self._signed_at = 0.0
        self._draining_drops = False

    def _open(self) -> int:
        if self._fd is None:
            if self.path == "-":
                self._fd = sys.stdout.fileno()
                if self.chain is None:
                    self.chain = ChainState()  # nothing to read back: a new chain
            else:
                Path(self.path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                torn = False
                if self.chain is None:  # continue the chain where the files on disk end
                    self.chain, torn = last_line([Path(self.path), Path(f"{self.path}.1")])
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                if torn and _still_torn(self.path):
                    os.write(self._fd, b"\n")  # end a line torn by a crash; it stays visible
                self._size = os.fstat(self._fd).st_size
                self._born = _first_line_time(self.path, self._clock())
        return self._fd

    def _rotate_if_due(self, fd: int, size: int) -> tuple[int, bool]:
        """The descriptor to write a line of `size` bytes to, and whether it is a new file."""
        rot = self.rotation
        if self.path == "-" or self._size == 0:
            return fd, False
        too_big = rot.max_bytes > 0 and self._size + size > rot.max_bytes
        too_old = rot.max_age is not None and self._clock() - self._born >= rot.max_age
        if not (too_big or too_old):
            return fd, False
        self._close_fd()
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
        return self._open(), True

    def write(self, record: AuditRecord) -> None:
        self._emit(record.to_json())

    def write_event(self, event: str, **fields: Any) -> None:
        """A line about the audit trail itself (`kind: "audit"`): a checkpoint, lines the
        spool dropped. Readers of decisions skip it: it has no `decision`."""
        self._emit(_event_json(event, fields))

    def _emit(self, body: str, *, force_sign: bool = False) -> None:
        text = ""
        try:
            fd = self._open()
            chain = self.chain if self.chain is not None else ChainState()
            self.chain = chain
            now = self._clock()
            sign = force_sign or self._sign_next or self._unsigned + 1 >= CHECKPOINT_LINES \
                or now - self._signed_at >= CHECKPOINT_SECONDS
            text = link(body, chain, self.signer if sign else None)
            fd, rotated = self._rotate_if_due(fd, len(text) + 1)
            if rotated and not sign:  # a new file: its first line is a checkpoint
                sign = True
                text = link(body, chain, self.signer)
            advance(chain, text)  # the chain moves on even if the write fails: verify shows
            if sign and self.signer is not None:  # a line the file is missing
                self._sign_next, self._unsigned, self._signed_at = False, 0, now
            else:
                self._unsigned += 1
            line = text.encode("utf-8") + b"\n"
            written = os.write(fd, line)
            if written != len(line):  # short write (disk full): finish the line
                os.write(fd, line[written:])
            self.lines_written += 1
            self._size += len(line)
        except OSError:
            # Never let a full disk take the proxy down with it; the denial itself still
            # happens (deciding never depends on logging). Counted for metrics/health.
            self.write_errors += 1
            self._close_fd()
        if text and self.spool is not None:
            self._to_spool(text.encode("utf-8") + b"\n")

    def _to_spool(self, line: bytes) -> None:
        spool = self.spool
        assert spool is not None
        spool.append(line)  # never raises: the spool counts its own errors
        if self._draining_drops:
            return
        self._draining_drops = True
        try:
            for destination, lines in spool.take_drops():
                self.write_event(
                    "ship_overflow", destination=destination, dropped=lines,
                    detail=f"spool full: {lines} audit lines for {destination} dropped before "
                           f"they were shipped (settings.audit.spool_max_bytes)")
        finally:
            self._draining_drops = False

    def reopen(self) -> None:
        """Start a new descriptor (after the file was rotated away)."""
        self._close_fd()

    def checkpoint(self) -> None:
        """Sign the lines written since the last signature with a checkpoint line of its own
        (at shutdown, so the tail of the log is signed too). Nothing to sign: nothing written."""
        if self.signer is not None and self._unsigned > 0:
            detail = f"signs the {self._unsigned} lines before it"
            self._emit(_event_json("checkpoint", {"detail": detail}), force_sign=True)

    def close(self) -> None:
        """Checkpoint, then close the file (a later write opens it again)."""
        self.checkpoint()
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None and self.path != "-":
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None


def _still_torn(path: str) -> bool:
    """Whether the file still ends in the middle of a line a moment later: torn by a crash,
    not another process's line caught half-copied while we looked."""
    size = -1
    for _ in range(5):
        time.sleep(0.002)
        try:
            with open(path, "rb") as fh:
                now = fh.seek(0, os.SEEK_END)
                if now == 0:
                    return False
                fh.seek(now - 1)
                last = fh.read(1)
        except OSError:
            return False
        if last == b"\n":
            return False
        if now == size:
            return True
        size = now
    return True


def _event_json(event: str, fields: dict[str, Any]) -> str:
    data: dict[str, Any] = {"v": SCHEMA_VERSION, "ts": timestamp(), "id": new_request_id(),
                            "kind": "audit", "event": event}
    data.update((k, v) for k, v in fields.items() if v is not None)
    return json.dumps(data, separators=(",", ":"))


def _first_line_time(path: str, default: float) -> float:
    """When the first line of an audit file was written (now, if that cannot be read)."""
    try:
        with open(path, "rb") as fh:
            ts = json.loads(fh.readline(65536))["ts"]
        return datetime.fromisoformat(ts).timestamp()
    except (OSError, ValueError, KeyError, TypeError):
        return default
