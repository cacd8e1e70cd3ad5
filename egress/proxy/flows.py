"""Reading mitmproxy flows and connections into plain values, and replies into responses.

The gate and the recorder never see a flow: the addon's hooks read one here into an
`Arrival` (what arrived) or a `RequestLine` (what the audit log keeps of a request), and turn
a `Reply` (egress/responses.py) into the mitmproxy Response that is sent.
"""

from __future__ import annotations

from mitmproxy import connection, http

from egress.policy.decide import Destination
from egress.policy.hosts import normalise_host
from egress.proxy.gate import Arrival, ArrivalKind
from egress.proxy.record import RequestLine
from egress.proxy.requestcheck import read_head
from egress.proxy.tunnels import Tunnel
from egress.responses import Reply

__all__ = ["arrival", "peer_address", "request_line", "requested_destination", "response",
           "spell_address"]


def arrival(flow: http.HTTPFlow, kind: ArrivalKind, *, proxy_authorization: str | None,
            authenticated_as: str | None = None, tunnel: Tunnel | None = None,
            verified_tls: bool = False, websocket_enabled: bool = True) -> Arrival:
    """What arrived in `flow` (call in http_connect / requestheaders, before any change)."""
    req = flow.request
    connect = kind == "connect"
    return Arrival(
        kind=kind, connection=flow.client_conn.id, peer=peer_address(flow.client_conn),
        host=req.host, port=req.port, proxy_authorization=proxy_authorization,
        authenticated_as=authenticated_as, head=None if connect else read_head(req),
        scheme=None if connect else req.scheme, path=None if connect else req.path,
        headers=() if connect else tuple(
            (k, v) for k, v in req.headers.items(multi=True)
            if k.lower() != "proxy-authorization"),
        tunnel=tunnel,
        verified_tls=verified_tls, websocket_enabled=websocket_enabled)


def requested_destination(flow: http.HTTPFlow) -> Destination:
    """The destination as requested, best effort, for refusals before it is validated."""
    try:
        host = normalise_host(flow.request.host)
    except ValueError:
        host = flow.request.host[:253]
    return Destination(host, flow.request.port)


def request_line(flow: http.HTTPFlow) -> RequestLine:
    """What the audit log keeps of `flow`'s request (never a query string)."""
    req = flow.request
    if req.method == "CONNECT":
        return RequestLine()
    return RequestLine.of(req.data.method.decode("latin-1"), req.scheme, req.path)


def peer_address(client: connection.Client) -> str | None:
    return spell_address(client.peername)


def spell_address(peer: object) -> str | None:
    """A (host, port, ...) socket address as audit lines spell `client` ('[::1]:5' for IPv6)."""
    if not isinstance(peer, tuple) or len(peer) < 2:
        return None
    return f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"


def response(reply: Reply) -> http.Response:
    return http.Response.make(reply.status, reply.body, dict(reply.headers))
