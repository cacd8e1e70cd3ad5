"""`egress openclaw import`: only keys egress can broker in their API's shape move, and the
OpenClaw installation is found the way OpenClaw finds it (OPENCLAW_HOME, OPENCLAW_STATE_DIR,
--profile, every agent's workspace in `agents.list` and `agents.entries`)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from egress.policy.load import load_policy_dir
from tests.openclaw.conftest import ClawHome

HEX = "0123456789abcdef"


def hex_key(seed: str) -> str:
    return (seed.encode().hex() * 8)[:32]


def skill_md(path: Path, name: str, primary_env: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "SKILL.md").write_text(textwrap.dedent(f"""\
        ---
        name: {name}
        description: test skill {name}
        metadata: {{"openclaw": {{"primaryEnv": "{primary_env}"}}}}
        ---
        """))


def policy_of(claw: ClawHome, skill: str) -> dict:
    return yaml.safe_load((claw.policies / f"openclaw-{skill}.yaml").read_text())["skills"][skill]


# -- a key moves only in a shape its API takes ------------------------------------------------

def test_a_key_of_unknown_shape_stays_in_the_config_with_a_warning(
        claw: ClawHome, capsys: pytest.CaptureFixture[str]) -> None:
    unknown = "acme_live_" + hex_key("acme")
    github = claw.keys["github"]
    claw.config.write_text(
        "{ skills: { entries: {\n"
        f'  acme: {{ env: {{ ACME_API_KEY: "{unknown}" }} }},\n'
        f'  mixed: {{ env: {{ GITHUB_TOKEN: "{github}", ACME_TOKEN: "{unknown[::-1]}" }} }},\n'
        "} } }\n")
    assert claw.import_() == 0
    out = capsys.readouterr().out
    assert ("skills.entries.acme.env.ACME_API_KEY stays in openclaw.json: egress cannot tell how "
            "its API takes this key (a header, a query parameter, HTTP Basic, ...), and moving "
            "it could break the skill") in out
    assert "skills.entries.mixed.env.ACME_TOKEN stays in openclaw.json" in out
    text = claw.config.read_text()
    assert unknown in text and unknown[::-1] in text  # left where the skill reads it
    assert github not in text  # the key egress can broker did move
    assert sorted(p.name for p in claw.policies.iterdir()) == ["openclaw-mixed.yaml"]
    assert list(policy_of(claw, "mixed")["credentials"]) == ["GITHUB_TOKEN"]
    assert not (claw.data / "secrets" / "acme").exists()
    assert unknown not in out  # the warning names where, never the key
    # The JSON summary carries the same warning; a second run changes nothing.
    assert claw.import_("--json") == 0
    summary = json.loads(capsys.readouterr().out)
    notes = {s["skill"]: s["note"] for s in summary["skills"]}
    assert "ACME_API_KEY stays in openclaw.json" in notes["acme"]
    assert summary["config_changed"] is False


@pytest.mark.parametrize("var, host, param", [
    pytest.param("OPENWEATHER_API_KEY", "api.openweathermap.org", "appid", id="openweather"),
    pytest.param("GOOGLE_MAPS_API_KEY", "maps.googleapis.com", "key",
                 id="google maps (an AIza key, but Maps takes ?key=)"),
    pytest.param("TRELLO_TOKEN", "api.trello.com", "token", id="trello token"),
])
def test_url_key_apis_get_query_credentials(claw: ClawHome, var: str, host: str,
                                            param: str) -> None:
    value = "AIza" + "Q" * 35 if var.startswith("GOOGLE") else hex_key(var)
    claw.config.write_text(f'{{ skills: {{ entries: {{ s: {{ env: {{ {var}: "{value}" }} }} }} }} }}\n')
    assert claw.import_() == 0
    s = policy_of(claw, "s")
    assert s["credentials"][var]["query"] == param
    assert {"host": host, "credential": var} in s["allow"]
    assert value not in claw.config.read_text()
    assert load_policy_dir(claw.policies).skills["s"].credentials[var].query == param


# -- finding the installation as OpenClaw does ------------------------------------------------

def test_skills_in_each_agents_workspace_are_found(claw: ClawHome) -> None:
    # Without the SKILL.md (in an agent's own workspace) the apiKey's variable, and with it
    # the key's shape, would be unknown and the key would stay.
    skill_md(claw.home / "ws-listed" / "skills" / "trello", "trello", "TRELLO_API_KEY")
    skill_md(claw.home / "ws-entries" / ".agents" / "skills" / "forecast", "forecast",
             "WEATHERAPI_KEY")
    claw.config.write_text(
        "{\n  agents: {\n"
        '    list: [ { id: "main", default: true }, { id: "pm", workspace: "~/ws-listed" } ],\n'
        '    entries: { ops: { workspace: "~/ws-entries" } },\n'
        "  },\n"
        "  skills: { entries: {\n"
        f'    trello: {{ apiKey: "{hex_key("trello")}" }},\n'
        f'    forecast: {{ apiKey: "{hex_key("forecast")}" }},\n'
        "  } },\n}\n")
    assert claw.import_() == 0
    assert policy_of(claw, "trello")["credentials"]["TRELLO_API_KEY"]["query"] == "key"
    assert policy_of(claw, "forecast")["credentials"]["WEATHERAPI_KEY"]["query"] == "key"
    text = claw.config.read_text()
    assert hex_key("trello") not in text and hex_key("forecast") not in text


def test_openclaw_home_replaces_home(claw: ClawHome, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("OPENCLAW_HOME", str(claw.home))
    assert claw.run("openclaw", "import", "--policies", str(claw.policies),
                    "--data-dir", str(claw.data)) == 0
    assert claw.keys["github"] not in claw.config.read_text()
    # `~/skill-packs/team` (skills.load.extraDirs) is under OPENCLAW_HOME too: claude-review's
    # SKILL.md names the variable, so the credential has its name (else "apiKey").
    assert "ANTHROPIC_API_KEY" in policy_of(claw, "claude-review")["credentials"]


def test_profile_selects_its_state_directory(claw: ClawHome,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    profiled = claw.home / ".openclaw-work"
    (claw.home / ".openclaw").rename(profiled)
    assert claw.run("openclaw", "import", "--profile", "work", "--policies",
                    str(claw.policies), "--data-dir", str(claw.data)) == 0
    assert f"OpenClaw config: {profiled / 'openclaw.json'}" in capsys.readouterr().out
    assert claw.keys["github"] not in (profiled / "openclaw.json").read_text()


def test_state_dir_wins_over_profile_as_in_openclaw(
        claw: ClawHome, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OPENCLAW_STATE_DIR", str(claw.home / ".openclaw"))
    assert claw.run("openclaw", "import", "--profile", "work", "--policies",
                    str(claw.policies), "--data-dir", str(claw.data)) == 0
    assert f"OpenClaw config: {claw.config}" in capsys.readouterr().out


def test_a_profile_name_openclaw_refuses_is_refused(claw: ClawHome,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert claw.run("openclaw", "import", "--profile", "../etc", "--policies",
                    str(claw.policies), "--data-dir", str(claw.data)) == 1
    assert capsys.readouterr().err == (
        "egress: --profile '../etc': use letters, digits, '_' and '-' only (as openclaw "
        "--profile does)\n")
