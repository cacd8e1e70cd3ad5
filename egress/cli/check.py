"""`egress check DIR`: validate a policy directory without starting anything.

Errors (exit 1) and warnings (exit 0) are printed to stderr as `file:line: field: message`,
warnings with `warning: ` before the message (egress/policy/lint.py says what is warned about).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from egress.cli.common import add_json
from egress.errors import PolicyErrors


def register(sub: Any) -> None:
    p = sub.add_parser("check", help="validate policy files",
                       description="Validate every *.yaml in DIR. Exit 0 with a summary, or 1 "
                                   "with one `file:line: field: message` per problem. Warnings "
                                   "(rules that can never work, wildcards over public "
                                   "suffixes' parents) are printed the same way and keep exit 0.")
    p.add_argument("policies", metavar="DIR", help="policy directory")
    add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from egress.policy.lint import policy_warnings
    from egress.policy.load import load_policy_dir

    try:
        policy = load_policy_dir(args.policies)
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
    if args.json:
        summary: dict[str, object] = {
            "ok": True, "skills": len(policy.skills), "rules": policy.rule_count,
            "credentials": creds, "files": len(policy.files), "digest": policy.digest}
        if warnings:  # the key is there only when there is something to say
            summary["warnings"] = [{"file": w.file, "line": w.line, "field": w.field,
                                    "message": w.message} for w in warnings]
        print(json.dumps(summary))
    else:
        for warning in warnings:
            print(warning, file=sys.stderr)
        note = f", {len(warnings)} warning{'s' if len(warnings) != 1 else ''}" if warnings else ""
        print(f"ok: {len(policy.files)} files, {len(policy.skills)} skills, "
              f"{policy.rule_count} rules, {creds} credentials (policy {policy.digest}){note}")
    return 0
