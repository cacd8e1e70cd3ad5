"""`egress report --since 24h`: per skill, what it tried that egress refused.

    egress report                        the last 24 hours, a table per skill
    egress report --since 7d --skill s   one skill, a week
    egress report --json                 one JSON object

Denied hosts are marked NEW when no earlier audit line of that skill names them (a first
attempt: where a phone-home shows up); then credential exfiltration attempts, blocked-address
attempts (private, loopback, metadata), rate-limit hits and approvals. Every field printed
comes from the audit log and is escaped for the terminal (egress/cli/escape.py).
`egress denials --host H --skill S` lists the requests behind a line.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from egress.cli.common import add_data_dir, add_json, data_dir
from egress.cli.escape import json_safe, printable
from egress.errors import ConfigError

_HOSTS_SHOWN = 20


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="per skill: denied hosts (new ones marked), exfiltration attempts, ...",
        description="Summarise the audit log per skill: denied hosts (NEW: never seen from "
                    "that skill before the window), credential exfiltration attempts, "
                    "blocked-address attempts, rate-limit hits and approvals.")
    p.add_argument("--since", metavar="T", default="24h",
                   help="window start: an age (30m, 24h, 7d) or a UTC time (default 24h)")
    p.add_argument("--until", metavar="T", help="window end: an age or a UTC time (default now)")
    p.add_argument("--skill", metavar="S", help="only this skill")
    add_json(p)
    add_data_dir(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from egress.audit.query import audit_files, parse_time, read_all
    from egress.audit.report import build_report

    now = datetime.now(UTC)
    try:
        since = parse_time(args.since, now)
        until = parse_time(args.until, now) if args.until else None
    except ValueError as exc:
        raise ConfigError(f"--since/--until: {exc}") from None
    files = audit_files(data_dir(args))
    reports = build_report(read_all(files), since, until)
    if args.skill is not None:
        reports = [r for r in reports if r.skill == args.skill]
    window = {"since": _iso(since), "until": _iso(until or now)}
    if args.json:
        body = {**window, "skills": [r.to_json() for r in reports]}
        sys.stdout.write(json_safe(json.dumps(body, separators=(",", ":"))) + "\n")
        return 0
    out = sys.stdout
    out.write(f"egress report {window['since']} .. {window['until']} (UTC)\n")
    if not files:
        print(f"no audit files in {data_dir(args)}", file=sys.stderr)
    if not reports:
        out.write("nothing refused in this window\n")
        return 0
    rows = [tuple(printable(str(v)) for v in (
        r.skill, r.denials, f"{len(r.hosts)} ({r.new_hosts} new)",
        sum(h.count for h in r.exfiltration.values()), r.blocked_address, r.rate_limited,
        r.approvals)) for r in reports]
    _table(("SKILL", "DENIALS", "DENIED HOSTS", "EXFILTRATION", "BLOCKED ADDR",
            "RATE LIMITED", "APPROVALS"), rows, out)
    for r in reports:
        if not r.hosts:
            continue
        out.write(f"\n{printable(r.skill)}: denied hosts\n")
        hosts = sorted(r.hosts.values(), key=lambda h: (not h.new, -h.count, h.host))
        host_rows = [tuple(printable(v) for v in (
            "NEW" if h.new else "", h.host, str(h.count), _short(h.first), _short(h.last),
            ",".join(sorted(h.reasons)))) for h in hosts[:_HOSTS_SHOWN]]
        _table(("", "HOST", "COUNT", "FIRST", "LAST", "REASONS"), host_rows, out, indent="  ")
        if len(hosts) > _HOSTS_SHOWN:
            out.write(f"  ... {len(hosts) - _HOSTS_SHOWN} more (--json lists all)\n")
        for h in sorted(r.exfiltration.values(), key=lambda h: -h.count):
            out.write(f"  credential exfiltration attempt: {printable(h.host)} x{h.count} "
                      f"(last {_short(h.last)})\n")
    return 0


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _short(ts: str) -> str:
    try:
        return datetime.fromisoformat(ts).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return ts or "-"


def _table(columns: tuple[str, ...], rows: list[tuple[str, ...]], out: Any, *,
           indent: str = "") -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(columns)]
    for r in [columns, *rows]:
        out.write(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                  .rstrip() + "\n")
