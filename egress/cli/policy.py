"""`egress policy suggest SKILL`: an allow-list drafted from what the skill actually did.

Run a new skill in report mode (`mode: report`) for a while; every request its policy would
refuse is audited with `decision: report`. This command reads those records (and denials,
and allowed records when `log_allowed` is on) and prints a policy for the skill that allows
exactly the hosts and ports it used, ready for review and `egress check`:

    egress policy suggest weather > policies/weather.yaml

Hosts stay exact unless `--wildcards` is given: then two or more hosts under one parent
domain become `*.parent` (never over a single-label parent such as `*.com`, nor over a public
suffix such as `*.github.io`).

`--merge` starts from the skill's current rules instead (credentials, paths, limits and all,
from the policy file in `--policies DIR` that defines it) and adds only host/port pairs no
existing rule covers; it prints that whole file with the skill's entry extended, to write to a
new file, review (`diff`), and move over the old one:

    egress policy suggest weather --merge --policies policies > weather.suggested.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from egress.audit.query import Query, audit_files, parse_time, read_all, weight
from egress.cli.common import add_data_dir, data_dir
from egress.errors import ConfigError
from egress.policy.hosts import parse_ip_literal
from egress.policy.match import parse_host_pattern
from egress.policy.suffixes import public_suffix

__all__ = ["Seen", "merge", "merge_document", "observed", "render_policy", "suggest"]

# Reasons a rule in the skill's policy would change. Not: blocked_address, dns_failure,
# auth failures, rate limits, host_mismatch -- no allow entry fixes those.
_POLICY_REASONS = frozenset({"allowed", "host_not_allowed", "port_not_allowed",
                             "method_not_allowed", "path_not_allowed", "unknown_skill"})


@dataclass
class Seen:
    host: str  # an exact host, or "*.parent" after collapsing
    ports: set[int] = field(default_factory=set)
    count: int = 0
    first: str = ""
    last: str = ""
    hosts: set[str] = field(default_factory=set)  # the exact hosts behind a wildcard


def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="policy helpers (suggest)",
                       description="Helpers for writing policies.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    s = verbs.add_parser(
        "suggest", help="print an allow-list for a skill from its audit records",
        description="Print a policy (YAML) for SKILL allowing exactly the hosts and ports it "
                    "was seen using in the audit log (report-mode and denied requests; allowed "
                    "ones too when log_allowed is on). Review it, then `egress check`.")
    s.add_argument("skill", metavar="SKILL")
    s.add_argument("--wildcards", action="store_true",
                   help="collapse two or more hosts under one parent domain into *.parent")
    s.add_argument("--since", metavar="T",
                   help="only records from T (an age such as 1d, or a time)")
    s.add_argument("--merge", action="store_true",
                   help="start from the skill's current rules (from --policies) and add only "
                        "what was observed and is not allowed yet; prints the whole policy file")
    s.add_argument("--policies", type=Path, default=Path("policies"), metavar="DIR",
                   help="the policy directory --merge reads (default: policies)")
    add_data_dir(s)
    s.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        since = parse_time(args.since) if args.since else None
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None
    query = Query(skill=args.skill, since=since,
                  decisions=frozenset({"allow", "deny", "report"}))
    records = query.select(read_all(audit_files(data_dir(args))))
    if args.merge:
        sys.stdout.write(merge(args.skill, records, args.policies, wildcards=args.wildcards))
        return 0
    text = suggest(args.skill, records, wildcards=args.wildcards)
    if text is None:
        print(f"egress: no requests of skill {args.skill!r} in the audit log; run it with "
              f"`mode: report` first, so egress records what it would refuse", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def suggest(skill: str, records: Iterable[dict[str, Any]], *,
            wildcards: bool = False) -> str | None:
    """The suggested policy text, or None when the records show nothing for the skill."""
    seen = observed(records)
    if not seen:
        return None
    entries = collapse(seen) if wildcards else sorted(seen.values(), key=lambda s: s.host)
    return render_policy(skill, entries)


def observed(records: Iterable[dict[str, Any]]) -> dict[str, Seen]:
    """Exact hosts with their ports, counts and first/last time, from audit records."""
    out: dict[str, Seen] = {}
    for r in records:
        if r.get("reason") not in _POLICY_REASONS or r.get("kind") == "tls":
            continue
        host, port = r.get("host"), r.get("port")
        if not isinstance(host, str) or not isinstance(port, int) or not 1 <= port <= 65535:
            continue
        try:
            pattern = parse_host_pattern(host)
        except ValueError:
            continue  # not something a policy can name (the log keeps malformed requests too)
        if pattern.wildcard:
            continue
        entry = out.setdefault(pattern.host, Seen(pattern.host, hosts={pattern.host}))
        entry.ports.add(port)
        count, first, last = weight(r)  # a summary of folded denials counts as many
        entry.count += count
        entry.first = min(entry.first, first) if entry.first else first
        entry.last = max(entry.last, last)
    return out


def collapse(seen: dict[str, Seen]) -> list[Seen]:
    """Merge hosts that share a parent of two or more labels into `*.parent`."""
    by_parent: dict[str, list[Seen]] = {}
    singles: list[Seen] = []
    for entry in seen.values():
        parent = entry.host.split(".", 1)[1] if "." in entry.host else ""
        if (parse_ip_literal(entry.host) is not None or parent.count(".") < 1
                or public_suffix(parent) is not None):
            singles.append(entry)  # never *.com, nor *.github.io (egress check refuses both)
        else:
            by_parent.setdefault(parent, []).append(entry)
    out = list(singles)
    for parent, group in by_parent.items():
        if len(group) < 2:
            out.extend(group)
            continue
        merged = Seen(f"*.{parent}")
        for entry in group:
            merged.ports |= entry.ports
            merged.count += entry.count
            merged.hosts |= entry.hosts
            merged.first = min(merged.first, entry.first) if merged.first else entry.first
            merged.last = max(merged.last, entry.last)
        out.append(merged)
    return sorted(out, key=lambda s: s.host)


def render_policy(skill: str, entries: list[Seen]) -> str:
    total = sum(e.count for e in entries)
    first = min(e.first for e in entries)
    last = max(e.last for e in entries)
    lines = [
        f"# Suggested by `egress policy suggest` from {total} audit records "
        f"({first} .. {last}).",
        "# Review every host before enforcing; `egress check DIR` validates this file.",
        "skills:",
        f"  {_quote(skill)}:",
        "    mode: enforce",
        "    allow:",
    ]
    for e in entries:
        note = f"{e.count} requests"
        if len(e.hosts) > 1:
            note += ": " + ", ".join(sorted(e.hosts))
        lines.append(f"      - host: {_quote(e.host)}  # {note}")
        lines.append(f"        ports: [{', '.join(str(p) for p in sorted(e.ports))}]")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    # A JSON string is a valid double-quoted YAML scalar: safe for "*.x", IPv6 literals, IDNA.
    return json.dumps(text)


def merge(skill: str, records: Iterable[dict[str, Any]], policies: Path, *,
          wildcards: bool = False) -> str:
    """The policy file that defines `skill`, with allow entries added for what `records`
    show and no existing rule covers. ConfigError when the directory is not valid or does
    not define the skill."""
    import yaml

    from egress.errors import PolicyErrors
    from egress.policy.load import load_policy_dir

    try:
        policy = load_policy_dir(policies)
    except PolicyErrors as exc:
        raise ConfigError(f"--merge: {policies} is not a valid policy directory (egress check "
                          f"{policies} lists the problems): {exc.errors[0]}") from None
    current = policy.skills.get(skill)
    if current is None:
        raise ConfigError(f"--merge: no policy file in {policies} defines skill {skill!r}; "
                          f"run without --merge for a new skill")
    path = Path(current.source.file)
    if not path.is_absolute() and not path.exists():
        path = policies / path
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--merge: cannot read {path}: {exc}") from None

    def covered(host: str, port: int) -> bool:
        return any(port in rule.ports for rule in current.index.lookup(host))

    return merge_document(skill, document, observed(records), covered, source=str(path),
                          wildcards=wildcards)


def merge_document(skill: str, document: dict[str, Any], seen: dict[str, Seen],
                   covered: Any, *, source: str, wildcards: bool = False) -> str:
    """`document` (a policy file, as loaded) with the skill's `allow` extended by the
    host/port pairs in `seen` that `covered(host, port)` says no rule allows yet. Pure."""
    import yaml

    fresh: dict[str, Seen] = {}
    known: list[str] = []
    for host, entry in sorted(seen.items()):
        ports = {p for p in entry.ports if not covered(host, p)}
        known += [f"{host}:{p}" for p in sorted(entry.ports - ports)]
        if ports:
            fresh[host] = Seen(host, ports, entry.count, entry.first, entry.last, {host})
    entries = collapse(fresh) if wildcards else sorted(fresh.values(), key=lambda s: s.host)
    skill_doc = document["skills"][skill]
    if not isinstance(skill_doc, dict):
        skill_doc = {}
        document["skills"][skill] = skill_doc
    allow = list(skill_doc.get("allow") or [])
    allow += [{"host": e.host, "ports": sorted(e.ports)} for e in entries]
    skill_doc["allow"] = allow
    head = [f"# Merged by `egress policy suggest --merge` from {source}: the skill's rules as "
            f"they are, plus {len(entries)} allow entries for what it was seen using.",
            "# Comments of the original file are not kept. Review (diff against the original), "
            "then `egress check DIR`."]
    for e in entries:
        head.append(f"#   added {e.host} ports {sorted(e.ports)}: {e.count} requests "
                    f"({e.first} .. {e.last})" + (f": {', '.join(sorted(e.hosts))}"
                                                  if len(e.hosts) > 1 else ""))
    if known:
        head.append(f"#   already allowed (host and port; refused by method or path, or "
                    f"allowed): {', '.join(known)}: not widened, review by hand")
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=False, width=100)
    return "\n".join(head) + "\n" + body
