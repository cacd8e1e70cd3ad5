"""Secrets that fail loudly, before a request needs them: `egress check` (each broken reference
one `file:line: field: message` line), `egress check --resolve` (each credential fetched once:
ok / missing / forbidden / misconfigured / down) and `egress secrets status` (version, age,
max_age), against a real OpenBao, 1Password Connect and Doppler.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from egress.cli.main import main
from tests.conftest import TestCA
from tests.openbao import READ_POLICY, OpenBao, openbao_server
from tests.parts.doppler import DopplerApi, doppler_server
from tests.parts.onepassword import OnePasswordConnect, onepassword_server

Capture = pytest.CaptureFixture[str]


def check(tmp_path: Path, text: str, capsys: Capture, *extra: str) -> tuple[int, list[str]]:
    (tmp_path / "p.yaml").write_text(textwrap.dedent(text))
    code = main(["check", *extra, str(tmp_path)])
    out, err = capsys.readouterr()
    return code, (err + out).splitlines()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EGRESS_T_KEY", "EGRESS_T_EMPTY", "EGRESS_T_VAULT", "EGRESS_T_OP",
                 "EGRESS_T_DOPPLER"):
        monkeypatch.delenv(name, raising=False)


# -- every broken reference, one check line --------------------------------------------------

SKILL = "skills:\n  s:\n    allow: [{host: api.example.com, credential: c}]\n    credentials:\n"


@pytest.mark.parametrize("settings, credential, line", [
    pytest.param("", "      c: {secret: 'env:EGRESS_T_KEY'}",
                 "p.yaml:5: skills.s.credentials.c.secret: environment variable EGRESS_T_KEY "
                 "is not set in egress's environment", id="env variable unset"),
    pytest.param("", "      c: {secret: 'env:EGRESS_T_EMPTY'}",
                 "p.yaml:5: skills.s.credentials.c.secret: environment variable "
                 "EGRESS_T_EMPTY is empty", id="env variable empty"),
    pytest.param("", "      c: {secret: 'file:{dir}/missing'}",
                 "p.yaml:5: skills.s.credentials.c.secret: {dir}/missing does not exist",
                 id="file missing"),
    pytest.param("", "      c: {secret: 'file:{dir}'}",
                 "p.yaml:5: skills.s.credentials.c.secret: {dir} is not a regular file",
                 id="file is a directory"),
    pytest.param("", "      c: {secret: 'file:{dir}/empty'}",
                 "p.yaml:5: skills.s.credentials.c.secret: {dir}/empty is empty",
                 id="file empty"),
    pytest.param("", "      c: {secret: 'vault:secret/s#k'}",
                 "p.yaml:5: skills.s.credentials.c.secret: vault: references need "
                 "settings.secrets.vault, which is not configured; add it to the settings "
                 "(the settings file)", id="vault reference without vault settings"),
    pytest.param("", "      c: {secret: 'op://Skills/Stripe/credential'}",
                 "p.yaml:5: skills.s.credentials.c.secret: op: references need "
                 "settings.secrets.onepassword, which is not configured; add it to the "
                 "settings (the settings file)", id="1password reference without settings"),
    pytest.param("", "      c: {secret: 'doppler:backend/prd#KEY'}",
                 "p.yaml:5: skills.s.credentials.c.secret: doppler: references need "
                 "settings.secrets.doppler, which is not configured; add it to the settings "
                 "(the settings file)", id="doppler reference without settings"),
    pytest.param("settings:\n  secrets:\n    vault: {addr: 'http://127.0.0.1:1', "
                 "auth: {token_env: EGRESS_T_VAULT}}\n",
                 "      c: {secret: 'vault:secret/s#k'}",
                 "p.yaml:1: settings.secrets.vault.auth.token_env: environment variable "
                 "EGRESS_T_VAULT is not set in egress's environment: the backend cannot be "
                 "asked", id="vault token variable unset"),
    pytest.param("settings:\n  secrets:\n    vault: {addr: 'http://127.0.0.1:1', "
                 "auth: {token_file: '{dir}/no-token'}}\n",
                 "      c: {secret: 'vault:secret/s#k'}",
                 "p.yaml:1: settings.secrets.vault.auth.token_file: {dir}/no-token does not "
                 "exist", id="vault token file missing"),
    pytest.param("settings:\n  secrets:\n    vault: {addr: 'http://127.0.0.1:1', auth: "
                 "{approle: {role_id: r, secret_id_file: '{dir}/no-id'}}}\n",
                 "      c: {secret: 'vault:secret/s#k'}",
                 "p.yaml:1: settings.secrets.vault.auth.approle.secret_id_file: {dir}/no-id "
                 "does not exist", id="approle secret_id file missing"),
    pytest.param("settings:\n  secrets:\n    onepassword: {connect_url: 'http://op:8080', "
                 "token_env: EGRESS_T_OP}\n",
                 "      c: {secret: 'op://Skills/Stripe/credential'}",
                 "p.yaml:1: settings.secrets.onepassword.token_env: environment variable "
                 "EGRESS_T_OP is not set in egress's environment: the backend cannot be asked",
                 id="1password token variable unset"),
    pytest.param("settings:\n  secrets:\n    doppler: {token_env: EGRESS_T_DOPPLER}\n",
                 "      c: {secret: 'doppler:KEY'}",
                 "p.yaml:1: settings.secrets.doppler.token_env: environment variable "
                 "EGRESS_T_DOPPLER is not set in egress's environment: the backend cannot be "
                 "asked", id="doppler token variable unset"),
    pytest.param("settings:\n  secrets:\n    doppler: {token_env: EGRESS_T_KEY, "
                 "api_url: 'https://d.example', ca_file: '{dir}/no-ca.pem'}\n",
                 "      c: {secret: 'doppler:KEY'}",
                 "p.yaml:1: settings.secrets.doppler.ca_file: {dir}/no-ca.pem does not exist",
                 id="backend CA file missing"),
    pytest.param("", "      c:\n        secret: 'env:EGRESS_T_EMPTY'\n        aws_sigv4:\n"
                     "          access_key_id: 'env:EGRESS_T_KEY'\n"
                     "          region: us-east-1\n          service: s3\n",
                 "p.yaml:8: skills.s.credentials.c.aws_sigv4.access_key_id: environment "
                 "variable EGRESS_T_KEY is not set in egress's environment",
                 id="a reference inside a shape, on its own line"),
])
def test_every_broken_reference_has_its_check_line(
        tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch, settings: str,
        credential: str, line: str) -> None:
    (tmp_path / "empty").write_text("")
    monkeypatch.setenv("EGRESS_T_EMPTY", "")
    text = (settings + SKILL + credential + "\n").replace("{dir}", str(tmp_path))
    code, lines = check(tmp_path, text, capsys)
    assert code == 1
    expected = line.replace("{dir}", str(tmp_path))
    assert f"{tmp_path}/{expected}" in lines, lines
    # --skip-env checks the policy alone (another machine): only configuration errors stay.
    code, _ = check(tmp_path, text, capsys, "--skip-env")
    assert code == (1 if "not configured" in line else 0)


def test_a_reference_that_is_there_passes(tmp_path: Path, capsys: Capture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGRESS_T_KEY", "sk_test_present")
    code, lines = check(tmp_path, SKILL + "      c: {secret: 'env:EGRESS_T_KEY'}\n", capsys)
    assert code == 0 and lines[-1].startswith("ok: 1 files, 1 skills, 1 rules, 1 credentials")


def test_serve_logs_each_broken_reference_at_start(tmp_path: Path) -> None:
    # (egress/ops/runtime.py logs the same lines at start and on every reload)
    import logging

    from egress.ops.runtime import log_reference_problems
    from egress.policy.load import load_policy_dir

    (tmp_path / "p.yaml").write_text(SKILL + "      c: {secret: 'env:EGRESS_T_KEY'}\n")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("egress").addHandler(handler)
    try:
        log_reference_problems(load_policy_dir(tmp_path))
    finally:
        logging.getLogger("egress").removeHandler(handler)
    assert [r.getMessage() for r in records] == [
        f"secret reference: {tmp_path}/p.yaml:5: skills.s.credentials.c.secret: environment "
        f"variable EGRESS_T_KEY is not set in egress's environment"]


# -- check --resolve and secrets status against the real backends ---------------------------

@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA
             ) -> Iterator[tuple[OpenBao, OnePasswordConnect, DopplerApi]]:
    tmp = tmp_path_factory.mktemp("checks")
    with openbao_server(tmp) as bao, onepassword_server(test_ca) as op, \
            doppler_server(test_ca) as doppler:
        bao.kv_put("app", {"key": "sk_test_bao"})
        bao.put_policy("reader", READ_POLICY)
        op.add_vault("Skills")
        other = op.add_vault("Other")
        op.add_item("Skills", "Stripe", {"credential": "sk_test_op"})
        op.add_item("Other", "Hidden", {"credential": "sk_test_hidden"})
        doppler.set_secret("backend", "prd", "KEY", "sk_test_doppler")
        global OTHER_VAULT
        OTHER_VAULT = other
        yield bao, op, doppler


OTHER_VAULT = ""  # the id of a vault the 1Password token may not read


def resolve_policy(tmp: Path, bao: OpenBao, op: OnePasswordConnect, doppler: DopplerApi,
                   ca: str, creds: str, max_age: str = "") -> Path:
    (tmp / "file-key").write_text("sk_test_file\n")
    (tmp / "p.yaml").write_text(
        "settings:\n  secrets:\n"
        f"    vault: {{addr: '{bao.addr}', auth: {{token_env: EGRESS_T_VAULT}}, timeout: 2}}\n"
        f"    onepassword: {{connect_url: '{op.connect_url}', token_env: EGRESS_T_OP, "
        f"ca_file: '{ca}', timeout: 2}}\n"
        f"    doppler: {{api_url: '{doppler.api_url}', token_env: EGRESS_T_DOPPLER, "
        f"ca_file: '{ca}', timeout: 2}}\n" + max_age +
        "skills:\n  s:\n    credentials:\n" + creds.replace("{dir}", str(tmp)))
    return tmp


CREDS = """\
      bao-ok: {secret: 'vault:secret/app#key'}
      bao-missing: {secret: 'vault:secret/app#nope'}
      op-ok: {secret: 'op://Skills/Stripe/credential'}
      op-forbidden: {secret: 'op://{other}/Hidden/credential'}
      op-unseen: {secret: 'op://Other/Hidden/credential'}
      doppler-ok: {secret: 'doppler:KEY'}
      file-ok: {secret: 'file:{dir}/file-key'}
"""


def test_check_resolve_reports_each_credential_never_a_value(
        tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch,
        backends: tuple[OpenBao, OnePasswordConnect, DopplerApi], test_ca: TestCA) -> None:
    bao, op, doppler = backends
    monkeypatch.setenv("EGRESS_T_VAULT", bao.create_token(["reader"]))
    monkeypatch.setenv("EGRESS_T_OP", op.add_token(["Skills"]))
    monkeypatch.setenv("EGRESS_T_DOPPLER", doppler.add_service_token("backend", "prd"))
    policy = resolve_policy(tmp_path, bao, op, doppler, test_ca.path,
                            CREDS.replace("{other}", OTHER_VAULT))
    code = main(["check", "--resolve", str(policy)])
    out = capsys.readouterr().out
    assert code == 1
    lines = out.splitlines()
    assert "s/bao-ok: ok (vault)" in lines
    assert "s/bao-missing: missing (vault)" in lines
    assert "s/op-ok: ok (op)" in lines
    assert "s/op-forbidden: forbidden (op)" in lines  # named by id: the API says 403
    assert "s/op-unseen: missing (op)" in lines  # by name: the token's vault list lacks it
    assert "s/doppler-ok: ok (doppler)" in lines
    assert "s/file-ok: ok (file)" in lines
    assert any("no field 'nope'" in line for line in lines)
    for value in ("sk_test_bao", "sk_test_op", "sk_test_hidden", "sk_test_doppler",
                  "sk_test_file"):
        assert value not in out
    # A backend that is down: its credentials say so; the others still resolve.
    doppler.server.down()
    try:
        code = main(["check", "--resolve", "--json", str(policy)])
    finally:
        doppler.server.up()
    report = json.loads(capsys.readouterr().out)
    status = {c["credential"]: c["status"] for c in report["credentials_resolved"]}
    assert code == 1 and report["ok"] is False
    assert status == {"bao-ok": "ok", "bao-missing": "missing", "doppler-ok": "down",
                      "file-ok": "ok", "op-forbidden": "forbidden", "op-ok": "ok",
                      "op-unseen": "missing"}


def test_secrets_status_lists_version_age_and_flags_old_ones(
        tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch,
        backends: tuple[OpenBao, OnePasswordConnect, DopplerApi], test_ca: TestCA) -> None:
    bao, op, doppler = backends
    monkeypatch.setenv("EGRESS_T_VAULT", bao.create_token(["reader"]))
    monkeypatch.setenv("EGRESS_T_OP", op.add_token(["Skills"]))
    monkeypatch.setenv("EGRESS_T_DOPPLER", doppler.add_service_token("backend", "prd"))
    creds = ("      bao-ok: {secret: 'vault:secret/app#key'}\n"
             "      op-ok: {secret: 'op://Skills/Stripe/credential'}\n"
             "      doppler-ok: {secret: 'doppler:KEY'}\n"
             "      file-ok: {secret: 'file:{dir}/file-key'}\n")
    policy = resolve_policy(tmp_path, bao, op, doppler, test_ca.path, creds,
                            "  max_age: 30d\n".replace("  ", "    ", 1))
    old = time.time() - 40 * 86400
    os.utime(tmp_path / "file-key", (old, old))
    code = main(["secrets", "status", "--json", str(policy)])
    rows = {r["credential"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert code == 1  # the file is older than max_age
    assert rows["file-ok"]["too_old"] is True and rows["file-ok"]["age_seconds"] >= 40 * 86400
    assert rows["bao-ok"]["backend"] == "vault" and rows["bao-ok"]["version"] == "1"
    assert rows["bao-ok"]["too_old"] is False and rows["bao-ok"]["age_seconds"] < 3600
    assert rows["op-ok"]["version"] == "1" and rows["op-ok"]["changed_at"] is not None
    assert rows["doppler-ok"]["changed_at"] is None and "no change time" in rows["doppler-ok"]["note"]
    op.set_field("Skills", "Stripe", "credential", "sk_test_op_2")
    bao.kv_put("app", {"key": "sk_test_bao_2"})
    code = main(["secrets", "status", "--max-age", "100d", str(policy)])
    table = capsys.readouterr().out
    assert code == 0  # nothing older than 100 days
    bao_line = next(line for line in table.splitlines() if line.startswith("s/bao-ok"))
    op_line = next(line for line in table.splitlines() if line.startswith("s/op-ok"))
    assert " vault " in bao_line and " 2 " in bao_line
    assert " op " in op_line and " 2 " in op_line
    assert "sk_test" not in table
