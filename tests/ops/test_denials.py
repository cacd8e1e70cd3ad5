"""`egress denials` on a generated audit log that spans rotated files."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from egress.audit import AuditRecord, AuditWriter, Rotation
from egress.audit.query import Query, group, parse_time
from egress.cli.main import main
from tests.proxy import EGRESS

NOW = datetime.now(UTC)
# What the log's "minutes ago" count from: re-anchored when the log is written (log_dir), since
# the CLI's --since/--until count from the real now and a long suite runs this module minutes
# after it was imported.
ANCHOR = [NOW]

# (minutes ago, skill, decision, reason, host, port, method, path); index = id
ROWS: list[tuple[int, str | None, str, str, str, int, str | None, str | None]] = [
    (300, "a", "deny", "host_not_allowed", "evil.test", 443, None, None),
    (240, "b", "deny", "host_not_allowed", "api.evil.test", 443, None, None),
    (200, "a", "allow", "allowed", "api.good.test", 443, None, None),
    (180, "a", "report", "host_not_allowed", "tracker.evil.test", 443, None, None),
    (120, "b", "deny", "rate_limited", "api.good.test", 443, None, None),
    (90, None, "deny", "auth_invalid", "api.good.test", 443, None, None),
    (60, "a", "deny", "blocked_address", "metadata.test", 80, None, None),
    (30, "a", "deny", "host_not_allowed", "evil.test", 443, "GET", "/x"),
    (10, "b", "report", "port_not_allowed", "api.good.test", 8443, None, None),
    (5, "a", "deny", "host_not_allowed", "evil.test", 443, None, None),
]


def ts(minutes_ago: int) -> str:
    when = ANCHOR[0] - timedelta(minutes=minutes_ago)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_record(i: int, row: tuple[Any, ...], stamp: str | None = None) -> AuditRecord:
    ago, skill, decision, reason, host, port, method, path = row
    return AuditRecord(decision=decision, reason=reason, kind="http" if method else "connect",
                       host=host, port=port, skill=skill, method=method, path=path,
                       id=f"{i:016x}", ts=stamp or ts(ago))


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("denials")
    ANCHOR[0] = datetime.now(UTC)
    size = len(make_record(0, ROWS[0]).to_json()) + 1
    writer = AuditWriter(directory / "audit.jsonl", Rotation(max_bytes=3 * size, max_files=20))
    for i, row in enumerate(ROWS):
        writer.write(make_record(i, row))
    writer.close()
    names = sorted(p.name for p in directory.iterdir())
    assert {"audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"} <= set(names)
    return directory


def denials(directory: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real command in a subprocess."""
    return subprocess.run([EGRESS, "denials", "--data-dir", str(directory), *args],
                          capture_output=True, text=True, timeout=30, check=check)


def run_cli(capsys: pytest.CaptureFixture[str], directory: Path, *args: str) -> tuple[int, str, str]:
    """The same command in this process (the CLI's start-up dominates a subprocess)."""
    code = main(["denials", "--data-dir", str(directory), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def ids_of(stdout: str) -> list[int]:
    return [int(json.loads(line)["id"], 16) for line in stdout.splitlines()]


@pytest.mark.parametrize("args, expected", [
    pytest.param([], [0, 1, 3, 4, 5, 6, 7, 8, 9], id="every denial and would-be denial, oldest first"),
    pytest.param(["--skill", "a"], [0, 3, 6, 7, 9], id="one skill"),
    pytest.param(["--host", "evil.test"], [0, 7, 9], id="exact host"),
    pytest.param(["--host", "*.evil.test"], [1, 3], id="host glob"),
    pytest.param(["--host", "EVIL.test."], [0, 7, 9], id="host spelled differently"),
    pytest.param(["--reason", "rate_limited"], [4], id="one reason"),
    pytest.param(["--since", "45m"], [7, 8, 9], id="since an age"),
    pytest.param(["--until", "100m"], [0, 1, 3, 4], id="until an age"),
    pytest.param(["--since", "250m", "--until", "100m"], [1, 3, 4], id="a window"),
    pytest.param(["--skill", "a", "--reason", "host_not_allowed"], [0, 3, 7, 9], id="filters combine"),
    pytest.param(["--since", ts(190)], [3, 4, 5, 6, 7, 8, 9], id="since a time"),
    pytest.param(["--skill", "nobody"], [], id="nothing matches"),
])
def test_filters_across_rotated_files(capsys: pytest.CaptureFixture[str], log_dir: Path,
                                      args: list[str], expected: list[int]) -> None:
    code, out, _ = run_cli(capsys, log_dir, "--json", *args)
    assert code == 0
    assert ids_of(out) == expected


@pytest.mark.parametrize("by, expected", [
    pytest.param("host", [("api.good.test", 3, 120, 10), ("evil.test", 3, 300, 5),
                          ("api.evil.test", 1, 240, 240), ("metadata.test", 1, 60, 60),
                          ("tracker.evil.test", 1, 180, 180)], id="by host"),
    pytest.param("skill", [("a", 5, 300, 5), ("b", 3, 240, 10), ("-", 1, 90, 90)],
                 id="by skill, unauthenticated as -"),
    pytest.param("reason", [("host_not_allowed", 5, 300, 5), ("auth_invalid", 1, 90, 90),
                            ("blocked_address", 1, 60, 60), ("port_not_allowed", 1, 10, 10),
                            ("rate_limited", 1, 120, 120)], id="by reason"),
])
def test_grouping(capsys: pytest.CaptureFixture[str], log_dir: Path, by: str,
                  expected: list[tuple[str, int, int, int]]) -> None:
    _, out, _ = run_cli(capsys, log_dir, "--json", "--by", by)
    got = [json.loads(line) for line in out.splitlines()]
    assert got == [{by: key, "count": n, "first": ts(first), "last": ts(last)}
                   for key, n, first, last in expected]


def test_grouping_table(capsys: pytest.CaptureFixture[str], log_dir: Path) -> None:
    _, out, _ = run_cli(capsys, log_dir, "--by", "skill", "--since", "100m")

    def at(minutes_ago: int) -> str:
        return f"{ANCHOR[0] - timedelta(minutes=minutes_ago):%Y-%m-%d %H:%M:%S}"

    # Most first, then by name; the unauthenticated client shows as "-".
    assert out.splitlines() == [
        "SKILL  COUNT  FIRST SEEN           LAST SEEN",
        f"a      3      {at(60)}  {at(5)}",
        f"-      1      {at(90)}  {at(90)}",
        f"b      1      {at(10)}  {at(10)}",
    ]


def test_table_is_readable(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path / "audit.jsonl")
    writer.write(make_record(1, ROWS[0], "2025-03-01T10:00:00.000Z"))
    writer.write(make_record(2, ROWS[7], "2025-03-01T10:05:30.250Z"))
    writer.write(make_record(3, (0, "a", "deny", "host_not_allowed", "2001:db8::1", 443, None, None),
                             "2025-03-01T10:06:00.000Z"))
    writer.close()
    out = denials(tmp_path)
    assert out.stdout == (
        "TIME                 SKILL  DECISION  REASON            DESTINATION        REQUEST  ID\n"
        "2025-03-01 10:00:00  a      deny      host_not_allowed  evil.test:443      connect  0000000000000001\n"
        "2025-03-01 10:05:30  a      deny      host_not_allowed  evil.test:443      GET /x   0000000000000002\n"
        "2025-03-01 10:06:00  a      deny      host_not_allowed  [2001:db8::1]:443  connect  0000000000000003\n"
    )
    assert out.stderr == ""


def test_empty_result_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run_cli(capsys, tmp_path) == (0, "", "no denials match\n")


@pytest.mark.parametrize("args, message", [
    pytest.param(["--since", "soon"], "egress: --since/--until: 'soon' is neither an age "
                 "(30m, 1h, 7d) nor a time (2025-01-31T12:00:00Z)\n", id="bad time"),
    pytest.param(["--follow", "--by", "host"], "egress: --follow and --by do not combine: "
                 "grouping needs the whole log\n", id="follow with grouping"),
])
def test_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str],
                     message: str) -> None:
    code, _, err = run_cli(capsys, tmp_path, *args)
    assert (code, err) == (1, message)


def test_follow_prints_new_denials_live(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path / "audit.jsonl")
    writer.write(make_record(1, ROWS[0]))
    proc = subprocess.Popen([EGRESS, "denials", "--data-dir", str(tmp_path), "--json",
                             "--follow", "--skill", "a"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert int(json.loads(lines.get(timeout=20))["id"], 16) == 1  # the existing record
        writer.write(make_record(2, ROWS[1]))  # skill b: filtered out
        writer.write(make_record(3, ROWS[2]))  # an allow: not a denial
        writer.write(make_record(4, ROWS[9]))
        assert int(json.loads(lines.get(timeout=20))["id"], 16) == 4
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        reader.join(10)
        writer.close()
    assert proc.stderr is not None
    assert proc.returncode == 0, proc.stderr.read()
    assert lines.empty()


@pytest.mark.parametrize("text, expected", [
    pytest.param("90m", NOW - timedelta(minutes=90), id="minutes ago"),
    pytest.param("1h30m", NOW - timedelta(minutes=90), id="compound age"),
    pytest.param("2025-01-31", datetime(2025, 1, 31, tzinfo=UTC), id="a date is UTC midnight"),
    pytest.param("2025-01-31T12:00:00+02:00", datetime(2025, 1, 31, 10, tzinfo=UTC), id="offset converted"),
    pytest.param("2025-01-31T12:00:00Z", datetime(2025, 1, 31, 12, tzinfo=UTC), id="Z suffix"),
])
def test_parse_time(text: str, expected: datetime) -> None:
    assert parse_time(text, NOW) == expected


def test_query_and_group_are_pure() -> None:
    records = [json.loads(make_record(i, row).to_json()) for i, row in enumerate(ROWS)]
    selected = list(Query(skill="b").select(records))
    assert [g.key for g in group(selected, "reason")] == [
        "host_not_allowed", "port_not_allowed", "rate_limited"]
    with pytest.raises(ValueError, match="cannot group by 'path'"):
        group(selected, "path")
