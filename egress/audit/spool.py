"""The spool: audit lines waiting to be shipped, on disk, with one cursor per destination.

    DATA_DIR/spool/000000000001.seg     lines 1 ... (segment files, named by their first line)
    DATA_DIR/spool/000000004711.seg
    DATA_DIR/spool/<destination>.cursor the next line that destination has not confirmed

The writer appends each audit line once (`append`: one `os.write` on an O_APPEND
descriptor, on the event loop like the audit line itself: microseconds, no lock). Each
destination's shipper reads from its cursor, sends, and moves the cursor only once the
destination confirmed (`commit`), so a destination that is down for hours gets every line
when it returns, in order; a line is sent again only when egress cannot know whether it
arrived (a crash, or a connection that broke right after it was written). Segments every
cursor has passed are deleted.

The spool is bounded (`settings.audit.spool_max_bytes`): past it the oldest segment is
dropped, every cursor still in it jumps past it, and `take_drops` reports how many lines each
destination lost, which the writer audits (`event: ship_overflow`) and the metrics count.
Nothing is dropped silently. The request path never waits for a destination.

Thread safety: `append` runs on the event loop; `read`, `commit` and `depth` on the shipping
thread. Segment changes and cursor moves happen under one lock, taken on the event loop only
when a segment is full.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Position", "Spool"]

log = logging.getLogger("egress.audit")

_SEGMENT = re.compile(r"^(\d{12})\.seg$")
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Position:
    """A place in the spool: the index of the next line, the segment it is in, and where."""

    index: int
    segment: int  # the first index of the segment file
    offset: int  # bytes into it


@dataclass
class _Segment:
    start: int
    size: int


class Spool:
    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        """No I/O here: `open` reads what is on disk."""
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = max(64 * 1024, min(64 * 2**20, max_bytes // 8))
        self.next_index = 1  # the index the next appended line gets
        self.errors = 0  # appends that failed (disk full): lines the destinations never get
        self.dropped: dict[str, int] = {}  # lines dropped unshipped (spool full), since start
        self._segments: list[_Segment] = []  # oldest first; the last is being appended to
        self._cursors: dict[str, Position] = {}
        self._drops: dict[str, int] = {}
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._opened = False

    # -- set-up ---------------------------------------------------------------------------
    def open(self) -> None:
        """Read the segments and cursors on disk (once)."""
        if self._opened:
            return
        self._opened = True
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for entry in sorted(self.directory.iterdir()):
            match = _SEGMENT.match(entry.name)
            if match:
                self._segments.append(_Segment(int(match.group(1)), entry.stat().st_size))
        if self._segments:
            last = self._segments[-1]
            path = self._path(last.start)
            data = path.read_bytes()
            whole = data.rfind(b"\n") + 1
            if whole != len(data):  # a line torn by a crash: it never was one
                os.truncate(path, whole)
                last.size = whole
            self.next_index = last.start + data.count(b"\n", 0, whole)
        for entry in self.directory.glob("*.cursor"):
            try:
                saved = json.loads(entry.read_text())
                position = Position(int(saved["index"]), int(saved["segment"]),
                                    int(saved["offset"]))
                self._cursors[str(saved["name"])] = position
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("egress: spool cursor %s is unreadable; its destination starts "
                            "at the end of the spool", entry.name)
        if not self._segments:
            self.next_index = max([1, *(p.index for p in self._cursors.values())])

    def register(self, names: set[str]) -> None:
        """The destinations now configured: new ones start at the end of the spool (they get
        lines written from now on); cursors of destinations no longer configured go."""
        with self._lock:
            for name in set(self._cursors) - names:
                del self._cursors[name]
                self._cursor_path(name).unlink(missing_ok=True)
            for name in names - set(self._cursors):
                self._cursors[name] = self._end()
                self._save(name)
            for name, pos in list(self._cursors.items()):
                if pos.index > self.next_index:  # a cursor from another spool: the end
                    self._cursors[name] = self._end()
                    self._save(name)
                elif pos.index < self.next_index and self._segment_of(pos) is None:
                    # Its lines are gone (segments deleted by hand): go on from the oldest
                    # line still here, and count what was lost (audited like an overflow).
                    later = [s for s in self._segments if s.start > pos.index]
                    to = Position(later[0].start, later[0].start, 0) if later else self._end()
                    self._lost(name, to.index - pos.index)
                    self._cursors[name] = to
                    self._save(name)
            self._collect()

    def resize(self, max_bytes: int) -> None:
        """A new bound (policy reload); applies from the next append."""
        self.max_bytes = max_bytes
        self.segment_bytes = max(64 * 1024, min(64 * 2**20, max_bytes // 8))

    def _end(self) -> Position:
        if self._segments:
            last = self._segments[-1]
            return Position(self.next_index, last.start, last.size)
        return Position(self.next_index, self.next_index, 0)

    # -- the event loop: appending ----------------------------------------------------------
    def append(self, line: bytes) -> None:
        """Add one line (ending in a newline). Never raises."""
        try:
            last = self._segments[-1] if self._segments else None
            full = last is not None and last.size > 0 and \
                last.size + len(line) > self.segment_bytes
            if self._fd is None or full:
                self._roll(full)
            assert self._fd is not None
            written = os.write(self._fd, line)
            if written != len(line):
                os.write(self._fd, line[written:])
            self._segments[-1].size += len(line)
            self.next_index += 1
        except OSError:
            self.errors += 1
            self._close_fd()
            return
        if self._total() > self.max_bytes and len(self._segments) > 1:
            self._drop_oldest()

    def take_drops(self) -> list[tuple[str, int]]:
        if not self._drops:
            return []
        with self._lock:
            drops, self._drops = sorted(self._drops.items()), {}
        return drops

    def _roll(self, full: bool) -> None:
        """Start a new segment file when the last is full; else (after a start or an error)
        open the last one again."""
        with self._lock:
            self._close_fd()
            if full or not self._segments:
                self._segments.append(_Segment(self.next_index, 0))
            last = self._segments[-1]
            self._fd = os.open(self._path(last.start), os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                               0o600)
            last.size = os.fstat(self._fd).st_size

    def _drop_oldest(self) -> None:
        with self._lock:
            while self._total() > self.max_bytes and len(self._segments) > 1:
                gone, after = self._segments[0], self._segments[1]
                for name, pos in self._cursors.items():
                    if pos.index < after.start:
                        self._lost(name, after.start - pos.index)
                        self._cursors[name] = Position(after.start, after.start, 0)
                        self._save(name)
                del self._segments[0]
                self._path(gone.start).unlink(missing_ok=True)
                log.error("egress: audit spool full (%d bytes): dropped lines %d..%d",
                          self.max_bytes, gone.start, after.start - 1)

    def _lost(self, name: str, lines: int) -> None:
        """`name` will never get `lines` lines: reported by take_drops, counted in dropped."""
        if lines > 0:
            self._drops[name] = self._drops.get(name, 0) + lines
            self.dropped[name] = self.dropped.get(name, 0) + lines

    def _total(self) -> int:
        return sum(s.size for s in self._segments)

    # -- the shipping thread: reading and confirming ----------------------------------------
    def cursor(self, name: str) -> Position | None:
        with self._lock:
            return self._cursors.get(name)

    def depth(self, name: str) -> int:
        """Lines not yet confirmed by `name`."""
        pos = self._cursors.get(name)
        return 0 if pos is None else max(0, self.next_index - pos.index)

    def read(self, pos: Position, max_lines: int,
             max_bytes: int = _READ_CHUNK) -> tuple[list[bytes], Position]:
        """Up to `max_lines` whole lines (about `max_bytes` at most) from `pos`, each with its
        newline, and the position after them. None when nothing more was appended yet, or
        when `pos` was dropped (the caller starts again from its cursor)."""
        lines: list[bytes] = []
        size = 0
        while len(lines) < max_lines and size < max_bytes and pos.index < self.next_index:
            with self._lock:
                segment = self._segment_of(pos)
                following = self._following(pos.segment)
            if segment is None:
                break
            end = segment.size  # what was written when we looked: whole lines only
            if pos.offset >= end:
                if following is None:
                    break
                # The next segment's first line is its name: if this one was cut short by
                # hand, the lines it lost are skipped, and the numbering stays right.
                pos = Position(max(pos.index, following.start), following.start, 0)
                continue
            try:
                with open(self._path(segment.start), "rb") as fh:
                    fh.seek(pos.offset)
                    data = fh.read(min(max(max_bytes - size, 1 << 16), end - pos.offset))
            except OSError:
                break
            *whole, _ = data.split(b"\n")
            if not whole:
                break  # a line longer than what was read: cannot be (lines are < 64 KiB)
            offset, index = pos.offset, pos.index
            for text in whole:
                if len(lines) >= max_lines or (lines and size + len(text) + 1 > max_bytes):
                    break
                lines.append(text + b"\n")
                size += len(text) + 1
                offset += len(text) + 1
                index += 1
            pos = Position(index, segment.start, offset)
        return lines, pos

    def commit(self, name: str, pos: Position) -> None:
        """`name` confirmed every line before `pos`: move its cursor (forward only) and
        delete segments every destination has passed."""
        with self._lock:
            current = self._cursors.get(name)
            if current is None or pos.index <= current.index:
                return
            self._cursors[name] = pos
            self._save(name)
            self._collect()

    def _collect(self) -> None:
        """Delete segments before every cursor (never the one being appended to)."""
        if not self._cursors:
            return
        low = min(p.index for p in self._cursors.values())
        while len(self._segments) > 1 and self._segments[1].start <= low:
            gone = self._segments.pop(0)
            self._path(gone.start).unlink(missing_ok=True)

    def _segment_of(self, pos: Position) -> _Segment | None:
        for segment in self._segments:
            if segment.start == pos.segment:
                return segment
        return None

    def _following(self, start: int) -> _Segment | None:
        for i, segment in enumerate(self._segments):
            if segment.start == start:
                return self._segments[i + 1] if i + 1 < len(self._segments) else None
        return None

    # -- files ------------------------------------------------------------------------------
    def _path(self, start: int) -> Path:
        return self.directory / f"{start:012d}.seg"

    def _cursor_path(self, name: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60]
        return self.directory / f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:12]}.cursor"

    def _save(self, name: str) -> None:
        pos = self._cursors[name]
        path = self._cursor_path(name)
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"name": name, "index": pos.index,
                                       "segment": pos.segment, "offset": pos.offset}))
            os.replace(tmp, path)
        except OSError:
            self.errors += 1

    def close(self) -> None:
        with self._lock:
            self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None
