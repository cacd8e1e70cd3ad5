"""`egress audit verify` against a log someone tampered with.

The log is written by the real AuditWriter with a real Ed25519 key (what `egress serve`
writes), then copied and attacked the way someone on the host would: delete, edit, reorder,
insert lines, re-chain the rest of the file after an edit (no key: the checkpoint gives it
away), truncate the tail. The untouched copy passes. Receivers' copies (a syslog file with
its own prefix, Loki entries kept by time) are verified the same way.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from egress.audit import AuditRecord, AuditWriter
from egress.audit.chain import KEY_FILE, ChainState, Signer, digest, link
from egress.audit.verify import Line, verify_lines
from egress.audit.verify import public_key as load_key
from tests.proxy import EGRESS

COUNT = 40


def record(i: int) -> AuditRecord:
    return AuditRecord(decision="deny", reason="host_not_allowed", kind="connect",
                       host=f"h{i}.exfil.test", port=443, skill="alpha")


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """DATA_DIR with audit-key.pem, and the lines of its audit.jsonl: two runs of egress
    (a restart continues the chain), the second ended with a checkpoint."""
    data = tmp_path_factory.mktemp("verify-data")
    path = data / "audit.jsonl"
    for run in range(2):
        writer = AuditWriter(path, signer=Signer.load_or_create(data))
        for i in range(COUNT // 2):
            writer.write(record(run * 100 + i))
        writer.close()
    return data, path.read_text().splitlines()


def check(data: Path, lines: list[str], tmp: Path, *args: str) -> tuple[int, str, str]:
    copy = tmp / "copy.jsonl"
    copy.write_text("".join(line + "\n" for line in lines))
    proc = subprocess.run([EGRESS, "audit", "verify", "--data-dir", str(data), *args, str(copy)],
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def keys(data: Path) -> dict[str, object]:
    kid, key = load_key((data / KEY_FILE).read_bytes())
    return {kid: key}


def findings(data: Path, lines: list[str], **kw: bool) -> list[tuple[int, str]]:
    result = verify_lines([Line(f"f:{n}", t) for n, t in enumerate(lines, 1)], keys(data), **kw)
    return [(int(f.where.rsplit(":", 1)[1]), f.kind) for f in result.findings]


def test_the_log_is_chained_signed_and_verifies(log: tuple[Path, list[str]], tmp_path: Path) -> None:
    data, lines = log
    objs = [json.loads(line) for line in lines]
    assert [o["seq"] for o in objs] == list(range(1, len(lines) + 1))
    assert objs[0]["prev"] == ""
    assert all(objs[i + 1]["prev"] == digest(lines[i].encode()) for i in range(len(lines) - 1))
    # Signed: the first line of each run, and the checkpoint each run ends with.
    signed = [i for i, o in enumerate(objs) if "sig" in o]
    assert signed == [0, COUNT // 2, COUNT // 2 + 1, len(lines) - 1]
    assert objs[-1]["event"] == "checkpoint" and objs[-1]["kind"] == "audit"
    code, out, err = check(data, lines, tmp_path)
    assert code == 0, (out, err)
    assert f"audit log verified: {len(lines)} lines (seq 1..{len(lines)}), 4 signatures" in err


def test_pubkey_prints_the_key_that_verifies(log: tuple[Path, list[str]], tmp_path: Path) -> None:
    data, lines = log
    proc = subprocess.run([EGRESS, "audit", "pubkey", "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.startswith("-----BEGIN PUBLIC KEY-----") and "PRIVATE" not in proc.stdout
    pub = tmp_path / "egress-audit.pub"
    pub.write_text(proc.stdout)
    # Checked with the public key kept elsewhere, with no data dir at all.
    code, out, err = check(tmp_path / "elsewhere", lines, tmp_path, "--pubkey", str(pub))
    assert code == 0 and "4 signatures verified" in err, (out, err)
    # Another key: the signatures do not verify.
    other = tmp_path / "other"
    Signer.load_or_create(other)
    code, out, err = check(other, lines, tmp_path)  # another key id: unchecked, and said so
    assert "0 signatures verified" in err and "4 signatures NOT checked" in err


def test_a_deleted_line_is_reported_where_it_was(log: tuple[Path, list[str]], tmp_path: Path) -> None:
    data, lines = log
    attacked = lines[:10] + lines[11:]
    code, out, _ = check(data, attacked, tmp_path)
    assert code == 1
    assert out.startswith(f"{tmp_path / 'copy.jsonl'}:11: deleted: seq 11 missing")
    assert findings(data, attacked) == [(11, "deleted")]


def test_an_edited_line_is_reported(log: tuple[Path, list[str]], tmp_path: Path) -> None:
    data, lines = log
    attacked = list(lines)
    attacked[6] = attacked[6].replace("h6.exfil.test", "h6.innocent.test")
    code, out, _ = check(data, attacked, tmp_path)
    assert code == 1 and ":7: edited:" in out.splitlines()[0]
    assert findings(data, attacked)[0] == (7, "edited")


def test_a_reordered_line_is_reported(log: tuple[Path, list[str]], tmp_path: Path) -> None:
    data, lines = log
    attacked = list(lines)
    attacked[4], attacked[5] = attacked[5], attacked[4]
    code, out, _ = check(data, attacked, tmp_path)
    assert code == 1 and ":5: reordered:" in out.splitlines()[0]


def test_an_inserted_line_is_reported(log: tuple[Path, list[str]], tmp_path: Path) -> None:
    data, lines = log
    forged = json.loads(lines[8])
    forged["host"] = "cover-story.test"
    plain = dict(forged)
    for k in ("seq", "prev", "key", "sig"):
        plain.pop(k, None)
    # A record with no chain, and one that copies the chain fields of the line before it.
    assert findings(data, lines[:9] + [json.dumps(plain)] + lines[9:])[0] == (10, "inserted")
    copied = lines[:9] + [json.dumps(forged, separators=(",", ":"))] + lines[9:]
    assert findings(data, copied)[0][0] in (9, 10)
    code, out, _ = check(data, copied, tmp_path)
    assert code == 1


def test_rechaining_after_an_edit_is_caught_by_the_checkpoint(log: tuple[Path, list[str]],
                                                             tmp_path: Path) -> None:
    """Someone without the key edits a line and recomputes every `prev` after it: the chain
    is whole again, but the next signed checkpoint no longer verifies."""
    data, lines = log
    edited = lines[3].replace("h3.exfil.test", "h3.innocent.test")
    out = lines[:3] + [edited]
    state = ChainState(4, digest(edited.encode()))
    for line in lines[4:]:
        obj = json.loads(line)
        body = {k: v for k, v in obj.items() if k not in ("seq", "prev", "key", "sig")}
        if "sig" in obj:  # keep the signature bytes: they cannot be made without the key
            text = link(json.dumps(body, separators=(",", ":")), state)
            text = text[:-1] + f',"key":"{obj["key"]}","sig":"{obj["sig"]}"' + "}"
        else:
            text = link(json.dumps(body, separators=(",", ":")), state)
        out.append(text)
        state = ChainState(state.seq + 1, digest(text.encode()))
    result = findings(data, out)
    assert result and result[0] == (COUNT // 2 + 1, "signature")


def test_a_truncated_tail_is_reported_as_unsigned(log: tuple[Path, list[str]], tmp_path: Path) -> None:
    """Lines cut off the end leave no gap to see; verify says how many lines are after the
    last checkpoint (the shutdown checkpoint is gone), so a missing tail is not silent."""
    data, lines = log
    code, _, err = check(data, lines[:-5], tmp_path)
    assert code == 0
    assert f"the last {COUNT // 2 - 5} lines are after the last verified signature" in err


def test_receivers_copies_verify(log: tuple[Path, list[str]], tmp_path: Path) -> None:
    """A syslog file with its own prefix before each line, and Loki's entries as a store
    keeps them (JSON with `line`, by time: --sort puts them in sequence)."""
    data, lines = log
    syslog = [f"2026-01-01T00:00:00Z host egress[1]: {line}" for line in lines]
    code, out, err = check(data, syslog, tmp_path)
    assert code == 0, (out, err)
    loki = [json.dumps({"ts": "1", "line": line}) for line in reversed(lines)]
    code, out, err = check(data, loki, tmp_path, "--sort")
    assert code == 0, (out, err)
    syslog[12] = syslog[12].replace("h12.exfil", "h12.other")
    code, out, _ = check(data, syslog, tmp_path)
    assert code == 1 and ":13: edited:" in out


def test_json_output_and_nothing_to_read(log: tuple[Path, list[str]], tmp_path: Path) -> None:
    data, lines = log
    code, out, _ = check(data, lines[:10] + lines[12:], tmp_path, "--json")
    summary = json.loads(out)
    assert code == 1 and not summary["ok"]
    assert summary["findings"][0]["kind"] == "deleted"
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([EGRESS, "audit", "verify", "--data-dir", str(empty)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no audit files" in proc.stderr
