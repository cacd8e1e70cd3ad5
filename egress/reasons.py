"""Stable reason codes for every decision egress makes, and the prose built from them.

The codes are a contract: they appear in the audit log, in 403/407/502/503 bodies and in metric
labels, and operators write queries and alerts against them. Add codes; never rename one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Problem", "Reason", "explain"]


class Reason(StrEnum):
    ALLOWED = "allowed"
    AUTH_REQUIRED = "auth_required"
    AUTH_INVALID = "auth_invalid"
    UNKNOWN_SKILL = "unknown_skill"
    HOST_NOT_ALLOWED = "host_not_allowed"
    PORT_NOT_ALLOWED = "port_not_allowed"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    PATH_NOT_ALLOWED = "path_not_allowed"
    HOST_MISMATCH = "host_mismatch"
    BLOCKED_ADDRESS = "blocked_address"
    DNS_FAILURE = "dns_failure"
    BAD_REQUEST = "bad_request"
    CREDENTIAL_UNAVAILABLE = "credential_unavailable"
    CREDENTIAL_EXFILTRATION = "credential_exfiltration"
    TLS_REQUIRED = "tls_required"
    RATE_LIMITED = "rate_limited"
    NO_POLICY = "no_policy"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    INTERNAL_ERROR = "internal_error"
    RESPONSE_UNREADABLE = "response_unreadable"
    # The protocol envelope: what a connection may carry, and how long it may take.
    PROTOCOL_NOT_ALLOWED = "protocol_not_allowed"
    PROTOCOL_ERROR = "protocol_error"
    UPGRADE_NOT_ALLOWED = "upgrade_not_allowed"
    NESTED_CONNECT = "nested_connect"
    UPSTREAM_TLS_FAILED = "upstream_tls_failed"
    CLIENTHELLO_TIMEOUT = "clienthello_timeout"
    REQUEST_HEAD_TIMEOUT = "request_head_timeout"
    AUTH_TIMEOUT = "auth_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    UNAUTHENTICATED_LIMIT = "unauthenticated_limit"
    BAD_REQUEST_TARGET = "bad_request_target"
    BAD_HEADER = "bad_header"
    PATH_NOT_CANONICAL = "path_not_canonical"
    WEBSOCKET_MESSAGE_TOO_BIG = "websocket_message_too_big"
    # Brokered credentials in shapes egress cannot produce for this request.
    SIGNING_UNSUPPORTED = "signing_unsupported"
    # Approvals (a person approves each request an approval rule covers): the replies ...
    APPROVAL_PENDING = "approval_pending"  # 428: nobody decided in time; retry it later
    APPROVAL_DENIED = "approval_denied"  # 403: a person refused this request
    APPROVAL_BODY_TOO_LARGE = "approval_body_too_large"  # 413: over settings.approvals.max_body
    APPROVAL_BODY_ENCODED = "approval_body_encoded"  # 415: a compressed body nobody could read
    APPROVAL_QUEUE_FULL = "approval_queue_full"  # 429: too many open approvals for the skill
    APPROVAL_UNAVAILABLE = "approval_unavailable"  # 503: nobody can approve (no admin endpoint)
    # ... and the steps of an approval in the audit log (kind "approval").
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_GRANTED = "approval_granted"
    APPROVAL_EXPIRED = "approval_expired"
    WOULD_NEED_APPROVAL = "would_need_approval"  # report mode: let through, recorded


@dataclass(frozen=True)
class Problem:
    """Why something is refused: a reason code and a detail safe to audit and show (never a
    secret, token or header value). What the pure checks return (request heads, upgrades,
    credentials); the gate turns it into a Refused."""

    reason: Reason
    detail: str


# One sentence per reason, written for an agent reading a 403 body: what happened, in terms it
# can act on. explain() adds the "do not retry" guidance that is common to all of them.
_WHY: dict[Reason, str] = {
    Reason.ALLOWED: "The request is allowed.",
    Reason.AUTH_REQUIRED: "The request carried no proxy credentials.",
    Reason.AUTH_INVALID: "The proxy credentials were malformed, unknown or revoked.",
    Reason.UNKNOWN_SKILL: "This skill has no egress policy.",
    Reason.HOST_NOT_ALLOWED: "The skill's egress policy does not list this host.",
    Reason.PORT_NOT_ALLOWED: "The skill's egress policy lists this host, but not on this port.",
    Reason.METHOD_NOT_ALLOWED: "The skill's egress policy does not allow this HTTP method here.",
    Reason.PATH_NOT_ALLOWED: "The skill's egress policy does not allow this path on this host.",
    Reason.HOST_MISMATCH: (
        "The request names two different destinations (CONNECT target, TLS SNI and "
        "Host header must agree)."
    ),
    Reason.BLOCKED_ADDRESS: (
        "The host resolves to an address skills may not reach (private, loopback, "
        "link-local, metadata or otherwise reserved)."
    ),
    Reason.DNS_FAILURE: "The host name could not be resolved.",
    Reason.BAD_REQUEST: "The request could not be parsed as a proxy request.",
    Reason.CREDENTIAL_UNAVAILABLE: (
        "The credential this request needs could not be fetched from the secret manager."
    ),
    Reason.CREDENTIAL_EXFILTRATION: (
        "The request carries a brokered credential to a host that credential is not bound to."
    ),
    Reason.TLS_REQUIRED: "Credentials are only injected over verified TLS; use https.",
    Reason.RATE_LIMITED: "The skill exceeded its request rate or connection limit.",
    Reason.NO_POLICY: "egress has no valid policy loaded, so every request is refused.",
    Reason.UPSTREAM_UNREACHABLE: "egress could not connect to the destination.",
    Reason.INTERNAL_ERROR: "egress hit an internal error and refused the request to stay safe.",
    Reason.RESPONSE_UNREADABLE: (
        "The response to a request carrying a brokered credential was compressed or encoded, "
        "so egress could not check it for the credential; it was not delivered."
    ),
    Reason.PROTOCOL_NOT_ALLOWED: (
        "The tunnel carried a protocol egress does not relay: inside CONNECT only TLS or "
        "HTTP/1 (raw TCP only where a rule says raw_tcp), inside intercepted TLS only HTTP/1.1, "
        "HTTP/2 and WebSocket."
    ),
    Reason.PROTOCOL_ERROR: (
        "The connection broke the HTTP protocol (a malformed or contradictory HTTP/2 request), "
        "so it was closed."
    ),
    Reason.UPGRADE_NOT_ALLOWED: (
        "The request asked to switch protocols; egress only allows WebSocket upgrades "
        "(no h2c or other upgrades)."
    ),
    Reason.NESTED_CONNECT: "A CONNECT request inside a tunnel would open a tunnel egress cannot see into.",
    Reason.UPSTREAM_TLS_FAILED: (
        "The destination's TLS certificate could not be verified, so egress did not talk to it."
    ),
    Reason.CLIENTHELLO_TIMEOUT: (
        "The tunnel's first bytes did not complete a TLS ClientHello in time, so it was closed."
    ),
    Reason.REQUEST_HEAD_TIMEOUT: (
        "The request head (request line and headers) did not arrive in time, so the connection "
        "was closed."
    ),
    Reason.AUTH_TIMEOUT: (
        "The connection stayed idle without authenticating, so it was closed."
    ),
    Reason.IDLE_TIMEOUT: "The connection carried no data for too long, so it was closed.",
    Reason.UNAUTHENTICATED_LIMIT: (
        "Too many connections from this address had not authenticated yet; this one was "
        "refused."
    ),
    Reason.BAD_REQUEST_TARGET: (
        "The request target is not a plain path egress can judge: it must start with '/' "
        "and hold no fragment ('#'), space or control character."
    ),
    Reason.BAD_HEADER: (
        "A request header holds bytes HTTP forbids (CR, LF, NUL or another control "
        "character, or obsolete line folding), or the Host header is repeated."
    ),
    Reason.PATH_NOT_CANONICAL: (
        "The request path is not spelt plainly, and this host's rules judge paths: "
        "'.' or '..' segments, empty segments ('//'), backslashes, ';' and percent-escapes "
        "of letters, digits, '-._~', '/', '\\' or '%' are refused, never resolved."
    ),
    Reason.WEBSOCKET_MESSAGE_TOO_BIG: (
        "A WebSocket message was larger than egress relays (settings.websocket.max_message); "
        "the connection was closed with code 1009."
    ),
    Reason.SIGNING_UNSUPPORTED: (
        "egress signs this host's requests with the real AWS keys, and cannot re-sign this "
        "one: aws-chunked streaming uploads (x-amz-content-sha256: STREAMING-...) are not "
        "supported."
    ),
    Reason.APPROVAL_PENDING: (
        "The skill's egress policy requires a person to approve this request, and nobody "
        "decided in time; it was not sent."
    ),
    Reason.APPROVAL_DENIED: "A person reviewed this request and refused it; it was not sent.",
    Reason.APPROVAL_BODY_TOO_LARGE: (
        "This request needs a person's approval, and its body is larger than egress holds "
        "for review (settings.approvals.max_body); it was not sent."
    ),
    Reason.APPROVAL_BODY_ENCODED: (
        "This request needs a person's approval, and its body is compressed "
        "(Content-Encoding), so nobody could read what they approve; it was not sent."
    ),
    Reason.APPROVAL_QUEUE_FULL: (
        "This request needs a person's approval, and the skill already has too many requests "
        "waiting for one; it was not sent."
    ),
    Reason.APPROVAL_UNAVAILABLE: (
        "This request needs a person's approval, and this egress has no admin endpoint "
        "where anyone could give it; it was not sent."
    ),
    Reason.APPROVAL_REQUESTED: "The request is held while a person decides.",
    Reason.APPROVAL_GRANTED: "A person approved the request.",
    Reason.APPROVAL_EXPIRED: "The approval expired.",
    Reason.WOULD_NEED_APPROVAL: (
        "The request would need a person's approval; the skill runs in report mode, so it "
        "was let through."
    ),
}

_WHAT_TO_DO: dict[Reason, str] = {
    Reason.AUTH_REQUIRED: "Send the skill's proxy URL (http://SKILL:TOKEN@host:port).",
    Reason.AUTH_INVALID: "Ask the operator for a valid token (egress token issue/rotate).",
    Reason.DNS_FAILURE: "Check the host name; retrying later may help if DNS is flaky.",
    Reason.UPSTREAM_UNREACHABLE: "The destination may be down; retrying later may help.",
    Reason.CREDENTIAL_UNAVAILABLE: "Retrying later may help; the operator has been told.",
    Reason.RATE_LIMITED: "Slow down and retry later.",
    Reason.INTERNAL_ERROR: "Retrying may help; the operator can find the error in egress's log.",
    Reason.UPSTREAM_TLS_FAILED: (
        "The destination may be misconfigured or impersonated; the operator can add its CA "
        "with settings.upstream_ca if it is a private one."
    ),
    Reason.CLIENTHELLO_TIMEOUT: "Send the whole request promptly; reconnecting may help.",
    Reason.REQUEST_HEAD_TIMEOUT: "Send the whole request promptly; reconnecting may help.",
    Reason.AUTH_TIMEOUT: "Send the request with proxy credentials right after connecting.",
    Reason.IDLE_TIMEOUT: "Reconnecting will work; keep-alive pools should expect this.",
    Reason.UNAUTHENTICATED_LIMIT: "Authenticate on each connection right away; retry later.",
    Reason.PATH_NOT_CANONICAL: (
        "Send the path in its plain form (no dot segments, no '//', letters and digits "
        "unescaped); the same spelling will be refused again."
    ),
    Reason.BAD_HEADER: "Remove the control characters from the header; the same request will be "
                       "refused again.",
    Reason.BAD_REQUEST_TARGET: "Send an origin-form path without a fragment; the same request "
                               "will be refused again.",
    Reason.WEBSOCKET_MESSAGE_TOO_BIG: "Send smaller messages, or ask the operator to raise "
                                      "settings.websocket.max_message.",
    Reason.SIGNING_UNSUPPORTED: (
        "Configure the AWS SDK to send UNSIGNED-PAYLOAD or a signed payload (boto3: "
        "Config(request_checksum_calculation='when_required')); the same request will be "
        "refused again."
    ),
    Reason.APPROVAL_PENDING: (
        "Retry the identical request (same method, URL and body) later: once a person approves "
        "it, that retry is sent, once. A changed request needs a new approval. Do not retry "
        "in a tight loop."
    ),
    Reason.APPROVAL_DENIED: (
        "Do not send it again unchanged; tell the user it was refused, and ask them before "
        "trying anything else."
    ),
    Reason.APPROVAL_BODY_TOO_LARGE: "Send a smaller body, or ask the operator to raise "
                                    "settings.approvals.max_body.",
    Reason.APPROVAL_BODY_ENCODED: "Send the body uncompressed (no Content-Encoding).",
    Reason.APPROVAL_QUEUE_FULL: "Wait for the open approvals to be decided, then retry.",
    Reason.APPROVAL_UNAVAILABLE: "Ask the operator to run egress with its admin endpoint on.",
}

_DEFAULT_TO_DO = (
    "Retrying, changing the URL spelling or bypassing the proxy will not help: "
    "ask the operator to change the skill's egress policy if this access is needed."
)


def explain(reason: Reason, *, skill: str | None, host: str, port: int,
            approval: str | None = None) -> str:
    """Build the agent-readable message for a refusal, e.g. for the 403 JSON body."""
    who = f"skill {skill!r}" if skill else "an unauthenticated client"
    why = _WHY[reason]
    todo = _WHAT_TO_DO.get(reason, _DEFAULT_TO_DO)
    if approval is not None:
        why = f"{why} (approval {approval})"
    return f"egress blocked {who} from reaching {host}:{port}. {why} {todo}"
