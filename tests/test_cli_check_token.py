"""`egress check` and `egress token ...`, called in-process and once through the entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from egress.cli.main import main
from egress.identity import TokenStore
from egress.policy.load import load_policy_dir

FIXTURES = Path(__file__).parent / "policy" / "fixtures"
EGRESS = Path(sys.executable).parent / "egress"  # the console script next to the venv python

Capture = pytest.CaptureFixture[str]


def run(capsys: Capture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _no_ambient_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Never touch the developer's real state directory.
    monkeypatch.delenv("EGRESS_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    # The valid fixture's references, present in this environment (see test_secret_checks).
    monkeypatch.setenv("STRIPE_KEY", "sk_test_in_the_environment")
    monkeypatch.setenv("VAULT_TOKEN", "a-vault-token")


# -- check -----------------------------------------------------------------------------------
def test_check_valid_directory_prints_the_summary(capsys: Capture) -> None:
    digest = load_policy_dir(FIXTURES / "valid").digest
    code, out, err = run(capsys, "check", str(FIXTURES / "valid"))
    assert (code, err) == (0, "")
    assert out == f"ok: 1 files, 2 skills, 3 rules, 2 credentials (policy {digest})\n"


def test_check_valid_directory_as_json(capsys: Capture) -> None:
    digest = load_policy_dir(FIXTURES / "valid").digest
    code, out, err = run(capsys, "check", "--json", str(FIXTURES / "valid"))
    assert (code, err) == (0, "")
    assert json.loads(out) == {"ok": True, "skills": 2, "rules": 3, "credentials": 2,
                               "files": 1, "digest": digest}


def test_check_invalid_directory_prints_each_problem_on_stderr(capsys: Capture) -> None:
    file = FIXTURES / "invalid" / "policy.yaml"
    code, out, err = run(capsys, "check", str(FIXTURES / "invalid"))
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"{file}:4: skills.broken.mode: unknown mode 'audit'; use enforce or report",
        f"{file}:6: skills.broken.allow[0].host: '*.com' covers a whole top-level domain; "
        f"name the domain, e.g. *.example.com",
        f"{file}:7: skills.broken.allow[0].ports[0]: 0 is outside 1-65535",
    ]


def test_check_invalid_directory_as_json(capsys: Capture) -> None:
    file = str(FIXTURES / "invalid" / "policy.yaml")
    code, out, err = run(capsys, "check", "--json", str(FIXTURES / "invalid"))
    assert (code, err) == (1, "")
    assert json.loads(out) == {"ok": False, "errors": [
        {"file": file, "line": 4, "field": "skills.broken.mode",
         "message": "unknown mode 'audit'; use enforce or report"},
        {"file": file, "line": 6, "field": "skills.broken.allow[0].host",
         "message": "'*.com' covers a whole top-level domain; name the domain, "
                    "e.g. *.example.com"},
        {"file": file, "line": 7, "field": "skills.broken.allow[0].ports[0]",
         "message": "0 is outside 1-65535"},
    ]}


def test_check_missing_directory(capsys: Capture, tmp_path: Path) -> None:
    code, out, err = run(capsys, "check", str(tmp_path / "nope"))
    assert (code, out) == (1, "")
    assert err == f"{tmp_path}/nope:0: policies: not a directory; pass the policy directory\n"


# -- token -----------------------------------------------------------------------------------
def test_token_issue_prints_the_token_last_and_stores_its_hash(
    capsys: Capture, tmp_path: Path
) -> None:
    code, out, err = run(capsys, "token", "issue", "stripe", "--data-dir", str(tmp_path))
    assert code == 0
    token = out.splitlines()[-1]
    assert token.startswith("egr_")
    assert err == "token for stripe (shown once; store it where the skill can read it):\n"
    assert TokenStore(tmp_path).verify("stripe", token)
    assert token not in (tmp_path / "tokens.json").read_text()


def test_token_issue_as_json(capsys: Capture, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "token", "issue", "stripe", "--json", "--data-dir", str(tmp_path))
    data = json.loads(out)
    assert (code, sorted(data), data["skill"]) == (0, ["skill", "token"], "stripe")
    assert TokenStore(tmp_path).verify("stripe", data["token"])


def test_token_list_never_prints_a_token(capsys: Capture, tmp_path: Path) -> None:
    d = str(tmp_path)
    tokens = [run(capsys, "token", "issue", s, "--data-dir", d)[1].splitlines()[-1]
              for s in ("b-skill", "a-skill")]
    infos = TokenStore(tmp_path).list()

    code, out, err = run(capsys, "token", "list", "--data-dir", d)
    assert (code, err) == (0, "")
    assert out == "".join(f"{i.skill}\t{i.token_id}\t{i.created}\n" for i in infos)
    assert out.splitlines()[0].startswith("a-skill\t")

    code, out_json, _ = run(capsys, "token", "list", "--json", "--data-dir", d)
    assert [json.loads(line) for line in out_json.splitlines()] == [
        {"skill": i.skill, "token_id": i.token_id, "created": i.created} for i in infos]
    for token in tokens:
        assert token not in out and token not in out_json
        assert token[4:20] not in out + out_json


def test_token_list_when_empty(capsys: Capture, tmp_path: Path) -> None:
    assert run(capsys, "token", "list", "--data-dir", str(tmp_path)) == (
        0, "", "no tokens issued yet (egress token issue SKILL)\n")


def test_token_rotate_and_revoke(capsys: Capture, tmp_path: Path) -> None:
    d = str(tmp_path)
    old = run(capsys, "token", "issue", "s", "--data-dir", d)[1].splitlines()[-1]
    code, out, err = run(capsys, "token", "rotate", "s", "--data-dir", d)
    new = out.splitlines()[-1]
    assert (code, err) == (0, "token for s (shown once; store it where the skill can read it):\n")
    store = TokenStore(tmp_path)
    assert new != old and store.verify("s", new) and not store.verify("s", old)

    assert run(capsys, "token", "revoke", "s", "--data-dir", d) == (
        0, "", "revoked the token of s\n")
    assert not store.verify("s", new)


@pytest.mark.parametrize("argv, message", [
    pytest.param(["token", "revoke", "s"], "egress: skill 's' has no token to revoke\n",
                 id="revoking a skill without a token"),
    pytest.param(["token", "rotate", "s"],
                 "egress: skill 's' has no token; use `egress token issue s`\n",
                 id="rotating a skill without a token"),
    pytest.param(["token", "issue", "a:b"],
                 "egress: 'a:b' cannot be a skill name (no ':' or control characters)\n",
                 id="issuing for a name with a colon"),
])
def test_token_misuse_exits_1_with_one_line(
    capsys: Capture, tmp_path: Path, argv: list[str], message: str
) -> None:
    assert run(capsys, *argv, "--data-dir", str(tmp_path)) == (1, "", message)


def test_token_issue_twice_exits_1(capsys: Capture, tmp_path: Path) -> None:
    run(capsys, "token", "issue", "s", "--data-dir", str(tmp_path))
    assert run(capsys, "token", "issue", "s", "--data-dir", str(tmp_path)) == (
        1, "", "egress: skill 's' already has a token; use `egress token rotate s`\n")


def test_data_dir_comes_from_the_environment(
    capsys: Capture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_dir = tmp_path / "from-env"
    monkeypatch.setenv("EGRESS_DATA_DIR", str(env_dir))
    token = run(capsys, "token", "issue", "s")[1].splitlines()[-1]
    assert TokenStore(env_dir).verify("s", token)
    assert run(capsys, "token", "list")[1].startswith("s\t")

    flag_dir = tmp_path / "from-flag"  # the flag wins over the environment
    token2 = run(capsys, "token", "issue", "s", "--data-dir", str(flag_dir))[1].splitlines()[-1]
    assert TokenStore(flag_dir).verify("s", token2)
    assert not TokenStore(env_dir).verify("s", token2)


def test_without_data_dir_or_environment_the_user_state_dir_is_used(
    capsys: Capture, tmp_path: Path
) -> None:
    token = run(capsys, "token", "issue", "s")[1].splitlines()[-1]
    assert TokenStore(tmp_path / "xdg" / "egress").verify("s", token)


def test_no_command_prints_help_and_exits_2(capsys: Capture) -> None:
    code, out, _ = run(capsys)
    assert code == 2
    assert out.startswith("usage: egress")


# -- the installed entry point ----------------------------------------------------------------
def test_entry_point_runs_check_and_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EGRESS_DATA_DIR"}
    env["EGRESS_DATA_DIR"] = str(tmp_path)

    issued = subprocess.run([str(EGRESS), "token", "issue", "s"], env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert issued.returncode == 0, issued.stderr
    assert TokenStore(tmp_path).verify("s", issued.stdout.splitlines()[-1])

    checked = subprocess.run([str(EGRESS), "check", str(FIXTURES / "invalid")], env=env,
                             capture_output=True, text=True, timeout=60, check=False)
    assert (checked.returncode, checked.stdout) == (1, "")
    assert len(checked.stderr.splitlines()) == 3
