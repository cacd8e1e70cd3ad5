"""`egress openclaw import`, the imperative part: read, plan, check, then write in a safe order.

Order, so that a failure never loses a key and never leaves a config pointing at nothing:
1. read the config, the skills and the policy directory; plan (nothing written yet);
2. validate the policy directory as it will be (existing files plus the new ones);
3. store the keys (files or OpenBao/Vault);
4. write the policy files, and load the directory again;
5. back up the config (first time only; 0600, unless --no-backup), then replace it with the
   copy holding placeholders.
A second run finds only placeholders, so it stores, writes and backs up nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from egress.errors import ConfigError, PolicyErrors
from egress.openclaw.config import (
    default_skill_roots,
    parse_config,
    read_config,
    rewrite_config_text,
    save_backup,
    write_atomically,
)
from egress.openclaw.keys import MIN_KEY_LENGTH, is_key_like_env, key_kind
from egress.openclaw.plan import ImportPlan, PolicyFile, make_plan
from egress.openclaw.render import is_untouched, seal
from egress.openclaw.skills import discover_skills
from egress.openclaw.store import (
    check_vault_location,
    file_ref,
    store_keys,
    vault_connection,
    vault_ref,
)
from egress.policy.load import load_policy_dir, load_policy_texts
from egress.policy.model import SKILL_NAME, PolicySet

__all__ = ["ImportOptions", "ImportResult", "STATE_FILE", "find_leftovers", "run_import"]

STATE_FILE = "openclaw-import.json"  # in DATA_DIR: where the policies are, for `openclaw env`
SETTINGS_FILE = "openclaw-settings.yaml"


@dataclass(frozen=True)
class ImportOptions:
    config: Path
    policies: Path
    data_dir: Path
    skills_dirs: tuple[Path, ...] = ()
    to_vault: str | None = None  # MOUNT/PREFIX
    gateway: str | None = None  # one shared identity instead of one per skill
    environ: Mapping[str, str] | None = None
    choice: Callable[[str], str] = secrets.choice
    backup: bool = True  # keep the original config (0600, keys in clear text) beside it


@dataclass
class ImportResult:
    plan: ImportPlan
    written: list[Path] = field(default_factory=list)  # policy files written
    stored: int = 0  # keys written to the store
    backup: Path | None = None
    config_changed: bool = False
    kept_layout: bool = True
    leftovers: list[str] = field(default_factory=list)  # config paths still holding secrets
    problems: list[str] = field(default_factory=list)  # SKILL.md files that were skipped


def run_import(opts: ImportOptions) -> ImportResult:
    """Import the keys of an OpenClaw config. Raises ConfigError, PolicyErrors, SecretError."""
    if opts.gateway is not None and not SKILL_NAME.match(opts.gateway):
        raise ConfigError(f"--gateway {opts.gateway!r}: a skill name uses letters, digits, "
                          "'.', '_' and '-' (at most 64)")
    text, config = read_config(opts.config)
    roots = [*opts.skills_dirs, *default_skill_roots(opts.config, config, opts.environ)]
    discovery = discover_skills(roots)
    existing = _load_existing(opts.policies)
    environ = opts.environ
    location = check_vault_location(opts.to_vault) if opts.to_vault else None
    if location is not None:
        vault_connection(environ)  # fail before anything is planned, let alone written

    def ref_for(skill: str, name: str) -> str:
        if location is not None:
            return vault_ref(location, skill, name)
        return file_ref(opts.data_dir, skill, name)

    plan = make_plan(
        config=config, config_path=str(opts.config), skills=discovery.skills,
        existing=existing, policy_dir=opts.policies, file_text=_file_text, ref_for=ref_for,
        gateway=opts.gateway, choice=opts.choice,
    )
    result = ImportResult(plan=plan, problems=discovery.problems)
    if any(k.ref.startswith("vault:") for k in plan.store):
        _plan_vault_settings(plan, existing, opts, environ)
    _validate(opts.policies, plan.policies)
    rewrite = rewrite_config_text(text, plan.replacements, str(opts.config)) \
        if plan.replacements else None

    result.stored = store_keys(plan.store, environ)
    for policy in plan.policies:
        write_atomically(policy.path, policy.text.encode("utf-8"), 0o644)
        result.written.append(policy.path)
    if _yaml_files(opts.policies):
        load_policy_dir(opts.policies)  # what was written must load, or the run fails loudly
    if rewrite is not None and rewrite.text != text:
        target = opts.config.resolve()  # a symlinked config: rewrite the file, keep the link
        st = os.stat(target)
        owner = (st.st_uid, st.st_gid)
        if opts.backup:
            result.backup = save_backup(target, text.encode("utf-8"), owner)
        write_atomically(target, rewrite.text.encode("utf-8"), stat.S_IMODE(st.st_mode), owner)
        result.config_changed, result.kept_layout = True, rewrite.kept_layout
        text = rewrite.text
    placeholders = {c.placeholder for s in plan.skills for c in s.credentials}
    result.leftovers = find_leftovers(parse_config(text, str(opts.config)), placeholders)
    _remember(opts)
    return result


def _file_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None


def _yaml_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def _load_existing(directory: Path) -> PolicySet | None:
    if not _yaml_files(directory):
        return None
    try:
        return load_policy_dir(directory)
    except PolicyErrors as exc:
        raise ConfigError(f"{directory}: fix these policy problems first, then import "
                          f"again:\n{exc}") from None


def _validate(directory: Path, new: list[PolicyFile]) -> None:
    """The directory as it will be after the import must load; else nothing is written."""
    replaced = {p.path for p in new}
    texts = [(str(p), _file_text(p) or "") for p in _yaml_files(directory) if p not in replaced]
    texts += [(str(p.path), p.text) for p in new]
    if texts:
        load_policy_texts(texts)


def _plan_vault_settings(plan: ImportPlan, existing: PolicySet | None, opts: ImportOptions,
                         environ: Mapping[str, str] | None) -> None:
    """egress serve needs settings.secrets.vault to read what goes into Vault: write it in
    a file of its own when the directory has no settings yet, else stop, saying what to add."""
    settings = existing.settings if existing is not None else None
    if settings is not None and settings.secrets is not None and settings.secrets.vault:
        return
    vault = vault_connection(environ)
    path = opts.policies / SETTINGS_FILE
    current = _file_text(path)
    elsewhere = settings is not None and settings.source is not None \
        and Path(settings.source.file).name != SETTINGS_FILE
    if elsewhere or (current is not None and not is_untouched(current)):
        # Policies naming vault: without settings.secrets.vault do not load (a reference to
        # an unconfigured backend is a load error): stop before anything is written.
        where = settings.source.file if elsewhere and settings and settings.source else str(path)
        raise ConfigError(
            f"add to the settings in {where}: secrets: {{vault: {{addr: {json.dumps(vault.addr)}, "
            f"auth: {{token_env: {vault.token_env}}}}}}} so egress can read the imported keys, "
            "then import again (nothing was changed)")
    text = seal(
        "# Generated by `egress openclaw import`: where egress reads the keys it put in\n"
        "# OpenBao/Vault. egress serve needs the token in the variable named below.\n"
        "settings:\n"
        "  secrets:\n"
        "    vault:\n"
        f"      addr: {json.dumps(vault.addr)}\n"
        f"      auth: {{token_env: {vault.token_env}}}\n"
    )
    if current != text:
        plan.policies.append(PolicyFile(path, text))


_CREDENTIAL_FIELDS = ("apikey", "token", "bottoken", "secret", "password", "apptoken")


def find_leftovers(config: Any, placeholders: set[str]) -> list[str]:
    """Config paths that still hold something that looks like a plain key (never the value)."""
    return sorted(path for path, value in _strings(config, "")
                  if value not in placeholders and _looks_secret(path, value))


def _looks_secret(path: str, value: str) -> bool:
    if len(value) < MIN_KEY_LENGTH or value.startswith("${"):  # ${VAR}: OpenClaw substitution
        return False
    last = path.rsplit(".", 1)[-1]
    if key_kind(value) is not None and len(value) >= 20 and " " not in value:
        return True
    return last.lower() in _CREDENTIAL_FIELDS or is_key_like_env(last, value)


def _strings(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}[{i}]")


def _remember(opts: ImportOptions) -> None:
    """Note where the policies are, so `egress openclaw env` finds the placeholders."""
    state = opts.data_dir / STATE_FILE
    body = json.dumps({"version": 1, "policies": str(opts.policies.resolve()),
                       "config": str(opts.config.resolve()), "gateway": opts.gateway},
                      indent=2) + "\n"
    if _file_text(state) != body:
        opts.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(state, body.encode(), 0o600)
