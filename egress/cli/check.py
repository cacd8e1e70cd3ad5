"""`egress check DIR`: validate a policy directory without starting anything.

Errors (exit 1) and warnings (exit 0) are printed to stderr as `file:line: field: message`,
warnings with `warning: ` before the message (egress/policy/lint.py says what is warned about).
Secret references that cannot be read in this environment (an unset variable, a missing
file, a backend's token variable unset: egress/secrets/preflight.py) are errors too, unless
`--skip-env` (checking on another machine than the one egress runs on). `--resolve` fetches
every referenced secret once and prints per credential ok / stale / missing / forbidden /
misconfigured / down, never a value.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from egress.cli.common import add_json
from egress.errors import PolicyErrors

if TYPE_CHECKING:
    from egress.ops.credential_health import CredentialHealth
    from egress.policy.model import PolicySet


def register(sub: Any) -> None:
    p = sub.add_parser("check", help="validate policy files",
                       description="Validate every *.yaml in DIR. Exit 0 with a summary, or 1 "
                                   "with one `file:line: field: message` per problem. Warnings "
                                   "(rules that can never work, wildcards over public "
                                   "suffixes' parents) are printed the same way and keep exit 0.")
    p.add_argument("policies", metavar="DIR", help="policy directory")
    p.add_argument("--resolve", action="store_true",
                   help="fetch each referenced secret once and report per credential whether "
                        "it resolves (never a value)")
    p.add_argument("--skip-env", action="store_true",
                   help="do not check secret references against this environment (unset "
                        "variables, missing files): for checking a policy on another machine")
    add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from egress.policy.lint import policy_warnings
    from egress.policy.load import load_policy_dir

    try:
        policy = load_policy_dir(args.policies)
        if not args.skip_env:
            from egress.secrets.preflight import reference_problems

            problems = reference_problems(policy)
            if problems:
                raise PolicyErrors(problems)
    except PolicyErrors as exc:
        if args.json:
            print(json.dumps({"ok": False, "errors": [
                {"file": e.file, "line": e.line, "field": e.field, "message": e.message}
                for e in exc.errors]}))
        else:
            for err in exc.errors:
                print(err, file=sys.stderr)
        return 1
    creds = sum(len(s.credentials) for s in policy.skills.values())
    warnings = policy_warnings(policy)
    resolved = _resolve(policy) if args.resolve else None
    if args.json:
        summary: dict[str, object] = {
            "ok": True, "skills": len(policy.skills), "rules": policy.rule_count,
            "credentials": creds, "files": len(policy.files), "digest": policy.digest}
        if warnings:  # the key is there only when there is something to say
            summary["warnings"] = [{"file": w.file, "line": w.line, "field": w.field,
                                    "message": w.message} for w in warnings]
        if resolved is not None:
            summary["credentials_resolved"] = [
                {"skill": c.skill, "credential": c.credential, "status": c.status,
                 "backends": list(c.backends), "problems": list(c.problems)} for c in resolved]
            summary["ok"] = all(c.ok for c in resolved)
        print(json.dumps(summary))
    else:
        for warning in warnings:
            print(warning, file=sys.stderr)
        note = f", {len(warnings)} warning{'s' if len(warnings) != 1 else ''}" if warnings else ""
        print(f"ok: {len(policy.files)} files, {len(policy.skills)} skills, "
              f"{policy.rule_count} rules, {creds} credentials (policy {policy.digest}){note}")
        for c in resolved or ():
            line = f"{c.skill}/{c.credential}: {c.status} ({', '.join(c.backends)})"
            print(line + "".join(f"\n  {p}" for p in c.problems))
    return 0 if resolved is None or all(c.ok for c in resolved) else 1


def _resolve(policy: PolicySet) -> list[CredentialHealth]:
    """Every credential's references fetched once, through a cache of their own."""
    import asyncio

    from egress.ops.credential_health import check_credentials
    from egress.policy.secret_settings import SecretSettings
    from egress.secrets import build_secret_cache

    async def run() -> list[CredentialHealth]:
        cache = build_secret_cache(policy.settings.secrets or SecretSettings())
        try:
            return await check_credentials(policy, cache)
        finally:
            await cache.close()

    return asyncio.run(run())
