"""`egress secrets status`: every brokered secret, its backend, version and age.

For each reference of each credential: the backend, the version and last-changed time the
backend reports (Vault/OpenBao KV v2 metadata, a file's mtime, 1Password's item; env and
Doppler say none), its age, and `OLD` when it is older than `settings.secrets.max_age` (or
`--max-age`): rotation hygiene. Exit 1 when a secret is too old or cannot be described.
Never prints a value.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from egress.cli.common import add_json
from egress.errors import ConfigError, PolicyErrors


def register(sub: Any) -> None:
    p = sub.add_parser("secrets", help="brokered secrets: status (age, version)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    st = verbs.add_parser("status", help="list every brokered secret with backend, version "
                                         "and age; flag those older than max_age")
    st.add_argument("policies", metavar="DIR", type=Path, help="policy directory")
    st.add_argument("--max-age", default=None, metavar="DURATION",
                    help="flag secrets last changed longer ago (default: "
                         "settings.secrets.max_age), e.g. 90d")
    add_json(st)
    st.set_defaults(run=run_status)


def run_status(args: argparse.Namespace) -> int:
    import asyncio

    from egress.ops.credential_health import SecretStatus, secret_statuses
    from egress.policy.load import load_policy_dir
    from egress.policy.secret_settings import SecretSettings
    from egress.policy.units import parse_duration
    from egress.secrets import build_secret_cache

    max_age = None
    if args.max_age is not None:
        try:
            max_age = parse_duration(args.max_age)
        except ValueError as exc:
            raise ConfigError(f"--max-age: {exc}") from None
    try:
        policy = load_policy_dir(args.policies)
    except PolicyErrors as exc:
        for err in exc.errors:
            print(err, file=sys.stderr)
        return 1

    async def run() -> list[SecretStatus]:
        cache = build_secret_cache(policy.settings.secrets or SecretSettings())
        try:
            return await secret_statuses(policy, cache, max_age=max_age)
        finally:
            await cache.close()

    statuses = asyncio.run(run())
    if args.json:
        for s in statuses:
            print(json.dumps({"skill": s.skill, "credential": s.credential, "field": s.field,
                              "reference": s.reference, "backend": s.backend,
                              "version": s.version, "changed_at": _when(s.changed_at),
                              "age_seconds": round(s.age) if s.age is not None else None,
                              "too_old": s.too_old, "error": s.error, "note": s.note}))
    else:
        _table(statuses)
    return 1 if any(s.too_old or s.error for s in statuses) else 0


def _when(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def _table(statuses: list[Any]) -> None:
    rows = [("CREDENTIAL", "FIELD", "BACKEND", "VERSION", "CHANGED", "AGE", "")]
    for s in statuses:
        flag = "OLD" if s.too_old else (s.error.upper() if s.error else "")
        note = f"  {s.note}" if (s.error or s.changed_at is None) and s.note else ""
        rows.append((f"{s.skill}/{s.credential}", s.field, s.backend, s.version or "-",
                     _when(s.changed_at) or "-", _age(s.age), flag + note))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:6], widths, strict=True)) + "  " + r[6])
    if not statuses:
        print("(no brokered credentials)")
