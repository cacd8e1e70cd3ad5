"""Small readings of mitmproxy flows and connections that the addon's hooks share."""

from __future__ import annotations

from mitmproxy import connection, http

from egress.audit import AuditRecord
from egress.netguard import IPAddress, parse_ip_literal
from egress.policy.decide import Decision, Destination
from egress.policy.match import normalise_host
from egress.reasons import Reason

__all__ = ["audit_record", "host_and_port", "is_host_name", "listen_addresses", "peer_address",
           "requested_destination"]


def requested_destination(flow: http.HTTPFlow) -> Destination:
    """The destination as requested, best effort, for refusals before it is validated."""
    try:
        host = normalise_host(flow.request.host)
    except ValueError:
        host = flow.request.host[:253]
    return Destination(host, flow.request.port)


def host_and_port(header: str, default_port: int) -> tuple[str, int] | None:
    """(normalised host, port) of a Host header or authority; None when it is malformed."""
    text = header.strip()
    host, port = text, default_port
    if text.startswith("["):
        inner, _, rest = text[1:].partition("]")
        host = inner
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
        elif rest:
            return None
    elif text.count(":") == 1:
        host, p = text.split(":")
        if not p.isdigit():
            return None
        port = int(p)
    try:
        return normalise_host(host), port
    except ValueError:
        return None


def is_host_name(host: str) -> bool:
    """True for a host name egress resolves (not an IP literal)."""
    try:
        return parse_ip_literal(host) is None
    except ValueError:
        return False


def peer_address(client: connection.Client) -> str | None:
    peer = client.peername
    if not peer:
        return None
    return f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"


def listen_addresses(host: str, port: int) -> frozenset[tuple[IPAddress, int]]:
    """egress's own listening addresses, which no skill may be proxied back to."""
    hosts = (host,) if host else ("0.0.0.0", "::")  # empty listen_host: every interface
    return frozenset((ip, port) for ip in map(parse_ip_literal, hosts) if ip is not None)


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
