"""A connection the fast path hands to mitmproxy, with the admission it already made.

The fast path (egress/proxy/front/) reads the request head, asks the gate and, for what needs
mitmproxy (an intercepted tunnel, an allowed plain-HTTP request, HTTP/1 inside a tunnel),
hands the connection over with the bytes it read replayed. mitmproxy then parses the same
bytes and the addon's hook applies the `Handover`'s admission instead of asking the gate a
second time: nothing is decided twice. Before it does, it checks that mitmproxy read the
request as the fast path did (`same_request`); if the two readings differ, the request is
refused (bad_request) rather than sent on the strength of a decision about other bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from egress.proxy.gate import Admitted, Arrival
from egress.proxy.requestcheck import RequestHead

__all__ = ["Handover", "same_request"]


@dataclass(frozen=True)
class Handover:
    arrival: Arrival  # the request as the fast path read it
    admitted: Admitted  # the gate's answer to it
    recorded: bool = False  # the fast path already recorded the admission (a tunnel it
    #                         answered itself before HTTP/1 turned up inside)


def same_request(front: Arrival, engine: Arrival) -> bool:
    """Whether mitmproxy read the request as the fast path did: everything the gate judged."""
    return (front.kind == engine.kind and front.host == engine.host
            and front.port == engine.port and front.scheme == engine.scheme
            and front.path == engine.path
            and front.proxy_authorization == engine.proxy_authorization
            and tuple(front.headers) == tuple(engine.headers)
            and _same_head(front.head, engine.head))


def _same_head(a: RequestHead | None, b: RequestHead | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.method == b.method and a.target == b.target and a.authority == b.authority
            and tuple(a.hosts) == tuple(b.hosts) and tuple(a.fields) == tuple(b.fields)
            and a.http2 == b.http2)
