"""`openclaw.json`: find it, read it (JSON5), and rewrite it with keys replaced.

The rewrite is textual: each key is replaced by its placeholder wherever it appears in the
file (string values, and comments too), so the operator's comments, order and layout stay
as they were. The result is parsed again and must equal the original with the same
replacements applied, and must contain no key; if a key was written with escapes (so the
text does not contain it literally), the file is re-serialised instead and comments are lost
(the summary says so).

Errors never quote the file's text: it is full of keys.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import json5

from egress.errors import ConfigError

__all__ = [
    "BACKUP_SUFFIX",
    "Rewrite",
    "default_config_path",
    "default_skill_roots",
    "expand_home",
    "openclaw_home",
    "parse_config",
    "read_config",
    "rewrite_config_text",
    "save_backup",
    "write_atomically",
]

BACKUP_SUFFIX = ".egress-backup"
MAX_CONFIG = 16 * 1024 * 1024


_PROFILE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what `openclaw --profile` accepts


def openclaw_home(environ: Mapping[str, str] | None = None) -> Path:
    """The home directory OpenClaw resolves `~` against: $OPENCLAW_HOME, else $HOME."""
    env = os.environ if environ is None else environ
    home = (env.get("OPENCLAW_HOME") or "").strip()
    return Path(home).expanduser() if home else Path(env.get("HOME") or Path.home())


def expand_home(text: str, environ: Mapping[str, str] | None = None) -> Path:
    """`text` as a path, with a leading `~` meaning OpenClaw's home (see openclaw_home)."""
    if text == "~" or text.startswith("~/"):
        return openclaw_home(environ) / text[2:]
    return Path(text)


def default_config_path(environ: Mapping[str, str] | None = None,
                        profile: str | None = None) -> Path:
    """Where OpenClaw reads its config, as OpenClaw decides it: $OPENCLAW_CONFIG_PATH, else
    the state directory's openclaw.json. The state directory is $OPENCLAW_STATE_DIR, else
    ~/.openclaw-PROFILE with `--profile PROFILE` (~/.openclaw for "default"), else
    ~/.openclaw; `~` is $OPENCLAW_HOME when set. Like OpenClaw, a profile only fills in
    what the variables leave open. Raises ConfigError for a profile name OpenClaw refuses."""
    env = os.environ if environ is None else environ
    if profile is not None and not _PROFILE.match(profile):
        raise ConfigError(f"--profile {profile!r}: use letters, digits, '_' and '-' only "
                          "(as openclaw --profile does)")
    if (env.get("OPENCLAW_CONFIG_PATH") or "").strip():
        return expand_home(env["OPENCLAW_CONFIG_PATH"].strip(), env)
    state = (env.get("OPENCLAW_STATE_DIR") or "").strip()
    if state:
        return expand_home(state, env) / "openclaw.json"
    suffix = f"-{profile}" if profile and profile.lower() != "default" else ""
    return openclaw_home(env) / f".openclaw{suffix}" / "openclaw.json"


def read_config(path: Path) -> tuple[str, dict[str, Any]]:
    """The config's text and its parsed content. Raises ConfigError."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no OpenClaw config here; pass --config PATH") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    if len(raw) > MAX_CONFIG:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG} bytes; is it the right file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return text, parse_config(text, str(path))


_POSITION = re.compile(r":(\d+)")


def parse_config(text: str, name: str) -> dict[str, Any]:
    """Parse JSON5 text into a dict. Raises ConfigError with a line number, never the text."""
    try:
        data = json5.loads(text)
    except ValueError as exc:
        # json5 names the offending character; keep only the line (the text may be a key).
        line = _POSITION.search(str(exc))
        where = f" near line {line.group(1)}" if line else ""
        raise ConfigError(f"{name}: not valid JSON5{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: the top level must be an object {{...}}")
    return data


def default_skill_roots(config_path: Path, config: Mapping[str, Any],
                        environ: Mapping[str, str] | None = None) -> list[Path]:
    """Skill folders OpenClaw loads, highest precedence first: the default workspace's
    `skills` and `.agents/skills`, then those of each agent's own workspace (`agents.list`,
    an array of {id, workspace}, and `agents.entries`, an object of id -> {workspace}: both
    are read), the state directory's `skills`, then `skills.load.extraDirs`. `~` is
    OpenClaw's home ($OPENCLAW_HOME, else $HOME)."""
    state = config_path.parent
    workspace = _dig(config, "agents", "defaults", "workspace")
    ws = _path(workspace, state, environ) if isinstance(workspace, str) else state / "workspace"
    roots = [ws / "skills", ws / ".agents" / "skills"]
    for agent_ws in _agent_workspaces(config):
        agent = _path(agent_ws, state, environ)
        roots += [agent / "skills", agent / ".agents" / "skills"]
    roots.append(state / "skills")
    extra = _dig(config, "skills", "load", "extraDirs")
    if isinstance(extra, list):
        roots.extend(_path(d, state, environ) for d in extra if isinstance(d, str) and d)
    return list(dict.fromkeys(roots))  # each folder once, first place kept


def _agent_workspaces(config: Mapping[str, Any]) -> list[str]:
    agents: list[Any] = []
    listed = _dig(config, "agents", "list")
    if isinstance(listed, list):
        agents += listed
    entries = _dig(config, "agents", "entries")
    if isinstance(entries, Mapping):
        agents += [entries[k] for k in sorted(entries, key=str)]
    return [a["workspace"] for a in agents
            if isinstance(a, Mapping) and isinstance(a.get("workspace"), str) and a["workspace"]]


def _path(text: str, base: Path, environ: Mapping[str, str] | None = None) -> Path:
    p = expand_home(text, environ)
    return p if p.is_absolute() else base / p


def _dig(data: Mapping[str, Any], *keys: str) -> Any:
    node: Any = data
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


@dataclass(frozen=True)
class Rewrite:
    text: str
    kept_layout: bool  # False: re-serialised, comments and layout are gone


def rewrite_config_text(text: str, replacements: Mapping[str, str], name: str) -> Rewrite:
    """Replace every key (mapping key) by its placeholder (value) in a JSON5 config text."""
    original = parse_config(text, name)
    expected = _replace_all(original, replacements)
    # Longest first, so a key that contains another key is replaced whole.
    new = text
    for key in sorted(replacements, key=len, reverse=True):
        new = new.replace(key, replacements[key])
    if _clean(new, replacements) and parse_config(new, name) == expected:
        return Rewrite(new, kept_layout=True)
    fallback = json5.dumps(expected, indent=2, ensure_ascii=False) + "\n"
    if not _clean(fallback, replacements) or parse_config(fallback, name) != expected:
        raise ConfigError(f"{name}: could not write a copy without keys; nothing was changed")
    return Rewrite(fallback, kept_layout=False)


def _clean(text: str, replacements: Mapping[str, str]) -> bool:
    return not any(key in text for key in replacements)


def _replace_all(node: Any, replacements: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        for key in sorted(replacements, key=len, reverse=True):
            node = node.replace(key, replacements[key])
        return node
    if isinstance(node, dict):
        return {_replace_all(k, replacements): _replace_all(v, replacements)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_all(v, replacements) for v in node]
    return node


def save_backup(path: Path, original: bytes, owner: tuple[int, int] | None = None
                ) -> Path | None:
    """Keep `original` (the config before the first rewrite) next to it, mode 0600 whatever
    the config's mode: it holds every key in clear text, so only its owner may read it.

    The first backup is PATH.egress-backup and is never overwritten: it holds the keys as
    they were. A later import that has new keys to move keeps that version as
    PATH.egress-backup.2, .3, ... Returns the backup written, or None when an existing
    backup already holds exactly `original`.
    """
    candidates = [path.with_name(path.name + BACKUP_SUFFIX)]
    candidates += [path.with_name(f"{path.name}{BACKUP_SUFFIX}.{n}") for n in range(2, 1000)]
    for backup in candidates:
        try:
            fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            try:
                if backup.read_bytes() == original:
                    return None
            except OSError:
                pass
            continue
        except OSError as exc:
            raise ConfigError(f"{backup}: cannot write the backup ({exc.strerror})") from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(original)
                fh.flush()
                os.fsync(fh.fileno())
            _chown(backup, owner)
            os.chmod(backup, 0o600)  # (umask aside, O_CREAT's 0600 already; say it anyway)
        except OSError as exc:
            backup.unlink(missing_ok=True)
            raise ConfigError(f"{backup}: cannot write the backup ({exc.strerror})") from None
        return backup
    raise ConfigError(f"{path}: too many backups already; remove old {BACKUP_SUFFIX}.N files")


def write_atomically(path: Path, data: bytes, mode: int,
                     owner: tuple[int, int] | None = None) -> None:
    """Replace `path` by `data` (write, fsync, rename) with permission bits `mode`, and the
    file's `owner` (uid, gid) when given and permitted: root importing a user's config must
    not leave the user a file they cannot read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _chown(tmp, owner)
        os.chmod(tmp, stat.S_IMODE(mode))  # mkstemp made it 0600; set the mode it must have
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _chown(path: str | Path, owner: tuple[int, int] | None) -> None:
    if owner is None or owner == (os.geteuid(), os.getegid()):
        return
    try:
        os.chown(path, *owner)
    except PermissionError:
        pass  # not root: the file is ours, as everything else this user writes
