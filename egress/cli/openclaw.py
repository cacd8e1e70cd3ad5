"""`egress openclaw import|env`: bring an OpenClaw installation behind egress.

import  reads openclaw.json and the skills' SKILL.md, moves every skill key into a secret
        store, writes report-mode policies, and replaces the keys in openclaw.json by
        placeholders (the original is kept as a backup). Safe to run again.
env     prints the environment for one skill's sandbox or agent: proxy URL with its token,
        CA files, placeholders.
Neither command ever prints a key.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from egress.cli.common import add_data_dir, add_json, data_dir
from egress.errors import ConfigError, PolicyErrors
from egress.identity import TokenStore

if TYPE_CHECKING:  # the verbs import what they need when they run (aiohttp, mitmproxy)
    from egress.openclaw.importer import ImportOptions, ImportResult

_SKILL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # as in policy files: URL-safe
_PROXY = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):\d{1,5}$")


def register(sub: Any) -> None:
    p = sub.add_parser("openclaw", help="import OpenClaw skills and keys; print a skill's env",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    imp = verbs.add_parser(
        "import", help="move skill keys out of openclaw.json into egress",
        description="Read openclaw.json (JSON5) and the skills' SKILL.md files; for every "
                    "skill with keys write a report-mode policy with one credential per key, "
                    "store the keys (DATA_DIR/secrets, or OpenBao/Vault with --to-vault), and "
                    "replace them in openclaw.json by placeholders of the same shape. The "
                    "original config is kept as openclaw.json.egress-backup (mode 0600: it holds "
                    "the keys in clear text; --no-backup skips it). A key whose shape (header, "
                    "query parameter) egress does not know stays, with a note. --to-vault takes "
                    "the server from BAO_ADDR/VAULT_ADDR and the token from "
                    "BAO_TOKEN/VAULT_TOKEN.")
    imp.add_argument("--config", type=Path, default=None, metavar="PATH",
                     help="openclaw.json (default: $OPENCLAW_CONFIG_PATH, else "
                          "$OPENCLAW_STATE_DIR/openclaw.json, else "
                          "~/.openclaw[-PROFILE]/openclaw.json; ~ is $OPENCLAW_HOME if set)")
    imp.add_argument("--profile", default=None, metavar="NAME",
                     help="the OpenClaw profile (as `openclaw --profile NAME`): its state "
                          "directory ~/.openclaw-NAME, unless OPENCLAW_STATE_DIR or "
                          "OPENCLAW_CONFIG_PATH say otherwise")
    imp.add_argument("--no-backup", action="store_true",
                     help="keep no copy of the original config (it would hold the keys in "
                          "clear text)")
    imp.add_argument("--skills-dir", type=Path, action="append", default=[], metavar="DIR",
                     help="another folder of skills, searched before OpenClaw's own "
                          "(repeatable)")
    imp.add_argument("--policies", type=Path, required=True, metavar="DIR",
                     help="policy directory to write openclaw-<skill>.yaml files into")
    imp.add_argument("--to-vault", default=None, metavar="MOUNT/PREFIX",
                     help="store keys in OpenBao/Vault KV v2 at MOUNT/PREFIX/<skill>")
    imp.add_argument("--gateway", default=None, metavar="NAME",
                     help="one shared identity NAME holding every key (the shared-gateway "
                          "pattern) instead of one identity per skill")
    add_data_dir(imp)
    add_json(imp)
    imp.set_defaults(run=run_import_command)

    env = verbs.add_parser(
        "env", help="print the env lines for a skill's sandbox or agent",
        description="Print KEY=value lines for a skill's sandbox (docker --env-file) or agent: "
                    "proxy URL with the skill's token, CA files, placeholders of its keys. A "
                    "skill without a token gets one; an existing token cannot be shown again "
                    "(only its hash is kept), so TOKEN stands in its place unless --rotate.")
    env.add_argument("skill", metavar="SKILL")
    env.add_argument("--proxy", default="127.0.0.1:8080", metavar="HOST:PORT",
                     help="where the sandbox reaches egress (default 127.0.0.1:8080)")
    env.add_argument("--policies", type=Path, default=None, metavar="DIR",
                     help="policy directory (default: the one the last import wrote to)")
    env.add_argument("--rotate", action="store_true",
                     help="replace the skill's token by a new one (the old one stops working)")
    add_data_dir(env)
    env.add_argument("--json", action="store_true",
                     help="one JSON object, e.g. for agents.list[].sandbox.docker.env")
    env.set_defaults(run=run_env_command)


# -- import ----------------------------------------------------------------------------------

def run_import_command(args: argparse.Namespace) -> int:
    from egress.openclaw.config import default_config_path
    from egress.openclaw.importer import ImportOptions, run_import

    options = ImportOptions(
        config=args.config.expanduser() if args.config else default_config_path(
            profile=args.profile),
        policies=args.policies, data_dir=data_dir(args),
        skills_dirs=tuple(args.skills_dir), to_vault=args.to_vault, gateway=args.gateway,
        backup=not args.no_backup,
    )
    try:
        result = run_import(options)
    except PolicyErrors as exc:
        raise ConfigError(f"the policies the import would write do not load:\n{exc}") from None
    skipped = [s for s in result.plan.skills if s.status == "skipped"]
    if args.json:
        print(json.dumps(_summary_json(result, options)))
    else:
        _print_summary(result, options)
    return 1 if skipped else 0


def _summary_json(result: ImportResult, options: ImportOptions) -> dict[str, Any]:
    return {
        "config": str(options.config),
        "skills": [{"entry": s.entry, "skill": s.skill, "status": s.status, "moved": s.moved,
                    "credentials": [c.name for c in s.credentials], "note": s.note}
                   for s in result.plan.skills],
        "policies_written": [str(p) for p in result.written],
        "keys_stored": result.stored,
        "config_changed": result.config_changed,
        "layout_kept": result.kept_layout,
        "backup": str(result.backup) if result.backup else None,
        "backup_holds_clear_text_keys": result.backup is not None,
        "left_in_config": result.leftovers,
        "notes": result.plan.notes + result.problems,
    }


def _print_summary(result: ImportResult, options: ImportOptions) -> None:
    out = [f"OpenClaw config: {options.config}"]
    if not result.plan.skills:
        out.append("  no skill in skills.entries holds a key: nothing to import")
    width = max((len(s.skill) for s in result.plan.skills), default=0)
    for s in result.plan.skills:
        count = len(s.credentials)
        what = f"{count} key{'s' if count != 1 else ''}"
        if s.moved:
            what += f", {s.moved} moved now"
        line = f"  {s.skill:<{width}}  {s.status:<9}  {what}"
        if s.note:
            line += f"  ({s.note})"
        out.append(line)
    for path in result.written:
        out.append(f"wrote {path}")
    if result.stored:
        where = ("OpenBao/Vault" if any(k.ref.startswith("vault:") for k in result.plan.store)
                 else f"{options.data_dir / 'secrets'} (files, mode 0600)")
        out.append(f"stored {result.stored} key{'s' if result.stored != 1 else ''} in {where}")
    if result.config_changed:
        out.append(f"replaced the keys in {options.config} by placeholders")
        if not result.kept_layout:
            out.append("  (a key was written with escapes, so the file was rewritten and "
                       "lost its comments; the backup has them)")
    else:
        out.append(f"{options.config}: unchanged")
    if result.backup:
        out.append(f"original kept in {result.backup} (mode 0600): it holds the keys in CLEAR "
                   f"TEXT; once the skills work through egress, remove it: shred -u "
                   f"{result.backup}")
    elif result.config_changed and not options.backup:
        out.append("no backup kept (--no-backup)")
    if result.leftovers:
        out.append("still in the config, not skill keys (left as they are): "
                   + ", ".join(result.leftovers))
    out += [f"note: {n}" for n in result.plan.notes + result.problems]
    if result.written or result.config_changed:
        out.append(f"next: egress check {options.policies}; restart OpenClaw; give each "
                   "sandbox `egress openclaw env SKILL`")
    print("\n".join(out))


# -- env ---------------------------------------------------------------------------------------

def run_env_command(args: argparse.Namespace) -> int:
    from egress.openclaw.env import build_env, env_lines
    from egress.proxy.ca import ensure_bundle, ensure_ca

    if not _SKILL.match(args.skill):
        raise ConfigError(f"{args.skill!r} is not a skill name (letters, digits, '.', '_', '-')")
    if not _PROXY.match(args.proxy):
        raise ConfigError(f"--proxy {args.proxy!r}: write HOST:PORT, e.g. 127.0.0.1:8080")
    base = data_dir(args)
    policies, gateway = _recorded(base, args.policies)
    placeholders = _placeholders(policies, args.skill)
    token = _token(TokenStore(base), args.skill, rotate=args.rotate)
    ca_cert = ensure_ca(base)
    env = build_env(skill=args.skill, token=token, proxy=args.proxy, ca_cert=ca_cert,
                    ca_bundle=ensure_bundle(base), placeholders=placeholders,
                    gateway=args.skill == gateway)
    if args.json:
        print(json.dumps(dict(env), indent=2))
    else:
        sys.stdout.write(env_lines(env))
    print("note: these paths are on this machine; mount the CA files at the same paths in a "
          "sandbox, or change them", file=sys.stderr)
    return 0


def _recorded(base: Path, policies: Path | None) -> tuple[Path | None, str | None]:
    from egress.openclaw.importer import STATE_FILE

    try:
        state = json.loads((base / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = {}
    recorded = state.get("policies") if isinstance(state, dict) else None
    gateway = state.get("gateway") if isinstance(state, dict) else None
    path = policies or (Path(recorded) if isinstance(recorded, str) else None)
    return path, gateway if isinstance(gateway, str) else None


def _placeholders(policies: Path | None, skill: str) -> dict[str, str]:
    from egress.policy.load import load_policy_dir

    if policies is None:
        print("note: no policy directory (pass --policies): no placeholders in the output",
              file=sys.stderr)
        return {}
    policy = load_policy_dir(policies)
    if skill not in policy.skills:
        print(f"warning: {policies} has no policy for {skill!r}: egress refuses all of its "
              "traffic (unknown_skill) until one exists", file=sys.stderr)
        return {}
    creds = policy.skills[skill].credentials.values()
    return {c.name: c.placeholder for c in creds if c.placeholder}


def _token(store: TokenStore, skill: str, *, rotate: bool) -> str:
    has = any(info.skill == skill for info in store.list())
    if rotate:
        token = store.rotate(skill) if has else store.issue(skill)
        print(f"issued a new token for {skill}{' (the old one no longer works)' if has else ''};"
              " this output is the only place it appears", file=sys.stderr)
        return token
    if not has:
        token = store.issue(skill)
        print(f"issued a token for {skill}; this output is the only place it appears",
              file=sys.stderr)
        return token
    print(f"{skill} already has a token, and egress keeps only its hash: replace TOKEN below "
          f"with it, or run `egress openclaw env {skill} --rotate` for a new one (the old "
          "one then stops working)", file=sys.stderr)
    return "TOKEN"
