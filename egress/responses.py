"""What egress answers a skill when it refuses: status, headers and an agent-readable body.

Pure builders; the addon turns a Reply into a mitmproxy Response. Bodies carry reason codes and
host names, never secrets, tokens, query strings or upstream error text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from egress.reasons import Reason, explain

__all__ = ["Reply", "refusal", "status_of"]

_STATUS: dict[Reason, int] = {
    Reason.AUTH_REQUIRED: 407,
    Reason.AUTH_INVALID: 407,
    Reason.DNS_FAILURE: 502,
    Reason.UPSTREAM_UNREACHABLE: 502,
    Reason.CREDENTIAL_UNAVAILABLE: 503,
    Reason.NO_POLICY: 503,
    Reason.RATE_LIMITED: 429,
    Reason.BAD_REQUEST: 400,
    Reason.BAD_REQUEST_TARGET: 400,
    Reason.BAD_HEADER: 400,
    Reason.INTERNAL_ERROR: 500,
    Reason.RESPONSE_UNREADABLE: 502,  # (audited; the flow is killed, no reply is built)
    Reason.UPSTREAM_TLS_FAILED: 502,
    Reason.PROTOCOL_ERROR: 400,
    Reason.REQUEST_HEAD_TIMEOUT: 408,
    Reason.CLIENTHELLO_TIMEOUT: 408,
    Reason.AUTH_TIMEOUT: 408,
    Reason.IDLE_TIMEOUT: 408,
    Reason.UNAUTHENTICATED_LIMIT: 429,
    Reason.SIGNING_UNSUPPORTED: 400,
    Reason.APPROVAL_PENDING: 428,
    Reason.APPROVAL_BODY_TOO_LARGE: 413,
    Reason.APPROVAL_BODY_ENCODED: 415,
    Reason.APPROVAL_QUEUE_FULL: 429,
    Reason.APPROVAL_UNAVAILABLE: 503,
}


def status_of(reason: Reason) -> int:
    """The HTTP status a refusal for `reason` is answered with (403 unless listed above)."""
    return _STATUS.get(reason, 403)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def refusal(
    reason: Reason, *, skill: str | None, host: str, port: int, request_id: str,
    policy_source: str | None = None, approval: str | None = None,
    retry_after: int | None = None,
) -> Reply:
    """The response for a refused request. 407s ask for credentials; the rest are JSON.
    `approval`: the approval id a 428 or an approval's 403 is about."""
    status = status_of(reason)
    message = explain(reason, skill=skill, host=host, port=port, approval=approval)
    if policy_source:
        message += f" (policy: {policy_source})"
    body = {
        "error": "egress_denied",
        "skill": skill,
        "host": host,
        "port": port,
        "reason": str(reason),
        "message": message,
        "request_id": request_id,
    }
    if approval is not None:
        body["approval_id"] = approval
    headers: list[tuple[str, str]] = [
        ("Content-Type", "application/json"),
        ("Cache-Control", "no-store"),
        ("X-Egress-Reason", str(reason)),
        ("X-Egress-Request-Id", request_id),
    ]
    if status == 407:
        headers.append(("Proxy-Authenticate", 'Basic realm="egress"'))
    if approval is not None:
        headers.append(("X-Egress-Approval-Id", approval))
    if retry_after is not None:
        headers.append(("Retry-After", str(retry_after)))
    elif status == 429:
        headers.append(("Retry-After", "60"))
    elif status == 428:
        headers.append(("Retry-After", "30"))  # a person may decide meanwhile
    return Reply(status, tuple(headers), (json.dumps(body, indent=None) + "\n").encode())
