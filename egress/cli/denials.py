"""`egress denials`: what did skills try that egress refused (or would refuse, in report mode)?

    egress denials --since 1h                      a table, oldest first
    egress denials --skill weather --json          JSON Lines, one audit record per line
    egress denials --by host --since 1d            counts with first and last seen
    egress denials --follow                        print new denials as they happen

Reads DATA_DIR/audit.jsonl and its rotated files (audit.jsonl.1 ... .N). Every field printed
comes from the audit log, where skills control paths and methods: the table escapes control,
bidi and invisible characters (egress/cli/escape.py); JSON escapes everything non-ASCII.
A summary line of folded identical denials (`folded`: N) counts N times in `--by`.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from egress.audit import AUDIT_FILE
from egress.audit.query import Group, Query, audit_files, follow, group, parse_time, read_all
from egress.cli.common import add_data_dir, add_json, data_dir
from egress.cli.escape import json_safe, printable
from egress.errors import ConfigError
from egress.reasons import Reason

_COLUMNS = ("TIME", "SKILL", "DECISION", "REASON", "DESTINATION", "REQUEST", "ID")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "denials", help="list refused requests from the audit log",
        description="List denials (and report-mode would-be denials) from the audit log, "
                    "rotated files included. Filters combine with AND.")
    p.add_argument("--skill", metavar="S", help="only this skill")
    p.add_argument("--host", metavar="H", help="only this host; globs work: '*.example.com'")
    p.add_argument("--reason", metavar="R", choices=[str(r) for r in Reason],
                   help="only this reason code, e.g. host_not_allowed")
    p.add_argument("--since", metavar="T", help="from T: an age (30m, 1h, 7d) or a UTC time")
    p.add_argument("--until", metavar="T", help="up to T: an age or a UTC time")
    p.add_argument("--by", choices=["host", "skill", "reason"],
                   help="group: counts with first and last seen")
    p.add_argument("--follow", action="store_true", help="keep printing new denials (Ctrl-C stops)")
    add_json(p)
    add_data_dir(p)
    p.set_defaults(run=run)


def build_query(args: argparse.Namespace, now: datetime | None = None) -> Query:
    try:
        since = parse_time(args.since, now) if args.since else None
        until = parse_time(args.until, now) if args.until else None
    except ValueError as exc:
        raise ConfigError(f"--since/--until: {exc}") from None
    return Query(skill=args.skill, host=args.host, reason=args.reason, since=since, until=until)


def run(args: argparse.Namespace) -> int:
    if args.follow and args.by:
        raise ConfigError("--follow and --by do not combine: grouping needs the whole log")
    query = build_query(args)
    directory = data_dir(args)
    files = audit_files(directory)
    out = sys.stdout
    if args.by:
        groups = group(query.select(read_all(files)), args.by)
        print_groups(groups, args.by, as_json=args.json, out=out)
        return 0
    printer = _JsonPrinter(out) if args.json else _TablePrinter(out)
    if not args.follow:
        for record in query.select(read_all(files)):
            printer.add(record)
        printer.flush()
        if not args.json and printer.count == 0:
            print("no denials match", file=sys.stderr)
        return 0
    live = directory / AUDIT_FILE
    try:
        # Rotated files first, then the live file through one handle from its first line
        # on: nothing written between the two reads is missed or printed twice.
        for record in query.select(read_all(f for f in files if f != live)):
            printer.add(record)
        printer.flush()
        for batch in follow(live, from_start=True):
            for record in query.select(batch):
                printer.add(record)
            printer.flush()
    except KeyboardInterrupt:
        pass
    return 0


def print_groups(groups: list[Group], by: str, *, as_json: bool, out: Any) -> None:
    if as_json:
        for g in groups:
            out.write(json_safe(json.dumps({by: g.key, "count": g.count, "first": g.first,
                                            "last": g.last})) + "\n")
        return
    rows: list[tuple[str, ...]] = [
        tuple(map(printable, (g.key, str(g.count), _short_time(g.first), _short_time(g.last))))
        for g in groups]
    _table((by.upper(), "COUNT", "FIRST SEEN", "LAST SEEN"), rows, out)
    if not groups:
        print("no denials match", file=sys.stderr)


class _JsonPrinter:
    def __init__(self, out: Any) -> None:
        self.out, self.count = out, 0

    def add(self, record: dict[str, Any]) -> None:
        # ensure_ascii (the default) writes C0, C1, bidi and every other non-ASCII character
        # as \uXXXX; json_safe adds DEL, the one control json.dumps leaves raw.
        self.out.write(json_safe(json.dumps(record, separators=(",", ":"))) + "\n")
        self.count += 1

    def flush(self) -> None:
        self.out.flush()


class _TablePrinter:
    """Collects rows so the first screen is aligned; in --follow mode prints row by row."""

    def __init__(self, out: Any) -> None:
        self.out, self.count = out, 0
        self._rows: list[tuple[str, ...]] = []
        self._header_done = False

    def add(self, record: dict[str, Any]) -> None:
        self._rows.append(row(record))
        self.count += 1

    def flush(self) -> None:
        if not self._rows:
            return
        _table(_COLUMNS, self._rows, self.out, with_header=not self._header_done)
        self._header_done = True
        self._rows = []
        self.out.flush()


def row(record: dict[str, Any]) -> tuple[str, ...]:
    """One table row for an audit record, every field escaped for the terminal."""
    host, port = record.get("host") or "-", record.get("port")
    dest = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    method, path = record.get("method"), record.get("path")
    request = f"{method} {path}" if method and path else str(method or record.get("kind") or "-")
    request = request[:60]
    folded = record.get("folded")
    if isinstance(folded, int) and folded > 0:
        request += f" (folded: {folded})"
    fields = (_short_time(str(record.get("ts", ""))), str(record.get("skill") or "-"),
              str(record.get("decision", "-")), str(record.get("reason", "-")), dest,
              request, str(record.get("id", "-")))
    return tuple(printable(f) for f in fields)


def _short_time(ts: str) -> str:
    """2025-01-31T12:00:00.123Z -> 2025-01-31 12:00:00 (UTC, as in the log)."""
    try:
        when = datetime.fromisoformat(ts).astimezone(UTC)
    except ValueError:
        return ts or "-"
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _table(columns: tuple[str, ...], rows: list[tuple[str, ...]], out: Any, *,
           with_header: bool = True) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(columns)]
    for r in [columns, *rows] if with_header else rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
