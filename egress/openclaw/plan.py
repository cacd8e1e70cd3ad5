"""Plan an import: which keys move, their placeholders, and the policy files to write.

Pure: it reads the parsed config, the skills found on disk and the policy directory as it
is, and returns what should change; `importer.py` carries it out. Keys are found at
`skills.entries.<key>.apiKey` (a plain string; a SecretRef object is left alone) and in
`skills.entries.<key>.env` when the variable's name or the value's prefix says it is a
credential. A value that already is a placeholder of the policy directory was imported
before and stays as it is, which is what makes a second import change nothing.

A key moves only when egress knows the shape its API takes it in (a header, a query
parameter): from the key's prefix, or for prefix-less keys of URL-key APIs from the
variable's name (keys.py). Any other key stays in openclaw.json, with a note saying why:
moving it would leave the skill with a placeholder egress might put in the wrong place.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from egress.openclaw.keys import (
    KeyKind,
    env_kind,
    is_key_like_env,
    key_kind,
    make_placeholder,
    shape_matches,
)
from egress.openclaw.render import RenderedCredential, is_untouched, render_policy
from egress.openclaw.skills import SkillInfo
from egress.policy.hosts import parse_ip_literal
from egress.policy.match import parse_host_pattern
from egress.policy.model import SKILL_NAME, Credential, PolicySet
from egress.secrets.base import Secret

__all__ = ["ImportPlan", "PolicyFile", "SkillKeys", "StoredKey", "make_plan"]



@dataclass(frozen=True)
class StoredKey:
    """A key to write to the secret store. Its repr shows the reference, never the value."""

    skill: str
    name: str
    ref: str
    value: Secret


@dataclass
class SkillKeys:
    """What the import does for one `skills.entries.<key>`."""

    entry: str  # the key under skills.entries
    skill: str  # the egress skill name (proxy user name)
    status: str  # new | updated | unchanged | skipped
    credentials: list[RenderedCredential] = field(default_factory=list)
    moved: int = 0  # keys taken out of the config this time
    note: str | None = None


@dataclass(frozen=True)
class PolicyFile:
    path: Path
    text: str


@dataclass
class ImportPlan:
    skills: list[SkillKeys]
    policies: list[PolicyFile]  # files to (re)write; unchanged ones are not listed
    store: list[StoredKey]
    replacements: dict[str, str] = field(repr=False)  # key value -> placeholder
    notes: list[str] = field(default_factory=list)


RefFor = Callable[[str, str], str]  # (skill, credential name) -> secret reference text


def make_plan(
    *,
    config: Mapping[str, Any],
    config_path: str,
    skills: Mapping[str, SkillInfo],
    existing: PolicySet | None,
    policy_dir: Path,
    file_text: Callable[[Path], str | None],
    ref_for: RefFor,
    gateway: str | None = None,
    choice: Callable[[str], str] = secrets.choice,
) -> ImportPlan:
    """Everything an import would change, computed without changing anything."""
    known = _known_placeholders(existing)
    state = _State(known=known, used=set(known), choice=choice, ref_for=ref_for)
    plan = ImportPlan(skills=[], policies=[], store=[], replacements={})
    entries = _entries(config)
    for entry_key in sorted(entries):
        skill = _skill_name(entry_key)
        if skill is None:
            plan.skills.append(SkillKeys(entry_key, entry_key, "skipped",
                                         note="no usable egress skill name can be made from it"))
            continue
        info = skills.get(entry_key)
        found = _keys_in_entry(entry_key, entries[entry_key], info)
        if not found:
            continue
        prefix = f"{skill}." if gateway else ""
        before = _existing_credentials(existing, gateway or skill, prefix)
        result, pending, pending_repl = _plan_entry(entry_key, skill, prefix, found, before, state)
        plan.skills.append(result)
        if not result.credentials:
            continue  # e.g. its only key belongs to another skill: no policy to write
        if not gateway:
            blocked = _blocked(existing, skill, policy_dir, file_text)
            if blocked and pending:
                result.status, result.note, result.moved = "skipped", blocked, 0
                continue
            text = render_policy(
                skill=skill, description=info.description if info else None,
                sources=[info.path] if info else [],
                credentials=result.credentials, homepage_hosts=_homepages([info]),
                config_path=config_path)
            _want(plan, policy_dir / f"openclaw-{skill}.yaml", text, file_text, blocked)
        plan.store.extend(pending)
        plan.replacements.update(pending_repl)
    if gateway:
        _plan_gateway(plan, gateway, existing, policy_dir, file_text, config_path, skills)
    return plan


@dataclass
class _State:
    """What the entries of one plan share."""

    known: set[str]  # placeholders already in the policy directory
    used: set[str]  # placeholders given out so far (known ones included)
    choice: Callable[[str], str]
    ref_for: RefFor
    owner: dict[str, str] = field(default_factory=dict)  # key value -> skill that has it


def _plan_entry(
    entry_key: str, skill: str, prefix: str, found: list[tuple[str, str, str]],
    before: dict[str, RenderedCredential], state: _State,
) -> tuple[SkillKeys, list[StoredKey], dict[str, str]]:
    """The credentials of one skills.entries item: kept ones, and one per new key."""
    result = SkillKeys(entry_key, skill, "unchanged")
    creds = dict(before)  # by name within the entry (no gateway prefix)
    pending: list[StoredKey] = []
    pending_repl: dict[str, str] = {}
    by_placeholder = {c.placeholder: n for n, c in creds.items()}
    taken: set[str] = set()  # credential names this run has given out
    # First the placeholders already in the config (imported before): their credentials keep
    # their names, so a new key is never filed under a name still in use.
    for _name, origin, value in found:
        if value not in state.known:
            continue
        held = by_placeholder.pop(value, None)
        if held is not None:  # the first place that still holds it names its origin
            creds[held] = replace(creds[held], origin=origin)
            taken.add(held)
        elif not any(c.placeholder == value for c in creds.values()):
            _note(result, f"{origin} holds the placeholder of another skill's key")
    for name, origin, value in found:
        if value in state.known:
            continue
        if _kind(value, name) is None:
            _note(result, f"{origin} stays in openclaw.json: egress cannot tell how its API "
                          "takes this key (a header, a query parameter, HTTP Basic, ...), and "
                          "moving it could break the skill; broker it by hand (README: "
                          "Brokered credentials), then put the credential's placeholder in "
                          "its place")
            continue
        other = state.owner.get(value)
        if other is not None and other != skill:
            _note(result, f"{origin} holds the same key as skill {other!r}; it gets "
                          f"{other!r}'s placeholder, which only {other!r}'s identity can "
                          "use: give each skill its own key")
            continue
        state.owner[value] = skill
        if value in pending_repl:
            continue  # apiKey and env hold the same key: one credential
        if name in taken:  # e.g. apiKey and env.<primaryEnv> hold different keys
            name = next(f"{name}_{n}" for n in range(2, 100) if f"{name}_{n}" not in taken)
        taken.add(name)
        cred = _credential(name, prefix, origin, value, creds.get(name), state, skill)
        creds[name] = cred
        pending.append(StoredKey(skill, name, cred.secret, Secret(value)))
        pending_repl[value] = cred.placeholder
    if pending:
        result.status = "new" if not before else "updated"
        result.moved = len(pending)
    result.credentials = sorted(creds.values(), key=lambda c: c.name)
    return result, pending, pending_repl


def _note(result: SkillKeys, note: str) -> None:
    result.note = note if result.note is None else f"{result.note}; {note}"


def _kind(value: str, name: str) -> KeyKind | None:
    """What the key is: from the name of the variable holding it when that names a URL-key
    API (GOOGLE_MAPS_API_KEY holds an `AIza` key Maps takes as `?key=`), else its prefix."""
    return env_kind(name) or key_kind(value)


def _plan_gateway(plan: ImportPlan, gateway: str, existing: PolicySet | None, policy_dir: Path,
                  file_text: Callable[[Path], str | None], config_path: str,
                  skills: Mapping[str, SkillInfo]) -> None:
    served = [s for s in plan.skills if s.status != "skipped" and s.credentials]
    blocked = _blocked(existing, gateway, policy_dir, file_text)
    if blocked and plan.store:
        for s in served:
            if s.moved:
                s.status, s.note, s.moved = "skipped", blocked, 0
        plan.store.clear()
        plan.replacements.clear()
        return
    creds = [c for s in served for c in s.credentials]
    infos = [skills.get(s.entry) for s in served]
    text = render_policy(
        skill=gateway, description="OpenClaw gateway (shared by its skills)",
        sources=[i.path for i in infos if i is not None],
        credentials=creds, homepage_hosts=_homepages(infos),
        config_path=config_path, gateway_of=[s.skill for s in served])
    _want(plan, policy_dir / f"openclaw-{gateway}.yaml", text, file_text, blocked)


def _want(plan: ImportPlan, path: Path, text: str, file_text: Callable[[Path], str | None],
          blocked: str | None) -> None:
    if blocked is None and file_text(path) != text:
        plan.policies.append(PolicyFile(path, text))


def _blocked(existing: PolicySet | None, skill: str, policy_dir: Path,
             file_text: Callable[[Path], str | None]) -> str | None:
    """Why the importer must not (re)write this skill's policy, or None."""
    path = policy_dir / f"openclaw-{skill}.yaml"
    if existing is not None and skill in existing.skills:
        source = Path(existing.skills[skill].source.file)
        if source.name != path.name:
            return (f"{source} already defines skill {skill!r}; the import does not write "
                    "a second policy for it")
    text = file_text(path)
    if text is not None and not is_untouched(text):
        return (f"{path} was edited since the import wrote it; move it away and import "
                "again, or add the credentials yourself")
    return None


def _entries(config: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    skills = config.get("skills")
    entries = skills.get("entries") if isinstance(skills, Mapping) else None
    if not isinstance(entries, Mapping):
        return {}
    return {str(k): v for k, v in entries.items() if isinstance(v, Mapping)}


def _keys_in_entry(entry_key: str, entry: Mapping[str, Any],
                   info: SkillInfo | None) -> list[tuple[str, str, str]]:
    """(credential name, origin, value) for every key in one skills.entries item."""
    found: list[tuple[str, str, str]] = []
    base = f"skills.entries.{entry_key}"
    api_key = entry.get("apiKey")
    if isinstance(api_key, str) and api_key.strip():
        # apiKey fills the skill's primaryEnv; without SKILL.md we do not know its name.
        name = info.primary_env if info and info.primary_env else "apiKey"
        found.append((name, f"{base}.apiKey", api_key))
    env = entry.get("env")
    if isinstance(env, Mapping):
        for var in sorted(env, key=str):
            value = env[var]
            if isinstance(var, str) and is_key_like_env(var, value):
                found.append((var, f"{base}.env.{var}", value))
    return found


def _skill_name(entry_key: str) -> str | None:
    if SKILL_NAME.match(entry_key):
        return entry_key
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", entry_key).strip("-._")[:64]
    return name if name and SKILL_NAME.match(name) else None


def _known_placeholders(existing: PolicySet | None) -> set[str]:
    if existing is None:
        return set()
    return {c.placeholder for s in existing.skills.values() for c in s.credentials.values()
            if c.placeholder}


def _existing_credentials(existing: PolicySet | None, policy_skill: str,
                          prefix: str) -> dict[str, RenderedCredential]:
    """The credentials this entry already has in the policy, by their name in the entry."""
    if existing is None or policy_skill not in existing.skills:
        return {}
    out: dict[str, RenderedCredential] = {}
    for cred in existing.skills[policy_skill].credentials.values():
        if cred.placeholder and cred.name.startswith(prefix):
            name = cred.name[len(prefix):]
            out[name] = _rendered(cred, prefix + name)
    return out


def _rendered(cred: Credential, name: str) -> RenderedCredential:
    assert cred.placeholder is not None
    # The origin is replaced by the config location still holding the placeholder, if any.
    return RenderedCredential(name, str(cred.secret), cred.header, cred.format, cred.placeholder,
                              _kind(cred.placeholder, name.rsplit(".", 1)[-1]),
                              "an earlier import", cred.query)


def _credential(name: str, prefix: str, origin: str, value: str,
                old: RenderedCredential | None, state: _State, skill: str) -> RenderedCredential:
    """The credential for a key seen for the first time (or a new key under an old name,
    which keeps the old placeholder when the shape still fits, and the old secret location)."""
    placeholder = old.placeholder if old and shape_matches(old.placeholder, value) else None
    if placeholder is None:
        placeholder = _fresh(value, state.used, state.choice)
    kind = _kind(value, name)
    header = old.header if old else (kind.header if kind else "Authorization")
    fmt = old.format if old else (kind.format if kind else "Bearer {secret}")
    query = old.query if old else (kind.query if kind else None)
    ref = old.secret if old else state.ref_for(skill, name)
    return RenderedCredential(prefix + name, ref, header, fmt, placeholder, kind, origin, query)


def _fresh(value: str, used: set[str], choice: Callable[[str], str]) -> str:
    for _ in range(100):
        placeholder = make_placeholder(value, choice)
        if placeholder not in used:
            used.add(placeholder)
            return placeholder
    raise RuntimeError("could not draw an unused placeholder in 100 tries")


def _homepages(infos: list[SkillInfo | None]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for info in infos:
        host = info.homepage_host if info else None
        if not host or parse_ip_literal(host) is not None:
            continue
        try:
            pattern = parse_host_pattern(host)
        except ValueError:
            continue
        if not pattern.wildcard:
            out.append((pattern.host, info.path if info else ""))
    return out
