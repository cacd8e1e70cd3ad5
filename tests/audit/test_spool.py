"""The spool: durable across restarts, in order, bounded, and never silent about a loss.

Unit tests drive egress/audit/spool.py directly (a crash is: drop the object, open the
directory again). The last test runs egress against an HTTP receiver that takes connections
and never answers: every request is still answered, and the overflow is audited and counted.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from egress.audit import AuditRecord, AuditWriter
from egress.audit.spool import Spool
from tests.audit.shipworld import ship_world


def line(i: int, pad: int = 0) -> bytes:
    return json.dumps({"n": i, "pad": "x" * pad}).encode() + b"\n"


def drain(spool: Spool, name: str, batch: int = 7, limit: int = 100_000) -> list[int]:
    """Read and confirm everything `name` has not confirmed, in batches."""
    got: list[int] = []
    for _ in range(limit):
        cursor = spool.cursor(name)
        assert cursor is not None
        lines, after = spool.read(cursor, batch)
        if not lines:
            return got
        got += [json.loads(x)["n"] for x in lines]
        spool.commit(name, after)
    raise AssertionError("spool did not drain")


def opened(directory: Path, names: set[str], max_bytes: int = 2**30) -> Spool:
    spool = Spool(directory, max_bytes)
    spool.open()
    spool.register(names)
    return spool


def test_every_line_in_order_across_a_restart_and_independent_cursors(tmp_path: Path) -> None:
    spool = opened(tmp_path, {"a", "b"})
    for i in range(1, 501):
        spool.append(line(i, 200))
    assert spool.depth("a") == spool.depth("b") == 500
    got_a = drain(spool, "a")
    assert got_a == list(range(1, 501)) and spool.depth("a") == 0
    lines, after = spool.read(spool.cursor("b"), 120)  # type: ignore[arg-type]
    spool.commit("b", after)
    # A crash: nothing closed, the object is gone. What b did not confirm, it gets again.
    again = opened(tmp_path, {"a", "b"})
    for i in range(501, 511):
        again.append(line(i))
    assert drain(again, "a") == list(range(501, 511))
    assert drain(again, "b") == list(range(121, 511))  # no duplicates, no gaps
    assert again.dropped == {}


def test_sent_but_unconfirmed_lines_are_read_again_from_the_cursor(tmp_path: Path) -> None:
    spool = opened(tmp_path, {"a"})
    for i in range(1, 21):
        spool.append(line(i))
    first, _ = spool.read(spool.cursor("a"), 10)  # type: ignore[arg-type]
    second, _ = spool.read(spool.cursor("a"), 10)  # type: ignore[arg-type]
    assert first == second  # not committed: the same lines again
    assert drain(spool, "a") == list(range(1, 21))


def test_a_new_destination_starts_at_the_end_and_a_removed_one_is_forgotten(tmp_path: Path) -> None:
    spool = opened(tmp_path, {"a"})
    for i in range(1, 11):
        spool.append(line(i))
    spool.register({"a", "new"})
    spool.append(line(11))
    assert drain(spool, "new") == [11]
    spool.register({"new"})
    assert spool.cursor("a") is None
    assert not any("a-" in p.name for p in tmp_path.glob("*.cursor"))


def test_a_torn_last_line_is_cut_and_numbering_continues(tmp_path: Path) -> None:
    spool = opened(tmp_path, {"a"})
    for i in range(1, 6):
        spool.append(line(i))
    segment = sorted(tmp_path.glob("*.seg"))[-1]
    with open(segment, "ab") as fh:
        fh.write(b'{"n": 6, "pad": "tor')  # a crash in the middle of a write
    again = opened(tmp_path, {"a"})
    again.append(line(6))
    assert drain(again, "a") == [1, 2, 3, 4, 5, 6]


def test_overflow_drops_oldest_counts_each_destination_and_keeps_order(tmp_path: Path) -> None:
    spool = opened(tmp_path, {"slow", "fast"}, max_bytes=256 * 1024)
    got_fast: list[int] = []
    total = 3000
    for i in range(1, total + 1):
        spool.append(line(i, 300))  # ~320 bytes: ~1 MB in all, four times the bound
        if i % 100 == 0:
            got_fast += drain(spool, "fast")
    got_fast += drain(spool, "fast")
    assert got_fast == list(range(1, total + 1))  # kept up: lost nothing
    assert sum(p.stat().st_size for p in tmp_path.glob("*.seg")) <= 256 * 1024 + 64 * 1024
    drops = dict(spool.take_drops())
    assert set(drops) == {"slow"} and drops["slow"] == spool.dropped["slow"]
    assert spool.take_drops() == []  # reported once
    got_slow = drain(spool, "slow")
    # What is left is the newest lines, in order, and lost + kept is every line.
    assert got_slow == list(range(total - len(got_slow) + 1, total + 1))
    assert drops["slow"] + len(got_slow) == total


def test_segments_deleted_by_hand_are_counted_as_dropped(tmp_path: Path) -> None:
    spool = opened(tmp_path, {"a"}, max_bytes=2**30)
    spool.segment_bytes = 4096
    for i in range(1, 201):
        spool.append(line(i, 100))
    segments = sorted(tmp_path.glob("*.seg"))
    assert len(segments) > 3
    for seg in segments[:2]:  # someone truncates the spool from the front
        seg.unlink()
    again = opened(tmp_path, {"a"})
    got = drain(again, "a")
    lost = dict(again.take_drops()).get("a", 0)
    assert lost > 0 and lost + len(got) == 200
    assert got == list(range(201 - len(got), 201))


def test_the_writer_audits_what_the_spool_dropped(tmp_path: Path) -> None:
    spool = opened(tmp_path / "spool", {"syslog://logs.test:514"}, max_bytes=128 * 1024)
    writer = AuditWriter(tmp_path / "audit.jsonl", spool=spool)
    for i in range(1500):
        writer.write(AuditRecord(decision="deny", reason="host_not_allowed", kind="connect",
                                 host=f"h{i}.test", port=443, skill="alpha"))
    writer.close()
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    events = [x for x in lines if x.get("event") == "ship_overflow"]
    assert events and all(e["destination"] == "syslog://logs.test:514" for e in events)
    assert sum(e["dropped"] for e in events) == spool.dropped["syslog://logs.test:514"]
    assert "settings.audit.spool_max_bytes" in events[0]["detail"]


def test_a_receiver_that_never_answers_slows_no_request_and_overflow_is_audited(
        tmp_path: Path) -> None:
    """The receiver takes TCP connections and never reads or answers: the lane waits on it,
    the request path does not; the spool hits its bound (1MiB) and says so."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as hole:
        port = hole.getsockname()[1]
        name = f"http://127.0.0.1:{port}/ingest"
        ship = f'- http: {{url: "{name}", format: jsonl}}\n'
        with ship_world(tmp_path, ship, extra_audit="spool_max_bytes: 1MiB\n"
                                                    "ship_degraded_after: 1s\n") as w:
            w.deny_connects(5000, tag="stall")  # every one answered 403 (asserted inside)
            lines = w.audit_lines()
            denials = [x for x in lines if '"reason":"host_not_allowed"' in x]
            assert len(denials) == 5000
            events = [json.loads(x) for x in lines if '"event":"ship_overflow"' in x]
            assert events, "the overflow was not audited"
            dropped = sum(e["dropped"] for e in events)
            metrics = w.metrics()
            assert metrics[f'egress_audit_ship_dropped_total{{destination="{name}"}}'] == dropped
            assert metrics[f'egress_audit_shipped_total{{destination="{name}"}}'] == 0
            assert 0 < metrics[f'egress_audit_spool_lines{{destination="{name}"}}'] < 5000
            spooled = sum(p.stat().st_size for p in (tmp_path / "data" / "spool").glob("*.seg"))
            assert spooled <= 2**20 + 2**17  # the bound, plus the segment being written
            ready = w.admin("/readyz")
            assert ready.status_code == 200 and ready.json()["ready"] is True
            assert ready.json()["checks"]["audit_ship"]["ok"] is False


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
