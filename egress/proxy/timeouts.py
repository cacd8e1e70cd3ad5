"""Which connection limit an open connection broke: the rule table both front ends sweep with.

egress/proxy/connguard.py (connections inside mitmproxy) and the fast path's sweeper
(egress/proxy/front/server.py) keep one `Watch` per client connection and ask `expired` on
every sweep, so a slow or idle client is cut off after the same time, with the same reason,
whichever path holds it. Pure: no clock, no I/O (the callers pass `now`).
"""

from __future__ import annotations

from dataclasses import dataclass

from egress.policy.model import ConnectionSettings
from egress.reasons import Reason

__all__ = ["Watch", "expired", "sweep_interval"]


@dataclass(slots=True)
class Watch:
    """One client connection's clocks (time.monotonic())."""

    peer_ip: str
    last_data: float  # any bytes, either direction (connect time until the first)
    awaiting_head: bool = True  # an HTTP/1 request head may start with the next client bytes
    head_started: float | None = None  # first byte of the head being read
    relay: bool = False  # TCP relay, HTTP/2 or WebSocket: no request heads to time
    authenticated: bool = False
    closing: bool = False  # egress already closed it (and audited that)


def expired(watch: Watch, settings: ConnectionSettings, now: float,
            pending: tuple[float, str] | None) -> tuple[Reason, str] | None:
    """Which limit an open connection broke, if any (pure: the sweeper's rule table).
    `pending`: (since, "clienthello" | "request line") when its tunnel waits for bytes."""
    if pending is not None:
        since, waiting_for = pending
        limit = (settings.clienthello_timeout if waiting_for == "clienthello"
                 else settings.request_head_timeout)
        if now - since > limit:
            reason = (Reason.CLIENTHELLO_TIMEOUT if waiting_for == "clienthello"
                      else Reason.REQUEST_HEAD_TIMEOUT)
            return reason, f"tunnel's {waiting_for} unfinished after {limit:g}s"
    if watch.head_started is not None and now - watch.head_started > settings.request_head_timeout:
        return (Reason.REQUEST_HEAD_TIMEOUT,
                f"request head unfinished after {settings.request_head_timeout:g}s")
    idle = now - watch.last_data
    if not watch.authenticated and idle > settings.idle_before_auth:
        return Reason.AUTH_TIMEOUT, f"no data and no authentication for {settings.idle_before_auth:g}s"
    if watch.authenticated and idle > settings.idle_timeout:
        return Reason.IDLE_TIMEOUT, f"no data for {settings.idle_timeout:g}s"
    return None


def sweep_interval(settings: ConnectionSettings) -> float:
    """How often to look for expired connections: a quarter of the shortest limit, so a
    connection is closed within 25% of it, between 0.1 s and 1 s."""
    shortest = min(settings.request_head_timeout, settings.idle_before_auth,
                   settings.idle_timeout, settings.clienthello_timeout)
    return min(1.0, max(0.1, shortest / 4))
