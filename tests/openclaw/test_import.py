"""`egress openclaw import` on a fake OpenClaw home: policies, placeholders, stores, rewrite."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import json5
import pytest
import yaml

from egress.openclaw.keys import key_kind
from egress.policy.load import load_policy_dir
from tests.openbao import READ_POLICY, OpenBao, openbao_server
from tests.openclaw.conftest import EXPECTED, KEY_OF, SKILL_KEYS, ClawHome, snapshot


def policy_of(claw: ClawHome, skill: str) -> dict:
    return yaml.safe_load((claw.policies / f"openclaw-{skill}.yaml").read_text())["skills"][skill]


def placeholders(claw: ClawHome) -> dict[str, str]:
    """credential name -> placeholder, over all generated policies."""
    out = {}
    for skill in EXPECTED:
        for name, cred in policy_of(claw, skill)["credentials"].items():
            out[name] = cred["placeholder"]
    return out


def assert_no_key_in(text: str, keys: list[str]) -> None:
    leaked = [k for k in keys if k in text]
    assert not leaked, f"{len(leaked)} key(s) found"  # never print the key itself


def test_one_report_mode_policy_per_skill_with_keys_and_egress_check_passes(
        claw: ClawHome, capsys: pytest.CaptureFixture[str]) -> None:
    assert claw.import_() == 0
    assert sorted(p.name for p in claw.policies.iterdir()) == sorted(
        f"openclaw-{s}.yaml" for s in EXPECTED)
    policy = load_policy_dir(claw.policies)
    assert sorted(policy.skills) == sorted(EXPECTED)
    capsys.readouterr()
    assert claw.run("check", str(claw.policies)) == 0
    assert capsys.readouterr().out.startswith(f"ok: {len(EXPECTED)} files, {len(EXPECTED)} skills")
    for skill, creds in EXPECTED.items():
        p = policy.skills[skill]
        assert p.mode == "report"
        assert sorted(p.credentials) == sorted(creds)
        bound = {r.credential: r.host for r in p.rules if r.credential}
        assert bound == {c: h for c, h in creds.items() if h}, skill


@pytest.mark.parametrize("skill, host", [
    pytest.param("weather", "openweathermap.org", id="homepage host listed beside the API host the variable names"),
    pytest.param("github", "cli.github.com", id="homepage host listed beside the key's API host"),
])
def test_homepage_hosts_are_listed_as_guesses(claw: ClawHome, skill: str, host: str) -> None:
    assert claw.import_() == 0
    rules = policy_of(claw, skill)["allow"]
    assert {"host": host} in rules
    text = (claw.policies / f"openclaw-{skill}.yaml").read_text()
    assert "# GUESS from the SKILL.md homepage" in text


def test_a_key_the_api_takes_in_the_url_becomes_a_query_credential(claw: ClawHome) -> None:
    # OpenWeather takes `?appid=KEY`: a header credential would leave the skill broken.
    assert claw.import_() == 0
    weather = policy_of(claw, "weather")
    cred = weather["credentials"]["OPENWEATHER_API_KEY"]
    assert cred["query"] == "appid" and "header" not in cred and "format" not in cred
    assert {"host": "api.openweathermap.org", "credential": "OPENWEATHER_API_KEY"} \
        in weather["allow"]
    policy = load_policy_dir(claw.policies)
    assert policy.skills["weather"].credentials["OPENWEATHER_API_KEY"].shape == "query"


@pytest.mark.parametrize("credential", sorted(KEY_OF))
def test_placeholder_keeps_prefix_length_and_separators(claw: ClawHome, credential: str) -> None:
    assert claw.import_() == 0
    key = claw.keys[KEY_OF[credential]]
    placeholder = placeholders(claw)[credential]
    assert placeholder != key
    assert len(placeholder) == len(key)
    kind = key_kind(key)
    prefix = kind.prefix if kind else ""
    assert placeholder.startswith(prefix)
    assert [c for c in placeholder if not c.isalnum()] == [c for c in key if not c.isalnum()]
    assert key_kind(placeholder) == kind


def test_keys_are_in_0600_files_and_policies_only_point_at_them(claw: ClawHome) -> None:
    assert claw.import_() == 0
    for skill, creds in EXPECTED.items():
        for name in creds:
            ref = policy_of(claw, skill)["credentials"][name]["secret"]
            path = claw.data.resolve() / "secrets" / skill / name
            assert ref == f"file:{path}"
            assert path.read_text() == claw.keys[KEY_OF[name]] + "\n"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for policy in claw.policies.iterdir():
        assert_no_key_in(policy.read_text(), list(claw.keys.values()))


def test_rewritten_config_holds_placeholders_and_keeps_comments(claw: ClawHome) -> None:
    original = json5.loads(claw.config_text())
    assert claw.import_() == 0
    text = claw.config_text()
    assert_no_key_in(text, [claw.keys[k] for k in SKILL_KEYS])
    assert "// the same key, both ways" in text and "// ~/.openclaw/openclaw.json" in text
    ph = placeholders(claw)
    new = json5.loads(text)
    entries = new["skills"]["entries"]
    assert entries["github"]["apiKey"] == ph["GITHUB_TOKEN"]
    assert new["agents"]["defaults"]["sandbox"]["docker"]["env"]["GITHUB_TOKEN"] == ph["GITHUB_TOKEN"]
    assert entries["nano-banana-pro"] == {"apiKey": ph["GEMINI_API_KEY"],
                                         "env": {"GEMINI_API_KEY": ph["GEMINI_API_KEY"]}}
    assert entries["weather"]["env"]["OPENWEATHER_API_KEY"] == ph["OPENWEATHER_API_KEY"]
    # Everything that is not a skill key is exactly as it was.
    assert entries["weather"]["env"]["WEATHER_API_URL"] == "https://api.openweathermap.org/data/2.5"
    assert entries["slack-notify"]["env"]["SLACK_CHANNEL"] == "#ops"
    assert entries["brave-search"] == original["skills"]["entries"]["brave-search"]
    assert new["models"] == original["models"]
    # The old key in a comment is gone too.
    assert f'// apiKey: "{ph["ANTHROPIC_API_KEY"]}"' in text


def test_original_is_kept_as_a_0600_backup_and_the_summary_says_it_holds_keys(
        claw: ClawHome, capsys: pytest.CaptureFixture[str]) -> None:
    claw.config.chmod(0o644)  # a config others may read: its backup of clear keys must not be
    before = claw.config.read_bytes()
    assert claw.import_() == 0
    backup = claw.config.with_name("openclaw.json.egress-backup")
    assert backup.read_bytes() == before
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(claw.config.stat().st_mode) == 0o644  # the config keeps its mode
    out = capsys.readouterr().out
    assert (f"original kept in {backup} (mode 0600): it holds the keys in CLEAR TEXT; once the "
            f"skills work through egress, remove it: shred -u {backup}") in out


def test_no_backup_keeps_no_copy_of_the_keys(claw: ClawHome,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert claw.import_("--no-backup") == 0
    assert not list(claw.config.parent.glob("openclaw.json.egress-backup*"))
    assert "no backup kept (--no-backup)" in capsys.readouterr().out
    assert_no_key_in(claw.config_text(), [claw.keys[k] for k in SKILL_KEYS])
    # Nowhere else under the OpenClaw home does a moved key remain in clear text.
    for path in claw.home.rglob("*"):
        if path.is_file():
            assert_no_key_in(path.read_text(errors="replace"),
                             [claw.keys[k] for k in SKILL_KEYS])


def test_second_import_changes_nothing(claw: ClawHome, capsys: pytest.CaptureFixture[str]) -> None:
    assert claw.import_() == 0
    first = snapshot(claw.home, claw.policies, claw.data)
    capsys.readouterr()
    assert claw.import_() == 0
    assert snapshot(claw.home, claw.policies, claw.data) == first
    out = capsys.readouterr().out
    assert f"{claw.config}: unchanged" in out
    assert "wrote " not in out and "stored " not in out
    assert re.search(r"^  github +unchanged  1 key$", out, re.M)


def test_no_key_is_ever_printed(claw: ClawHome, capsys: pytest.CaptureFixture[str]) -> None:
    assert claw.import_() == 0
    assert claw.import_("--json") == 0
    assert claw.run("openclaw", "env", "github", "--data-dir", str(claw.data)) == 0
    assert claw.run("check", str(claw.policies)) == 0
    out, err = capsys.readouterr()
    assert_no_key_in(out + err, list(claw.keys.values()))


def test_keys_outside_skills_are_reported_by_path_only(claw: ClawHome,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert claw.import_() == 0
    out = capsys.readouterr().out
    assert ("still in the config, not skill keys (left as they are): "
            "models.providers.anthropic.apiKey") in out
    assert claw.keys["provider"] in claw.config_text()


def test_summary_json(claw: ClawHome, capsys: pytest.CaptureFixture[str]) -> None:
    assert claw.import_("--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert {s["skill"]: (s["status"], s["moved"]) for s in summary["skills"]} == {
        s: ("new", 1) for s in EXPECTED}
    assert summary["config_changed"] is True and summary["layout_kept"] is True
    assert summary["left_in_config"] == ["models.providers.anthropic.apiKey"]


def test_default_config_is_found_in_home(claw: ClawHome) -> None:
    assert claw.run("openclaw", "import", "--policies", str(claw.policies),
                    "--data-dir", str(claw.data)) == 0
    assert (claw.policies / "openclaw-github.yaml").exists()


def test_a_key_added_later_is_imported_and_the_first_backup_kept(claw: ClawHome) -> None:
    original = claw.config.read_bytes()
    assert claw.import_() == 0
    placeholders_before = placeholders(claw)
    text = claw.config_text().replace(
        "sag: { enabled: false, },",
        'sag: { enabled: false, }, linear: { env: { LINEAR_API_KEY: "lin_api_'
        + "q" * 40 + '" }, },')
    claw.config.write_text(text)
    second_original = claw.config.read_bytes()
    assert claw.import_() == 0
    backups = claw.config.parent
    assert (backups / "openclaw.json.egress-backup").read_bytes() == original
    assert (backups / "openclaw.json.egress-backup.2").read_bytes() == second_original
    assert "lin_api_" + "q" * 40 not in claw.config_text()
    assert load_policy_dir(claw.policies).skills["linear"].credentials["LINEAR_API_KEY"]
    assert {k: v for k, v in placeholders(claw).items()} == placeholders_before


def test_a_rotated_key_keeps_its_placeholder_and_replaces_the_stored_value(
        claw: ClawHome) -> None:
    assert claw.import_() == 0
    ph = placeholders(claw)["GITHUB_TOKEN"]
    new_key = "ghp_" + "R" * 36
    claw.config.write_text(claw.config_text().replace(f"apiKey: '{ph}'", f"apiKey: '{new_key}'"))
    assert claw.import_() == 0
    assert placeholders(claw)["GITHUB_TOKEN"] == ph
    assert (claw.data / "secrets" / "github" / "GITHUB_TOKEN").read_text() == new_key + "\n"
    assert new_key not in claw.config_text()


def test_an_edited_policy_is_left_alone(claw: ClawHome,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert claw.import_() == 0
    path = claw.policies / "openclaw-github.yaml"
    edited = path.read_text().replace("mode: report", "mode: enforce")
    path.write_text(edited)
    ph = placeholders(claw)["GITHUB_TOKEN"]
    new_key = "ghp_" + "E" * 36
    claw.config.write_text(claw.config_text().replace(f"apiKey: '{ph}'", f"apiKey: '{new_key}'"))
    capsys.readouterr()
    assert claw.import_() == 1  # something needs the operator
    assert path.read_text() == edited
    out = capsys.readouterr().out
    assert re.search(rf"^  github +skipped    1 key  \({re.escape(str(path))} was edited since "
                     r"the import wrote it; move it away and import again, or add the "
                     r"credentials yourself\)$", out, re.M)
    assert new_key in claw.config_text()  # not moved: no policy would hold it


def test_gateway_mode_writes_one_identity_with_every_key(claw: ClawHome) -> None:
    assert claw.import_("--gateway", "openclaw") == 0
    assert [p.name for p in claw.policies.iterdir()] == ["openclaw-openclaw.yaml"]
    policy = load_policy_dir(claw.policies).skills["openclaw"]
    assert sorted(policy.credentials) == sorted(
        f"{skill}.{name}" for skill, creds in EXPECTED.items() for name in creds)
    assert {r.credential: r.host for r in policy.rules if r.credential} == {
        f"{skill}.{name}": host for skill, creds in EXPECTED.items()
        for name, host in creds.items() if host}
    assert_no_key_in(claw.config_text(), [claw.keys[k] for k in SKILL_KEYS])
    first = snapshot(claw.home, claw.policies, claw.data)
    assert claw.import_("--gateway", "openclaw") == 0
    assert snapshot(claw.home, claw.policies, claw.data) == first


def test_invalid_json5_is_refused_without_quoting_it(claw: ClawHome,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    key = claw.keys["github"]
    claw.config.write_text('{\n  skills: { entries: { github: { apiKey: "' + key + '" x } } }\n}\n')
    assert claw.import_() == 1
    err = capsys.readouterr().err
    assert err == f"egress: {claw.config}: not valid JSON5 near line 2\n"
    assert not claw.policies.exists()


def test_vault_without_address_fails_before_anything_is_written(
        claw: ClawHome, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(claw.home)
    assert claw.import_("--to-vault", "secret/openclaw") == 1
    assert capsys.readouterr().err == (
        "egress: storing keys in OpenBao/Vault needs its address in BAO_ADDR or VAULT_ADDR\n")
    assert snapshot(claw.home) == before
    assert not claw.policies.exists() and not claw.data.exists()


# -- OpenBao -------------------------------------------------------------------------------

@pytest.fixture
def bao(tmp_path: Path) -> Iterator[OpenBao]:
    (tmp_path / "bao").mkdir()
    with openbao_server(tmp_path / "bao") as server:
        yield server


def test_to_vault_writes_the_keys_into_openbao(claw: ClawHome, bao: OpenBao,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BAO_ADDR", bao.addr)
    monkeypatch.setenv("BAO_TOKEN", bao.root_token)
    assert claw.import_("--to-vault", "secret/openclaw") == 0
    versions = {}
    for skill, creds in EXPECTED.items():
        data = bao.ok("GET", f"secret/data/openclaw/{skill}")["data"]
        assert data["data"] == {name: claw.keys[KEY_OF[name]] for name in creds}
        versions[skill] = data["metadata"]["version"]
        for name in creds:
            assert policy_of(claw, skill)["credentials"][name]["secret"] == \
                f"vault:secret/openclaw/{skill}#{name}"
    assert not (claw.data / "secrets").exists()  # nothing on disk
    settings = load_policy_dir(claw.policies).settings.secrets
    assert settings is not None and settings.vault is not None
    assert (settings.vault.addr, settings.vault.token_env) == (bao.addr, "BAO_TOKEN")
    assert_no_key_in(claw.config_text(), [claw.keys[k] for k in SKILL_KEYS])
    out, err = capsys.readouterr()
    assert "stored 6 keys in OpenBao/Vault" in out
    assert_no_key_in(out + err, list(claw.keys.values()))

    first = snapshot(claw.home, claw.policies, claw.data)
    assert claw.import_("--to-vault", "secret/openclaw") == 0
    assert snapshot(claw.home, claw.policies, claw.data) == first
    for skill in EXPECTED:  # no new versions either
        assert bao.ok("GET", f"secret/data/openclaw/{skill}")["data"]["metadata"]["version"] \
            == versions[skill]


def test_to_vault_with_a_token_that_may_not_write_stops_before_the_config_changes(
        claw: ClawHome, bao: OpenBao, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    bao.put_policy("read-only", READ_POLICY)
    monkeypatch.setenv("VAULT_ADDR", bao.addr)
    monkeypatch.setenv("VAULT_TOKEN", bao.create_token(["read-only"]))
    before = claw.config.read_bytes()
    assert claw.import_("--to-vault", "secret/openclaw") == 1
    err = capsys.readouterr().err
    assert "vault refused access (403)" in err
    assert claw.config.read_bytes() == before  # keys stay where they were: nothing lost
    assert not claw.policies.exists() or not list(claw.policies.iterdir())


def small_home(claw: ClawHome, entries: str) -> None:
    claw.config.write_text("{\n  skills: { entries: {\n" + entries + "\n  } },\n}\n")


def test_a_key_shared_by_two_skills_goes_to_the_first_and_is_noted(
        claw: ClawHome, capsys: pytest.CaptureFixture[str]) -> None:
    key = claw.keys["openai"]
    small_home(claw, f'    alpha: {{ apiKey: "{key}" }},\n    beta: {{ env: {{ OPENAI_API_KEY: "{key}" }} }},')
    assert claw.import_() == 0
    out = capsys.readouterr().out
    assert ("skills.entries.beta.env.OPENAI_API_KEY holds the same key as skill 'alpha'; it "
            "gets 'alpha''s placeholder, which only 'alpha''s identity can use") in out
    assert [p.name for p in claw.policies.iterdir()] == ["openclaw-alpha.yaml"]
    assert key not in claw.config_text()
    first = snapshot(claw.home, claw.policies, claw.data)
    assert claw.import_() == 0
    assert "skills.entries.beta.env.OPENAI_API_KEY holds the placeholder of another skill's key" \
        in capsys.readouterr().out
    assert snapshot(claw.home, claw.policies, claw.data) == first


def test_api_key_and_primary_env_with_different_keys_become_two_credentials(
        claw: ClawHome) -> None:
    one, two = claw.keys["github"], "ghp_" + "Z" * 36
    small_home(claw, f'    github: {{ apiKey: "{one}", env: {{ GITHUB_TOKEN: "{two}" }} }},')
    assert claw.import_() == 0
    creds = policy_of(claw, "github")["credentials"]
    assert sorted(creds) == ["GITHUB_TOKEN", "GITHUB_TOKEN_2"]
    assert (claw.data / "secrets" / "github" / "GITHUB_TOKEN").read_text() == one + "\n"
    assert (claw.data / "secrets" / "github" / "GITHUB_TOKEN_2").read_text() == two + "\n"
    first = snapshot(claw.home, claw.policies, claw.data)
    assert claw.import_() == 0
    assert snapshot(claw.home, claw.policies, claw.data) == first


def test_a_symlinked_config_stays_a_symlink(claw: ClawHome) -> None:
    real = claw.home / "dotfiles" / "openclaw.json"
    real.parent.mkdir()
    claw.config.rename(real)
    claw.config.symlink_to(real)
    assert claw.import_() == 0
    assert claw.config.is_symlink() and claw.config.resolve() == real
    assert_no_key_in(real.read_text(), [claw.keys[k] for k in SKILL_KEYS])
    assert (real.parent / "openclaw.json.egress-backup").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
def test_root_importing_a_users_config_keeps_the_user_as_owner(claw: ClawHome) -> None:
    os.chown(claw.config, 4242, 4343)
    assert claw.import_() == 0
    for path in (claw.config, claw.config.with_name("openclaw.json.egress-backup")):
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4242, 4343, 0o600)


def test_to_vault_with_settings_elsewhere_says_what_to_add(
        claw: ClawHome, bao: OpenBao, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BAO_ADDR", bao.addr)
    monkeypatch.setenv("BAO_TOKEN", bao.root_token)
    claw.policies.mkdir()
    (claw.policies / "base.yaml").write_text("settings:\n  dns: {timeout: 2}\n")
    before = snapshot(claw.home, claw.policies)
    # Policies with vault: references would not load without settings.secrets.vault: the
    # import stops before it writes anything, saying what to add.
    assert claw.import_("--to-vault", "secret/openclaw") == 1
    assert capsys.readouterr().err == (
        f"egress: add to the settings in {claw.policies / 'base.yaml'}: secrets: {{vault: "
        f'{{addr: "{bao.addr}", auth: {{token_env: BAO_TOKEN}}}}}} so egress can read the '
        "imported keys, then import again (nothing was changed)\n")
    assert snapshot(claw.home, claw.policies) == before


def test_a_config_without_skill_keys_changes_nothing(claw: ClawHome,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    small_home(claw, "    peekaboo: { enabled: true },")
    before = snapshot(claw.home)
    assert claw.import_() == 0
    assert "no skill in skills.entries holds a key: nothing to import" in capsys.readouterr().out
    assert snapshot(claw.home) == before
    assert not claw.policies.exists()


def test_gateway_name_must_be_a_skill_name(claw: ClawHome,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert claw.import_("--gateway", "open claw") == 1
    assert capsys.readouterr().err == (
        "egress: --gateway 'open claw': a skill name uses letters, digits, '.', '_' and '-' "
        "(at most 64)\n")
