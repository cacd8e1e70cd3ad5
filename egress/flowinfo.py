"""Small readings of mitmproxy flows and connections that the addon's hooks share."""

from __future__ import annotations

from mitmproxy import connection, http

from egress.netguard import IPAddress, parse_ip_literal
from egress.policy.decide import Destination
from egress.policy.match import normalise_host

__all__ = ["host_and_port", "is_host_name", "listen_addresses", "peer_address",
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
