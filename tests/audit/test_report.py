"""`egress report`: per skill, denied hosts (new ones marked), exfiltration, blocked addresses,
rate limits, approvals; and every command quiet when its reader goes away or on Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from egress.audit.report import build_report
from tests.proxy import EGRESS

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rec(hours_ago: float, skill: str, host: str, reason: str = "host_not_allowed",
        decision: str = "deny", **extra: Any) -> dict[str, Any]:
    ts = (NOW - timedelta(hours=hours_ago)).isoformat(timespec="milliseconds")
    return {"v": 1, "ts": ts.replace("+00:00", "Z"), "id": "x", "skill": skill, "kind": "http",
            "host": host, "port": 443, "decision": decision, "reason": reason, **extra}


RECORDS = [
    rec(72, "alpha", "known.test"),  # before the window: not new
    rec(72, "beta", "evil.test"),  # another skill saw it: still new for alpha
    rec(70, "alpha", "api.ok.test", decision="allow", reason="allowed"),
    rec(5, "alpha", "known.test"),
    rec(4, "alpha", "evil.test"),
    rec(3, "alpha", "evil.test", folded=9, first_seen="x", last_seen="y"),  # a summary: 9
    rec(3, "alpha", "api.ok.test", reason="credential_exfiltration"),
    rec(2, "alpha", "169.254.169.254", reason="blocked_address"),
    rec(2, "alpha", "api.ok.test", reason="rate_limited"),
    rec(1, "alpha", "api.ok.test", decision="allow", reason="allowed"),  # not a denial
    rec(1, "gamma", "approvals.test", decision="allow", reason="approval_granted"),
    rec(1, "beta", "evil.test", decision="report", reason="host_not_allowed"),
    {"v": 1, "ts": "garbage", "skill": "alpha", "host": "x", "decision": "deny"},
    rec(-1, "alpha", "future.test"),  # after --until
]


def test_report_per_skill() -> None:
    reports = {r.skill: r for r in build_report(RECORDS, NOW - timedelta(hours=24), NOW)}
    assert sorted(reports) == ["alpha", "beta", "gamma"]
    a = reports["alpha"]
    assert a.denials == 1 + 1 + 9 + 1 + 1 + 1
    hosts = {h.host: (h.count, h.new) for h in a.hosts.values()}
    assert hosts == {"known.test": (1, False), "evil.test": (10, True),
                     "api.ok.test": (2, False), "169.254.169.254": (1, True)}
    assert [(h.host, h.count) for h in a.exfiltration.values()] == [("api.ok.test", 1)]
    assert (a.blocked_address, a.rate_limited, a.approvals) == (1, 1, 0)
    assert (reports["beta"].denials, reports["beta"].new_hosts) == (1, 0)  # report mode counts
    assert reports["gamma"].approvals == 1 and reports["gamma"].denials == 0


def write_log(directory: Path, records: list[dict[str, Any]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "audit.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_cli_table_marks_new_hosts_and_escapes_what_skills_control(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    shift = now - NOW
    moved = [dict(r, ts=(datetime.fromisoformat(r["ts"]) + shift).isoformat())
             for r in RECORDS if r["ts"] != "garbage" and r["host"] != "future.test"]
    moved.append(dict(moved[-1], host="\x1b[2Jhostile.test", skill="alpha", decision="deny",
                      reason="host_not_allowed"))
    write_log(tmp_path, moved)
    out = subprocess.run([EGRESS, "report", "--data-dir", str(tmp_path), "--since", "24h"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "\x1b" not in out
    lines = out.splitlines()
    assert lines[1].split() == ["SKILL", "DENIALS", "DENIED", "HOSTS", "EXFILTRATION",
                                "BLOCKED", "ADDR", "RATE", "LIMITED", "APPROVALS"]
    alpha = next(line for line in lines if line.startswith("alpha "))
    assert alpha.split()[:4] == ["alpha", "15", "5", "(3"]
    assert any(line.split()[:2] == ["NEW", "evil.test"] for line in lines)
    assert any(line.split()[:1] == ["known.test"] for line in lines)
    assert "credential exfiltration attempt: api.ok.test x1" in out
    data = json.loads(subprocess.run(
        [EGRESS, "report", "--data-dir", str(tmp_path), "--json", "--skill", "alpha"],
        capture_output=True, text=True, timeout=60, check=True).stdout)
    assert [s["skill"] for s in data["skills"]] == ["alpha"]
    assert data["skills"][0]["new_hosts"] == 3


def test_a_closed_stdout_and_ctrl_c_end_commands_quietly(tmp_path: Path) -> None:
    write_log(tmp_path, [rec(1, "alpha", f"h{i}.test") | {"ts": datetime.now(UTC).isoformat()}
                         for i in range(20000)])
    for argv in (["denials", "--json"], ["denials"], ["report", "--json"]):
        proc = subprocess.Popen([EGRESS, *argv, "--data-dir", str(tmp_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()  # `| head -1`
        err = proc.stderr.read().decode()
        assert proc.wait(60) in (0, 141), argv
        assert "Traceback" not in err and "BrokenPipe" not in err, (argv, err)
    follow = subprocess.Popen([EGRESS, "denials", "--follow", "--data-dir", str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert follow.stdout is not None
    follow.stdout.readline()  # it is running
    follow.send_signal(signal.SIGINT)
    _, err_b = follow.communicate(timeout=30)
    assert follow.returncode in (0, 130) and b"Traceback" not in err_b, err_b
