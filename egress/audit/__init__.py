"""The audit log: typed records, the writer, the denial budget (fold) and queries; its tamper
evidence and shipping off the host.

    records.py   AuditRecord (one JSON line), request ids, timestamps, reading lines back
    writer.py    AuditWriter: one os.write per line, rotation, the chain, the spool
    fold.py      the audit budget: floods of denials folded into summary lines
    query.py     questions asked of the log (`egress denials`, `egress policy suggest`)
    report.py    per-skill summaries of a window (`egress report`)
    chain.py     the hash chain (`seq`, `prev`) and signed checkpoints (Ed25519)
    verify.py    checking a chain and its checkpoints (`egress audit verify`)
    spool.py     unshipped lines on disk, one cursor per destination
    ship/        the shipping thread: syslog (RFC 5424/6587), HTTP (JSON Lines, Loki, OCSF)

What it may import: the standard library, egress.reasons and the policy core (for the
vocabulary: Verdict); cryptography (chain.py, verify.py: Ed25519, imported when used);
ship/ also egress.secrets (a destination's token) and aiohttp (ship/http.py, imported when an
HTTP destination starts). Never mitmproxy, dnspython, the proxy, ops or the CLI.
"""

from __future__ import annotations

from egress.audit.records import (
    SCHEMA_VERSION,
    AuditRecord,
    new_request_id,
    parse_record,
    read_records,
    timestamp,
)
from egress.audit.writer import AUDIT_FILE, AuditWriter, Rotation

__all__ = ["AUDIT_FILE", "SCHEMA_VERSION", "AuditRecord", "AuditWriter", "Rotation",
           "new_request_id", "parse_record", "read_records", "timestamp"]
