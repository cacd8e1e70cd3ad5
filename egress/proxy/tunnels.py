"""A client connection's approved CONNECT tunnel, and the TLS checks made on it.

The addon keeps one Tunnel per client connection (WeakKeyDictionary, as mitmproxy's proxyauth
does). `sni_matches` is the one-destination rule for TLS; egress/proxy/layers.py applies it when it
chooses the tunnel's layer, and tls_clienthello once more on intercepted tunnels.
"""

from __future__ import annotations

from dataclasses import dataclass

from egress.policy.decide import Decision
from egress.policy.hosts import normalise_host, parse_ip_literal
from egress.reasons import Reason

__all__ = ["Tunnel", "sni_matches"]


@dataclass
class Tunnel:
    """What was decided for a client connection's CONNECT."""

    skill: str
    host: str  # normalised CONNECT host
    port: int
    decision: Decision
    address: str | None  # the vetted address dialled
    refused: Reason | None = None  # set when a later check (SNI) refused the tunnel
    refused_id: str | None = None  # its refusal's audit line: later replies name it


def sni_matches(tunnel: Tunnel, sni: str | None) -> bool:
    """The TLS SNI names the CONNECT host (clients send none for IP literals)."""
    if sni is None:
        return parse_ip_literal(tunnel.host) is not None
    try:
        return normalise_host(sni) == tunnel.host
    except ValueError:
        return False
