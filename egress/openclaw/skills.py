"""OpenClaw skills on disk: find every `SKILL.md` and read what its frontmatter says.

A skill is a folder with a `SKILL.md` that starts with YAML frontmatter:

    ---
    name: weather
    description: Current weather and forecasts.
    homepage: https://openweathermap.org
    metadata: {"openclaw": {"primaryEnv": "OPENWEATHER_API_KEY", "requires": {"env": [...]}}}
    ---

`metadata` is a YAML mapping or a JSON5 string (OpenClaw accepts both); `metadata.clawdbot`
is the legacy spelling. The config keys a skill by `metadata.openclaw.skillKey`, else by its
`name`, else by its folder name. As in OpenClaw, a `SKILL.md` anywhere up to six levels below
a skills root counts, and nothing below a skill's own folder is searched. Earlier roots win
when two hold a skill with the same key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import json5
import yaml

__all__ = ["SkillInfo", "discover_skills", "parse_skill_md"]

MAX_DEPTH = 6  # OpenClaw's own limit for grouped skill layouts
MAX_DIRS = 20_000  # a bound on the walk, whatever the tree looks like
MAX_SKILL_MD = 256 * 1024


@dataclass(frozen=True)
class SkillInfo:
    key: str  # skills.entries.<key> in openclaw.json
    name: str
    path: str  # the SKILL.md
    description: str | None = None
    homepage: str | None = None
    primary_env: str | None = None
    requires_env: tuple[str, ...] = field(default_factory=tuple)

    @property
    def homepage_host(self) -> str | None:
        if not self.homepage:
            return None
        try:
            parts = urlsplit(self.homepage)
        except ValueError:
            return None
        if parts.scheme not in ("http", "https"):
            return None
        return parts.hostname or None


def parse_skill_md(text: str, *, folder: str, path: str) -> SkillInfo:
    """Read a SKILL.md's frontmatter. Raises ValueError saying what is wrong."""
    front = _frontmatter(text)
    try:
        data = yaml.safe_load(front) if front is not None else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        raise ValueError(f"frontmatter is not valid YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError("frontmatter must be a mapping (name: ..., description: ...)")
    meta = _openclaw_metadata(data.get("metadata"))
    name = _text(data.get("name")) or folder
    key = _text(meta.get("skillKey")) or name
    requires = meta.get("requires")
    env = requires.get("env") if isinstance(requires, Mapping) else None
    return SkillInfo(
        key=key, name=name, path=path,
        description=_text(data.get("description")),
        homepage=_text(data.get("homepage")) or _text(meta.get("homepage")),
        primary_env=_text(meta.get("primaryEnv")),
        requires_env=tuple(e for e in env if isinstance(e, str)) if isinstance(env, list) else (),
    )


def _frontmatter(text: str) -> str | None:
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            return "\n".join(lines[1:i])
    raise ValueError("frontmatter starts with '---' but never ends with a '---' line")


def _openclaw_metadata(raw: object) -> Mapping[str, Any]:
    if isinstance(raw, str):
        try:
            raw = json5.loads(raw)
        except ValueError:
            raise ValueError("metadata is a string but not valid JSON5") from None
    if not isinstance(raw, Mapping):
        return {}
    for name in ("openclaw", "clawdbot"):
        meta = raw.get(name)
        if isinstance(meta, Mapping):
            return meta
    return {}


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


@dataclass
class Discovery:
    skills: dict[str, SkillInfo] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # "path: message", for the summary


def discover_skills(roots: Iterable[Path]) -> Discovery:
    """Every skill under `roots` (missing roots are skipped), first root wins on a clash."""
    found = Discovery()
    budget = [MAX_DIRS]
    for root in roots:
        if root.is_dir():
            _walk(root, 0, found, budget)
    return found


def _walk(directory: Path, depth: int, found: Discovery, budget: list[int]) -> None:
    if budget[0] <= 0:
        return
    budget[0] -= 1
    skill_md = directory / "SKILL.md"
    if skill_md.is_file():
        _read(skill_md, found)
        return  # a skill's own subfolders (scripts, references) hold no skills
    if depth >= MAX_DEPTH:
        return
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        # No symlinked folders: a link loop or a link out of the root is not a skill.
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
            _walk(Path(entry.path), depth + 1, found, budget)


def _read(path: Path, found: Discovery) -> None:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_SKILL_MD + 1)
        if len(raw) > MAX_SKILL_MD:
            raise ValueError(f"larger than {MAX_SKILL_MD} bytes")
        info = parse_skill_md(raw.decode("utf-8"), folder=path.parent.name, path=str(path))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
        found.problems.append(f"{path}: skipped: {reason}")
        return
    found.skills.setdefault(info.key, info)
