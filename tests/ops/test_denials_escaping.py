"""`egress denials` never hands a skill's control characters to the operator's terminal.

A denied request's path (and method, and a malformed host) comes from the skill. These tests
put ANSI escapes, C1 controls, DEL, bidi overrides and invisible characters into audit records
and check every output mode: the table, --json, --by (table and JSON) and --follow. The attack
through a real egress is in tests/adversarial/test_terminal_injection.py.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import unicodedata
from pathlib import Path

import pytest

from egress.audit import AuditRecord, AuditWriter
from egress.cli.escape import json_safe, printable
from egress.cli.main import main
from tests.proxy import EGRESS

HOSTILE = "/x\x1b]0;pwned\x07\x1b[2J\x9b31m\x7f\u202egnp.exe\u200b\u2028end"


@pytest.mark.parametrize("text, shown", [
    pytest.param("/v1/invoices", "/v1/invoices", id="plain ASCII untouched"),
    pytest.param("/caf\u00e9/\u65e5\u672c", "/caf\u00e9/\u65e5\u672c", id="letters of any script untouched"),
    pytest.param("\x1b[31mred", "\\x1b[31mred", id="ANSI colour (CSI)"),
    pytest.param("\x1b]0;title\x07", "\\x1b]0;title\\x07", id="OSC window title with BEL"),
    pytest.param("\x9b2J", "\\x9b2J", id="C1 CSI U+009B"),
    pytest.param("\x85", "\\x85", id="C1 next line U+0085"),
    pytest.param("a\x7fb", "a\\x7fb", id="DEL"),
    pytest.param("\t\r\n\x00", "\\x09\\x0d\\x0a\\x00", id="tab CR LF NUL"),
    pytest.param("abc\u202eexe.txt", "abc\\u202eexe.txt", id="bidi right-to-left override"),
    pytest.param("\u2066x\u2069", "\\u2066x\\u2069", id="bidi isolates"),
    pytest.param("a\u200bb\u200dc\ufeff", "a\\u200bb\\u200dc\\ufeff", id="zero-width and BOM"),
    pytest.param("a\u2028b\u2029", "a\\u2028b\\u2029", id="line and paragraph separators"),
    pytest.param("\U000e0041", "\\U000e0041", id="tag character (format, astral)"),
    pytest.param("\ue000", "\\ue000", id="private use"),
    pytest.param("\\x1b", "\\\\x1b", id="a literal backslash cannot pose as an escape"),
])
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_json_safe_escapes_del_the_one_control_json_dumps_keeps() -> None:
    line = json_safe(json.dumps({"path": HOSTILE}))
    assert line.isascii() and all(c.isprintable() for c in line)
    assert json.loads(line)["path"] == HOSTILE


def terminal_safe(text: str) -> bool:
    """No character a terminal acts on: newlines between lines only."""
    return all(ch == "\n" or (ch.isprintable() and unicodedata.category(ch) not in
                              {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}) for ch in text)


@pytest.fixture
def hostile_log(tmp_path: Path) -> Path:
    writer = AuditWriter(tmp_path / "audit.jsonl")
    for i, path in enumerate([HOSTILE, "/fine"]):
        writer.write(AuditRecord(decision="deny", reason="path_not_allowed", kind="http",
                                 host="api.evil.test" if i else "bad\x1b[1mhost", port=443,
                                 skill="mallory", method="GE\x9bT", path=path, id=f"{i:016x}"))
    writer.write(AuditRecord(decision="deny", reason="host_not_allowed", kind="http",
                             host="folded.test", port=443, skill="mallory", method="GET",
                             path=HOSTILE, folded=41, first_seen="2025-01-01T00:00:00.000Z",
                             last_seen="2025-01-01T00:01:00.000Z"))
    writer.close()
    text = (tmp_path / "audit.jsonl").read_text()
    assert text.isascii()  # the audit file itself is ASCII: C1 and bidi are \u-escaped
    return tmp_path


@pytest.mark.parametrize("args", [
    pytest.param([], id="table"),
    pytest.param(["--json"], id="json"),
    pytest.param(["--by", "host"], id="by host table"),
    pytest.param(["--by", "host", "--json"], id="by host json"),
    pytest.param(["--by", "skill"], id="by skill table"),
])
def test_every_output_mode_is_terminal_safe(capsys: pytest.CaptureFixture[str],
                                            hostile_log: Path, args: list[str]) -> None:
    assert main(["denials", "--data-dir", str(hostile_log), *args]) == 0
    out = capsys.readouterr().out
    assert out and terminal_safe(out), out
    if "--json" in args and "--by" not in args:
        paths = [json.loads(line).get("path") for line in out.splitlines()]
        assert paths == [HOSTILE, "/fine", HOSTILE]  # escaped on screen, exact in the data
    elif "--by" not in args:
        assert "\\x1b]0;pwned\\x07" in out and "\\u202egnp.exe" in out and "bad\\x1b[1mhost" in out
        assert "(folded: 41)" in out


def test_by_host_counts_a_folded_summary_as_its_denials(capsys: pytest.CaptureFixture[str],
                                                       hostile_log: Path) -> None:
    assert main(["denials", "--data-dir", str(hostile_log), "--by", "host", "--json"]) == 0
    counts = {r["host"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert counts["folded.test"]["count"] == 41
    assert counts["folded.test"]["first"] == "2025-01-01T00:00:00.000Z"
    assert counts["folded.test"]["last"] == "2025-01-01T00:01:00.000Z"


def test_follow_is_terminal_safe(hostile_log: Path) -> None:
    proc = subprocess.Popen([EGRESS, "denials", "--data-dir", str(hostile_log), "--follow"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    got: list[bytes] = []
    try:
        for _ in range(4):  # header and three rows
            got.append(lines.get(timeout=20))
        writer = AuditWriter(hostile_log / "audit.jsonl")
        writer.write(AuditRecord(decision="deny", reason="host_not_allowed", kind="http",
                                 host="late.test", port=80, skill="mallory", method="GET",
                                 path="/late\x1b[5m\u202e"))
        writer.close()
        got.append(lines.get(timeout=20))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        reader.join(10)
    text = b"".join(got).decode("utf-8")
    assert terminal_safe(text), text
    assert "/late\\x1b[5m\\u202e" in text


def test_a_path_that_was_not_utf8_is_still_audited(tmp_path: Path) -> None:
    # mitmproxy decodes request bytes with surrogateescape: b"\xff" arrives as "\udcff".
    # Written as UTF-8 that raised (no audit line, and a 500); as ASCII JSON it is escaped.
    writer = AuditWriter(tmp_path / "audit.jsonl")
    writer.write(AuditRecord(decision="deny", reason="path_not_allowed", kind="http",
                             host="h.test", port=443, path=b"/\xff\x9b".decode("utf-8", "surrogateescape")))
    writer.close()
    line = (tmp_path / "audit.jsonl").read_text()
    assert writer.lines_written == 1 and line.isascii()
    assert json.loads(line)["path"] == "/\udcff\udc9b"
