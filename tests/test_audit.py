"""Audit records (the JSON line contract) and the append-only writer and reader."""

from __future__ import annotations

import json
import re
import stat
import threading
from pathlib import Path

import pytest

from egress.audit import SCHEMA_VERSION, AuditRecord, AuditWriter, read_records

# The fields DESIGN.md promises in every line ("Audit log"), plus the schema version.
DESIGN_FIELDS = {"ts", "id", "skill", "client", "kind", "method", "scheme", "host", "port", "path",
                 "decision", "reason", "rule", "resolved", "policy"}
ALWAYS = {"v", "ts", "id", "skill", "kind", "host", "port", "decision", "reason"}


def unchained(line: str) -> str:
    """A written line without the hash chain's fields (`seq`, `prev`, `key`, `sig`)."""
    return line[: line.index(',"seq":')] + "}"


def full_record(**over: object) -> AuditRecord:
    fields: dict[str, object] = dict(
        decision="deny", reason="path_not_allowed", kind="http", host="api.example.com",
        port=443, skill="stripe", client="127.0.0.1:50000", method="GET", scheme="https",
        path="/v1/charges", rule="policy.yaml:12 api.example.com", resolved="93.184.216.34",
        policy="0123456789abcdef",
    )
    fields.update(over)
    return AuditRecord(**fields)  # type: ignore[arg-type]


# -- records ------------------------------------------------------------------------------------
def test_full_record_has_every_design_field_and_the_version() -> None:
    data = json.loads(full_record().to_json())
    assert set(data) == DESIGN_FIELDS | {"v"}
    assert data["v"] == SCHEMA_VERSION == 1
    assert list(data)[0] == "v"  # first, so readers can dispatch on it
    assert (data["decision"], data["reason"], data["kind"], data["host"], data["port"],
            data["skill"], data["client"], data["method"], data["scheme"], data["path"],
            data["rule"], data["resolved"], data["policy"]) == (
        "deny", "path_not_allowed", "http", "api.example.com", 443, "stripe", "127.0.0.1:50000",
        "GET", "https", "/v1/charges", "policy.yaml:12 api.example.com", "93.184.216.34",
        "0123456789abcdef")
    assert isinstance(data["port"], int)


def test_minimal_record_keeps_only_the_always_present_fields() -> None:
    data = json.loads(AuditRecord(decision="deny", reason="auth_required", kind="connect",
                                  host="evil.test", port=443).to_json())
    assert set(data) == ALWAYS
    assert data["skill"] is None  # unauthenticated: null, not missing
    assert None not in [v for k, v in data.items() if k != "skill"]


@pytest.mark.parametrize("field", sorted(DESIGN_FIELDS - ALWAYS) + ["detail", "credential"])
def test_optional_field_is_left_out_when_none(field: str) -> None:
    data = json.loads(full_record(**{field: None}).to_json())
    assert field not in data


def test_optional_extras_appear_when_set() -> None:
    data = json.loads(full_record(detail="10.0.0.1 is private", credential="stripe-read").to_json())
    assert (data["detail"], data["credential"]) == ("10.0.0.1 is private", "stripe-read")


def test_timestamp_is_rfc3339_utc_and_ids_are_unique() -> None:
    records = [full_record() for _ in range(100)]
    for r in records:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r.ts)
        assert re.fullmatch(r"[0-9a-f]{16}", r.id)
    assert len({r.id for r in records}) == 100


def test_json_is_one_compact_line_even_with_newlines_in_values() -> None:
    line = full_record(detail="two\nlines\r\u2028").to_json()
    assert "\n" not in line and "\r" not in line and ", " not in line
    assert json.loads(line)["detail"] == "two\nlines\r\u2028"


# -- writer -------------------------------------------------------------------------------------
def test_constructor_does_no_io(tmp_path: Path) -> None:
    AuditWriter(tmp_path / "sub" / "audit.jsonl")
    assert not (tmp_path / "sub").exists()


def test_writer_appends_one_line_per_record_readable_before_close(tmp_path: Path) -> None:
    path = tmp_path / "data" / "audit.jsonl"
    path.parent.mkdir()
    path.write_text('{"old": "line"}\n')  # an existing log is appended to, never truncated
    writer = AuditWriter(path)
    try:
        first, second = full_record(host="a.test"), full_record(host="b.test")
        writer.write(first)
        # Read back through a separate descriptor while the writer is still open: the line is
        # in the file already, nothing waits in a user-space buffer.
        assert list(read_records(path))[-1]["host"] == "a.test"
        writer.write(second)
        lines = path.read_text().splitlines()
        assert lines[0] == '{"old": "line"}'
        # Each line is the record's JSON with the hash chain's fields at its end (chain.py).
        assert [unchained(line) for line in lines[1:]] == [first.to_json(), second.to_json()]
        assert writer.lines_written == 2 and writer.write_errors == 0
    finally:
        writer.close()


def test_writer_creates_a_private_file_and_directory(tmp_path: Path) -> None:
    path = tmp_path / "data" / "audit.jsonl"
    writer = AuditWriter(path)
    try:
        writer.write(full_record())
    finally:
        writer.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_two_writers_on_one_file_never_interleave_partial_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    per_writer = 2000
    # Long lines (~4 KiB) make a torn write likely if appends were not atomic.
    long_path = "/" + "x" * 4000

    def run(name: str) -> None:
        writer = AuditWriter(path)
        try:
            for i in range(per_writer):
                writer.write(full_record(skill=name, path=f"{long_path}/{i}"))
        finally:
            writer.close()

    threads = [threading.Thread(target=run, args=(name,)) for name in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)

    raw = path.read_bytes().split(b"\n")
    assert raw[-1] == b""  # ends with a newline
    records = [json.loads(line) for line in raw[:-1]]  # every line is whole JSON
    for name in ("one", "two"):
        seen = [int(r["path"].rsplit("/", 1)[1]) for r in records if r["skill"] == name]
        assert seen == list(range(per_writer))  # each writer's lines, complete and in order


def test_write_failure_is_counted_not_raised(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path)  # a directory cannot be opened for appending
    writer.write(full_record())
    writer.write(full_record())
    assert (writer.lines_written, writer.write_errors) == (0, 2)
    writer.close()


def test_writer_reopens_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = AuditWriter(path)
    try:
        writer.write(full_record(host="before.test"))
        path.rename(tmp_path / "audit.jsonl.1")  # logrotate moves the file away
        writer.reopen()
        writer.write(full_record(host="after.test"))
    finally:
        writer.close()
    assert [r["host"] for r in read_records(path)] == ["after.test"]
    assert [r["host"] for r in read_records(tmp_path / "audit.jsonl.1")] == ["before.test"]


def test_dash_writes_to_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    writer = AuditWriter("-")
    record = full_record()
    writer.write(record)
    writer.close()  # must not close the process's stdout
    writer.write(record)
    lines = capfd.readouterr().out.splitlines()
    assert [unchained(line) for line in lines] == [record.to_json()] * 2


# -- reader -------------------------------------------------------------------------------------
def test_read_records_skips_garbage_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    good = [full_record(host="a.test").to_json(), full_record(host="b.test").to_json()]
    path.write_bytes(b"\n".join([
        good[0].encode(),
        b"garbage",
        b"",
        b"   ",
        b"[1, 2, 3]",
        b'"a string"',
        b"\xff\xfe not utf-8",
        good[1].encode(),
        good[0][: len(good[0]) // 2].encode(),  # a torn last line (crash mid-write)
    ]))
    assert [r["host"] for r in read_records(path)] == ["a.test", "b.test"]
