"""A fake OpenClaw installation: openclaw.json in JSON5, skills on disk, realistic fake keys.

Every key is generated per test in the format of the real thing (prefix, length, alphabet),
so placeholders, prefix guesses and leak scans are exercised on realistic input; none of them
is a real credential.
"""

from __future__ import annotations

import os
import random
import secrets
import string
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from egress.cli.main import main

B62 = string.ascii_letters + string.digits
URLSAFE = B62 + "-_"


def fake_keys(seed: int | None = None) -> dict[str, str]:
    """One fake key per service, shaped like the real ones (`seed`: the same ones each time)."""
    choice = random.Random(seed).choice if seed is not None else secrets.choice

    def rand(alphabet: str, n: int) -> str:
        return "".join(choice(alphabet) for _ in range(n))

    return {
        "anthropic": "sk-ant-api03-" + rand(URLSAFE, 93) + "AA",
        "openai": "sk-proj-" + rand(URLSAFE, 156),
        "github": "ghp_" + rand(B62, 36),
        "slack": f"xoxb-{rand(string.digits, 12)}-{rand(string.digits, 13)}-{rand(B62, 24)}",
        "gemini": "AIza" + rand(URLSAFE, 35),
        "openweather": rand("0123456789abcdef", 32),
        # OpenClaw's own model key (not a skill's): the import reports it, leaves it alone.
        "provider": "sk-ant-api03-" + rand(URLSAFE, 93) + "AA",
    }


CONFIG = """\
// ~/.openclaw/openclaw.json -- JSON5, edited by hand over the months
{
  agents: {
    defaults: {
      workspace: "~/.openclaw/workspace",
      sandbox: {
        mode: "non-main",
        docker: {
          network: "none",
          env: { GITHUB_TOKEN: "{github}", },  // sandboxes do not inherit skills.entries
        },
      },
    },
  },
  models: {
    providers: {
      anthropic: { apiKey: "{provider}", },
    },
  },
  skills: {
    load: { extraDirs: ["~/skill-packs/team",], watch: true, },
    entries: {
      github: { apiKey: '{github}', },
      weather: {
        enabled: true,
        env: {
          OPENWEATHER_API_KEY: "{openweather}",
          WEATHER_UNITS: "metric",
          WEATHER_API_URL: "https://api.openweathermap.org/data/2.5",
        },
      },
      "slack-notify": { env: { SLACK_BOT_TOKEN: "{slack}", SLACK_CHANNEL: "#ops", }, },
      "nano-banana-pro": {
        apiKey: "{gemini}",
        env: { GEMINI_API_KEY: "{gemini}", },  // the same key, both ways
      },
      "claude-review": {
        // apiKey: "{anthropic}",   (kept from before the move to the new laptop)
        apiKey: "{anthropic}",
      },
      "openai-image-gen": { env: { OPENAI_API_KEY: "{openai}", }, },
      "brave-search": { apiKey: { source: "env", provider: "default", id: "BRAVE_API_KEY" }, },
      peekaboo: { enabled: true, },
      sag: { enabled: false, },
    },
  },
}
"""

SKILLS: dict[str, str] = {
    ".openclaw/workspace/skills/weather/SKILL.md": """\
        ---
        name: weather
        description: Current weather and forecasts for any city.
        homepage: https://openweathermap.org/api
        metadata:
          {
            "openclaw":
              {
                "emoji": "🌦️",
                "requires": { "bins": ["curl"], "env": ["OPENWEATHER_API_KEY"] },
                "primaryEnv": "OPENWEATHER_API_KEY",
              },
          }
        ---

        # Weather
        Use `curl` with `$OPENWEATHER_API_KEY` against the One Call API.
        """,
    ".openclaw/skills/github/SKILL.md": """\
        ---
        name: github
        description: Work with issues, pull requests and CI through the gh CLI.
        homepage: https://cli.github.com
        metadata: {"openclaw": {"emoji": "🐙", "requires": {"bins": ["gh"], "env": ["GITHUB_TOKEN"]}, "primaryEnv": "GITHUB_TOKEN"}}
        ---

        Run `gh` commands; authenticate with GITHUB_TOKEN.
        """,
    ".openclaw/skills/comms/slack-notify/SKILL.md": """\
        ---
        name: slack-notify
        description: Post messages to Slack channels.
        metadata:
          openclaw:
            primaryEnv: SLACK_BOT_TOKEN
            requires:
              env: [SLACK_BOT_TOKEN]
        ---
        Post with chat.postMessage.
        """,
    "skill-packs/team/nano-banana-pro/SKILL.md": """\
        ---
        name: nano-banana-pro
        description: Generate or edit images with Gemini.
        metadata: '{openclaw: {primaryEnv: "GEMINI_API_KEY", requires: {env: ["GEMINI_API_KEY"],},},}'
        ---
        Call the Gemini image model.
        """,
    "skill-packs/team/claude-review/SKILL.md": """\
        ---
        name: claude-review
        description: Ask Claude for a second opinion on a diff.
        metadata: {"clawdbot": {"primaryEnv": "ANTHROPIC_API_KEY"}}
        ---
        Send the diff to the Messages API.
        """,
}

# What the import must make of the fixture, per skill: credential -> (bound host or None).
EXPECTED: dict[str, dict[str, str | None]] = {
    "claude-review": {"ANTHROPIC_API_KEY": "api.anthropic.com"},
    "github": {"GITHUB_TOKEN": "api.github.com"},
    "nano-banana-pro": {"GEMINI_API_KEY": "generativelanguage.googleapis.com"},
    "openai-image-gen": {"OPENAI_API_KEY": "api.openai.com"},
    "slack-notify": {"SLACK_BOT_TOKEN": "slack.com"},
    "weather": {"OPENWEATHER_API_KEY": "api.openweathermap.org"},  # by name: ?appid=
}
KEY_OF = {  # credential -> the fake key it holds
    "ANTHROPIC_API_KEY": "anthropic", "GITHUB_TOKEN": "github", "GEMINI_API_KEY": "gemini",
    "OPENAI_API_KEY": "openai", "SLACK_BOT_TOKEN": "slack", "OPENWEATHER_API_KEY": "openweather",
}
SKILL_KEYS = [k for k in KEY_OF.values()]  # the keys the import moves (not "provider")


@dataclass
class ClawHome:
    home: Path
    config: Path
    keys: dict[str, str]
    policies: Path
    data: Path

    def run(self, *args: str) -> int:
        return main(list(args))

    def import_(self, *extra: str) -> int:
        return main(["openclaw", "import", "--config", str(self.config), "--policies",
                     str(self.policies), "--data-dir", str(self.data), *extra])

    def config_text(self) -> str:
        return self.config.read_text()


def write_home(home: Path, keys: dict[str, str], mode: int = 0o600) -> Path:
    for rel, text in SKILLS.items():
        path = home / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    config = home / ".openclaw" / "openclaw.json"
    text = CONFIG
    for name, value in keys.items():
        text = text.replace("{" + name + "}", value)
    config.write_text(text)
    config.chmod(mode)
    return config


@pytest.fixture
def claw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ClawHome]:
    home = tmp_path / "home"
    keys = fake_keys()
    config = write_home(home, keys)
    monkeypatch.setenv("HOME", str(home))  # "~" in the config means this home
    for name in ("OPENCLAW_CONFIG_PATH", "OPENCLAW_STATE_DIR", "EGRESS_DATA_DIR", "BAO_ADDR",
                 "VAULT_ADDR", "BAO_TOKEN", "VAULT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    yield ClawHome(home, config, keys, tmp_path / "policies", tmp_path / "data")


def snapshot(*roots: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under `roots`: (content, mtime_ns, mode). Equal snapshots: nothing changed."""
    out: dict[str, tuple[bytes, int, int]] = {}
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath) / name
                st = path.stat()
                out[str(path)] = (path.read_bytes(), st.st_mtime_ns, st.st_mode)
    return out
