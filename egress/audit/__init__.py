"""The audit log: typed records, the writer, the denial budget (fold) and queries.

    records.py   AuditRecord (one JSON line), request ids, timestamps, reading lines back
    writer.py    AuditWriter: one os.write per line, rotation
    fold.py      the audit budget: floods of denials folded into summary lines
    query.py     questions asked of the log (`egress denials`, `egress policy suggest`)

What it may import: the standard library, egress.reasons and the policy core (for the
vocabulary: Verdict). Never mitmproxy, aiohttp, dnspython, the proxy, ops or the CLI.
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
