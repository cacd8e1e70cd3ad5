"""SKILL.md parsing, skill discovery, and the openclaw.json rewrite and backup."""

from __future__ import annotations

import stat
import textwrap
from pathlib import Path

import pytest

from egress.errors import ConfigError
from egress.openclaw.config import (
    default_config_path,
    parse_config,
    rewrite_config_text,
    save_backup,
)
from egress.openclaw.importer import find_leftovers
from egress.openclaw.skills import discover_skills, parse_skill_md


def md(text: str) -> str:
    return textwrap.dedent(text)


@pytest.mark.parametrize("text, key, primary, homepage", [
    pytest.param(md("""\
        ---
        name: image-lab
        homepage: https://example.com/lab
        metadata:
          {
            "openclaw":
              { "requires": { "env": ["GEMINI_API_KEY"] }, "primaryEnv": "GEMINI_API_KEY", },
          }
        ---
        """), "image-lab", "GEMINI_API_KEY", "example.com", id="multi-line JSON metadata with trailing commas"),
    pytest.param(md("""\
        ---
        name: gh
        metadata: '{openclaw: {primaryEnv: "GITHUB_TOKEN", skillKey: "github"}}'
        ---
        """), "github", "GITHUB_TOKEN", None, id="JSON5 string metadata with skillKey"),
    pytest.param(md("""\
        ---
        name: legacy
        metadata: {"clawdbot": {"primaryEnv": "OLD_KEY", "homepage": "https://legacy.example"}}
        ---
        """), "legacy", "OLD_KEY", "legacy.example", id="legacy clawdbot metadata"),
    pytest.param("# no frontmatter at all\n", "folder", None, None, id="no frontmatter: folder name"),
])
def test_skill_md(text: str, key: str, primary: str | None, homepage: str | None) -> None:
    info = parse_skill_md(text, folder="folder", path="x/SKILL.md")
    assert (info.key, info.primary_env, info.homepage_host) == (key, primary, homepage)


@pytest.mark.parametrize("text, message", [
    pytest.param("---\nname: x\n", "frontmatter starts with '---' but never ends with a '---' line",
                 id="unterminated frontmatter"),
    pytest.param("---\nname: [x\n---\n", "frontmatter is not valid YAML (line 2)", id="bad YAML"),
    pytest.param("---\n- a\n---\n", "frontmatter must be a mapping (name: ..., description: ...)",
                 id="a list instead of a mapping"),
    pytest.param("---\nmetadata: '{x'\n---\n", "metadata is a string but not valid JSON5",
                 id="broken JSON5 metadata"),
])
def test_bad_skill_md(text: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_skill_md(text, folder="f", path="p")
    assert str(exc.value) == message


def write(root: Path, rel: str, name: str) -> None:
    path = root / rel / "SKILL.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\nname: {name}\n---\n")


def test_discovery_order_depth_and_broken_files(tmp_path: Path) -> None:
    first, second = tmp_path / "ws", tmp_path / "state"
    write(first, "a", "alpha")
    write(second, "a", "alpha-from-state")
    write(second, "x/alpha", "alpha")  # same key as in `first`: first root wins
    write(second, "g1/g2/g3/g4/g5/deep", "deep")  # 6 levels below the root: found
    write(second, "g1/g2/g3/g4/g5/g6/too-deep", "too-deep")  # 7 levels: not searched
    write(second, "outer", "outer")
    write(second, "outer/inner", "inner")  # below a skill: not a skill of its own
    (second / "broken").mkdir()
    (second / "broken" / "SKILL.md").write_text("---\nname: [\n---\n")
    found = discover_skills([first, second, tmp_path / "missing"])
    assert sorted(found.skills) == ["alpha", "alpha-from-state", "deep", "outer"]
    assert found.skills["alpha"].path == str(first / "a" / "SKILL.md")
    assert found.problems == [
        f"{second / 'broken' / 'SKILL.md'}: skipped: frontmatter is not valid YAML (line 2)"]


def test_config_path_follows_openclaw_variables(tmp_path: Path) -> None:
    assert default_config_path({"OPENCLAW_CONFIG_PATH": str(tmp_path / "c.json")}) == \
        tmp_path / "c.json"
    assert default_config_path({"OPENCLAW_STATE_DIR": str(tmp_path)}) == tmp_path / "openclaw.json"


KEY = "ghp_" + "k" * 36
PH = "ghp_" + "p" * 36


def test_rewrite_keeps_comments_quotes_and_layout() -> None:
    text = "// top\n{\n  a: { apiKey: '" + KEY + "', },  /* " + KEY + " */\n  b: [1, 2,],\n}\n"
    result = rewrite_config_text(text, {KEY: PH}, "c.json")
    assert result.kept_layout
    assert result.text == text.replace(KEY, PH)


def test_rewrite_falls_back_to_reserialising_when_a_key_is_escaped() -> None:
    escaped = "\\u0067" + KEY[1:]  # "g" written as \u0067: the text never contains KEY
    text = '{\n  // note\n  a: { apiKey: "' + escaped + '" },\n}\n'
    result = rewrite_config_text(text, {KEY: PH}, "c.json")
    assert not result.kept_layout
    assert parse_config(result.text, "c.json") == {"a": {"apiKey": PH}}
    assert KEY not in result.text


def test_parse_error_names_the_line_and_never_the_text() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config('{\n\n a: "' + KEY + '" "' + KEY + '"\n}', "c.json")
    assert str(exc.value) == "c.json: not valid JSON5 near line 3"


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config("[1]", "c.json")
    assert str(exc.value) == "c.json: the top level must be an object {...}"


def test_backup_is_written_once_then_numbered(tmp_path: Path) -> None:
    config = tmp_path / "openclaw.json"
    first = save_backup(config, b"one")
    assert first == tmp_path / "openclaw.json.egress-backup"
    assert stat.S_IMODE(first.stat().st_mode) == 0o600  # keys in clear text: owner only
    assert save_backup(config, b"one") is None  # the same original: nothing new
    second = save_backup(config, b"two")
    assert second == tmp_path / "openclaw.json.egress-backup.2"
    assert first.read_bytes() == b"one" and second.read_bytes() == b"two"
    assert stat.S_IMODE(second.stat().st_mode) == 0o600


@pytest.mark.parametrize("config, expected", [
    pytest.param({"models": {"providers": {"openai": {"apiKey": "sk-" + "a" * 40}}}},
                 ["models.providers.openai.apiKey"], id="provider key"),
    pytest.param({"channels": {"telegram": {"botToken": "123456:ABCdefGHIjklMNOpqr"}}},
                 ["channels.telegram.botToken"], id="channel bot token"),
    pytest.param({"agents": {"list": [{"sandbox": {"docker": {"env": {"STRIPE_KEY": "rk_x_12345678"}}}}]}},
                 ["agents.list[0].sandbox.docker.env.STRIPE_KEY"], id="sandbox env by name"),
    pytest.param({"x": {"note": "ghp_" + "a" * 36}}, ["x.note"], id="known prefix anywhere"),
    pytest.param({"models": {"providers": {"openai": {"apiKey": "${OPENAI_API_KEY}"}}}}, [],
                 id="env substitution is not a key"),
    pytest.param({"gateway": {"auth": {"mode": "token"}}, "skills": {"entries": {"a": {"apiKey": "PH"}}}},
                 [], id="placeholders and plain settings are fine"),
])
def test_leftover_keys_are_found_by_path(config: dict[str, object], expected: list[str]) -> None:
    assert find_leftovers(config, {"PH"}) == expected
