"""One audit line: the typed record, its JSON form, and reading lines back.

Every denial (and every 407) is written; allowed decisions too when `settings.audit.log_allowed`
(egress/audit/writer.py writes them).

What never goes in: secret values, Authorization/Cookie/Proxy-Authorization values, query
strings, bodies. AuditRecord has no field that could hold them.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from egress.policy.decide import Verdict
from egress.reasons import Reason

__all__ = ["SCHEMA_VERSION", "AuditDecision", "AuditKind", "AuditRecord", "new_request_id", "parse_record", "read_records",
           "timestamp"]

SCHEMA_VERSION = 1

# What was judged: a CONNECT, an HTTP request (plain or in a tunnel), a TLS handshake, what a
# tunnel carried, a client connection (timeouts, caps), a WebSocket message, a step of an
# approval (requested, granted, denied, expired).
AuditKind = Literal["connect", "http", "tls", "tunnel", "connection", "websocket", "approval"]
# allow | deny | report, or "hold": a request held while a person decides (approval_requested).
AuditDecision = Verdict | Literal["hold"]


def new_request_id() -> str:
    return secrets.token_hex(8)


def timestamp() -> str:
    """Now, as an audit line's `ts`: RFC 3339 UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class AuditRecord:
    decision: AuditDecision  # allow | deny | report | hold
    reason: Reason
    kind: AuditKind
    host: str  # as requested, normalised
    port: int
    skill: str | None = None  # None when unauthenticated
    client: str | None = None  # "ip:port" of the skill's connection
    method: str | None = None
    scheme: str | None = None
    path: str | None = None  # never with a query string
    rule: str | None = None  # "file:line host" of the rule that matched
    resolved: str | None = None  # the address dialled, if any
    policy: str | None = None  # digest of the policy in force
    detail: str | None = None  # short extra context safe to show (e.g. "127.0.0.1 is loopback")
    credential: str | None = None  # the *name* of a brokered credential, never its value
    # A summary line of identical denials folded under the audit budget (egress/audit/fold.py):
    # how many denials it stands for (none of them written on its own), first and last seen.
    folded: int | None = None
    first_seen: str | None = None
    last_seen: str | None = None
    # Approvals: the approval's id, who decided (as they named themselves: "alice (console)"),
    # and their note.
    approval: str | None = None
    decided_by: str | None = None
    note: str | None = None
    id: str = field(default_factory=new_request_id)
    ts: str = field(default_factory=timestamp)

    def to_json(self) -> str:
        data: dict[str, Any] = {"v": SCHEMA_VERSION}
        data.update((k, v) for k, v in asdict(self).items() if v is not None or k in _ALWAYS)
        # ASCII only: a skill-controlled path with C1 controls (U+009B is a one-character
        # CSI), bidi overrides or U+2028 then cannot act on a terminal running `tail -f`,
        # nor split the line for readers that honour Unicode line breaks (str.splitlines).
        return json.dumps(data, separators=(",", ":"))


_ALWAYS = frozenset({"skill", "ts", "id", "decision", "reason", "host", "port", "kind"})


def read_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the records of one audit file; lines that are not JSON objects are skipped."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            record = parse_record(line)
            if record is not None:
                yield record


def parse_record(line: str | bytes) -> dict[str, Any] | None:
    """One audit line as a dict, or None for a blank, torn or foreign line."""
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None
