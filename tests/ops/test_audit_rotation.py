"""Audit log rotation: by size and by age, never losing or cutting a line; and following it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from egress.audit import AuditRecord, Rotation
from egress.audit import AuditWriter as _Writer
from egress.audit.chain import ChainState
from egress.audit.query import audit_files, follow, read_all
from tests.fakes import FakeClock


def record(i: int, ts: str = "2025-01-01T00:00:00.000Z") -> AuditRecord:
    # Same length for every i < 10000: makes sizes predictable.
    return AuditRecord(decision="deny", reason="host_not_allowed", kind="connect",
                       host="h.test", port=443, skill="s", id=f"{i:016d}", ts=ts)


# Every line also carries the hash chain's fields (egress/audit/chain.py). A chain already at
# seq 1000 (four digits for every line here) with a full-length digest keeps them one length.
_CHAIN = ',"seq":1001,"prev":"' + "A" * 43 + '"'
LINE = len(record(0).to_json()) + len(_CHAIN) + 1


def AuditWriter(*args: Any, **kwargs: Any) -> _Writer:  # noqa: N802 -- stands in for the class
    writer = _Writer(*args, **kwargs)
    writer.chain = ChainState(1000, "A" * 43)
    return writer


def ids(directory: Path) -> list[int]:
    return [int(r["id"]) for r in read_all(audit_files(directory))]


def test_size_rotation_keeps_every_line_in_order(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path / "audit.jsonl", Rotation(max_bytes=5 * LINE, max_files=50))
    for i in range(23):
        writer.write(record(i))
    writer.close()
    files = audit_files(tmp_path)
    assert [f.name for f in files] == ["audit.jsonl.4", "audit.jsonl.3", "audit.jsonl.2",
                                       "audit.jsonl.1", "audit.jsonl"]
    assert ids(tmp_path) == list(range(23))
    assert [f.stat().st_size for f in files] == [5 * LINE] * 4 + [3 * LINE]
    assert writer.rotations == 4
    for f in files:  # every line whole
        assert all(json.loads(line) for line in f.read_text().splitlines())


def test_retention_deletes_only_the_oldest_files(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path / "audit.jsonl", Rotation(max_bytes=2 * LINE, max_files=2))
    for i in range(11):
        writer.write(record(i))
    writer.close()
    assert [f.name for f in audit_files(tmp_path)] == ["audit.jsonl.2", "audit.jsonl.1",
                                                       "audit.jsonl"]
    assert ids(tmp_path) == [6, 7, 8, 9, 10]


def test_no_rotation_when_max_bytes_is_zero(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path / "audit.jsonl", Rotation(max_bytes=0))
    for i in range(50):
        writer.write(record(i))
    writer.close()
    assert [f.name for f in audit_files(tmp_path)] == ["audit.jsonl"]


def test_a_line_longer_than_max_bytes_is_written_whole(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path / "audit.jsonl", Rotation(max_bytes=10, max_files=5))
    for i in range(3):
        writer.write(record(i))
    writer.close()
    assert ids(tmp_path) == [0, 1, 2]
    assert [f.stat().st_size for f in audit_files(tmp_path)] == [LINE, LINE, LINE]


def test_age_rotation(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    writer = AuditWriter(tmp_path / "audit.jsonl", Rotation(max_age=3600, max_files=5),
                         clock=clock)
    writer.write(record(0))
    clock.now += 3599
    writer.write(record(1))
    clock.now += 1  # the file's first line is now an hour old
    writer.write(record(2))
    writer.close()
    assert [f.name for f in audit_files(tmp_path)] == ["audit.jsonl.1", "audit.jsonl"]
    assert ids(tmp_path) == [0, 1, 2]


def test_age_of_an_existing_file_comes_from_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text(record(0, ts="2025-01-01T00:00:00.000Z").to_json()[:-1] + _CHAIN + "}\n")
    clock = FakeClock(now=1735689600.0 + 7200)  # 2025-01-01T02:00:00Z
    writer = AuditWriter(path, Rotation(max_age=3600), clock=clock)
    writer.write(record(1))
    writer.close()
    assert [f.name for f in audit_files(tmp_path)] == ["audit.jsonl.1", "audit.jsonl"]
    assert ids(tmp_path) == [0, 1]


def test_rotation_settings_can_change_while_writing(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path / "audit.jsonl")
    for i in range(4):
        writer.write(record(i))
    writer.rotation = Rotation(max_bytes=2 * LINE)  # what a policy reload does
    writer.write(record(4))
    writer.close()
    assert ids(tmp_path) == [0, 1, 2, 3, 4]
    assert [f.name for f in audit_files(tmp_path)] == ["audit.jsonl.1", "audit.jsonl"]


@pytest.mark.parametrize("names, expected", [
    pytest.param(["audit.jsonl"], ["audit.jsonl"], id="only the live file"),
    pytest.param(["audit.jsonl.10", "audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"],
                 ["audit.jsonl.10", "audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"],
                 id="numeric order, not text order"),
    pytest.param(["audit.jsonl.1", "audit.jsonl.bak", "audit.jsonl.1.gz", "other.jsonl.1"],
                 ["audit.jsonl.1"], id="only our rotated names"),
    pytest.param([], [], id="no log yet"),
])
def test_audit_files_order(tmp_path: Path, names: list[str], expected: list[str]) -> None:
    for name in names:
        (tmp_path / name).write_text("")
    assert [f.name for f in audit_files(tmp_path)] == expected


def test_follow_reads_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = AuditWriter(path, Rotation(max_bytes=7 * LINE, max_files=10))
    writer.write(record(999))  # before following: not reported
    batches = iter([range(0, 5), range(5, 10), range(10, 15), range(15, 20)])
    done = False

    def sleep(_: float) -> None:
        nonlocal done
        batch = next(batches, None)
        if batch is None:
            done = True
            return
        for i in batch:
            writer.write(record(i))

    seen = [int(r["id"]) for batch in follow(path, stop=lambda: done, sleep=sleep)
            for r in batch]
    writer.close()
    assert seen == list(range(20))
    assert writer.rotations == 2


def test_follow_from_start_yields_what_is_there_as_one_batch(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = AuditWriter(path)
    for i in range(3):
        writer.write(record(i))
    writer.close()
    calls = 0

    def sleep(_: float) -> None:
        nonlocal calls
        calls += 1

    batches = [[int(r["id"]) for r in batch]
               for batch in follow(path, from_start=True, stop=lambda: calls > 0, sleep=sleep)]
    assert batches == [[0, 1, 2]]
