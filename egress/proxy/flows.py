"""Small readings of mitmproxy flows and connections that the addon's hooks share."""

from __future__ import annotations

from mitmproxy import connection, http

from egress.audit import AuditRecord
from egress.policy.decide import Decision, Destination
from egress.policy.hosts import normalise_host
from egress.reasons import Reason

__all__ = ["audit_record", "peer_address", "requested_destination"]


def requested_destination(flow: http.HTTPFlow) -> Destination:
    """The destination as requested, best effort, for refusals before it is validated."""
    try:
        host = normalise_host(flow.request.host)
    except ValueError:
        host = flow.request.host[:253]
    return Destination(host, flow.request.port)


def peer_address(client: connection.Client) -> str | None:
    peer = client.peername
    if not peer:
        return None
    return f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"


def audit_record(policy: str, flow: http.HTTPFlow, verdict: str, reason: Reason,
                 skill: str | None, dest: Destination, kind: str, rid: str,
                 decision: Decision | None, *, detail: str | None = None,
                 resolved: str | None = None, credential: str | None = None) -> AuditRecord:
    """The audit line for a decision on `flow` (never a query string, header value or body)."""
    req = flow.request
    connect = req.method == "CONNECT"
    return AuditRecord(
        id=rid, decision=verdict, reason=str(reason), kind=kind, skill=skill,
        client=peer_address(flow.client_conn), host=dest.host, port=dest.port,
        method=None if connect else req.data.method.decode("latin-1")[:16],  # as sent
        scheme=None if connect else req.scheme,
        path=None if connect else req.path.split("?", 1)[0][:2048],
        rule=decision.rule.label if decision and decision.rule else None,
        resolved=resolved, policy=policy, detail=detail, credential=credential,
    )
