"""Protocol switches a request may ask for: only WebSocket, and no tunnel inside a tunnel.

After an `Upgrade: h2c` request and the upstream's `101 Switching Protocols`, mitmproxy relays
the rest of the connection raw (with its `rawtcp` option on, the default): later HTTP/2 streams,
any method to any authority, are never seen. A `CONNECT` (or `CONNECT-UDP`) request would
likewise open a tunnel egress cannot look into. So egress refuses, before anything is sent
upstream, every `Upgrade` other than a well-formed WebSocket handshake and every CONNECT-style
method that reaches a request hook; and it kills any `101` answer to a request it did not
allow to upgrade (an upstream that switches protocols unasked).

Pure functions over plain values; the addon calls them from requestheaders/responseheaders.
"""

from __future__ import annotations

from collections.abc import Sequence

from egress.reasons import Problem, Reason

__all__ = ["request_refusal", "switch_refusal"]

Headers = Sequence[tuple[str, str]]


def _values(headers: Headers, name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name]


def request_refusal(method: str, headers: Headers, *, http2: bool,
                    websocket_enabled: bool = True) -> Problem | None:
    """Why a request asking to switch protocols (or open a tunnel) is refused, or None."""
    if method.upper().startswith("CONNECT"):
        return Problem(Reason.NESTED_CONNECT, f"{method[:16]} request")
    upgrades = _values(headers, "upgrade")
    if not upgrades:
        return None
    what = upgrades[0].strip()[:40]
    if len(upgrades) != 1 or what.lower() != "websocket":
        return Problem(Reason.UPGRADE_NOT_ALLOWED, f"Upgrade: {what!r} (only websocket is allowed)")
    if http2:
        return Problem(Reason.UPGRADE_NOT_ALLOWED, "Upgrade header on an HTTP/2 request")
    if method != "GET":
        return Problem(Reason.UPGRADE_NOT_ALLOWED, f"WebSocket upgrade with method {method[:16]}")
    if [v.strip() for v in _values(headers, "sec-websocket-version")] != ["13"]:
        return Problem(Reason.UPGRADE_NOT_ALLOWED, "WebSocket upgrade without Sec-WebSocket-Version: 13")
    if not websocket_enabled:
        return Problem(Reason.UPGRADE_NOT_ALLOWED, "WebSocket is disabled (mitmproxy option websocket)")
    return None


def switch_refusal(status: int, method: str, request_headers: Headers,
                   response_headers: Headers, *, http2: bool) -> str | None:
    """Why an upstream's `101` must not be relayed, or None (not a 101, or the WebSocket
    handshake egress let through)."""
    if status != 101:
        return None
    asked = _values(request_headers, "upgrade")
    if not asked or request_refusal(method, request_headers, http2=http2) is not None:
        return "upstream switched protocols on a request that did not ask for WebSocket"
    answered = [v.strip().lower() for v in _values(response_headers, "upgrade")]
    if answered != ["websocket"]:
        return "upstream switched to a protocol other than WebSocket"
    return None
