"""The one-destination rule for TLS: the ClientHello's SNI must name the CONNECT host."""

from __future__ import annotations

import pytest

from egress.policy.decide import Decision, Verdict
from egress.proxy.tunnels import Tunnel, sni_matches
from egress.reasons import Reason


def tunnel(host: str) -> Tunnel:
    return Tunnel("s", host, 443, Decision(Verdict.ALLOW, Reason.ALLOWED), "203.0.113.7")


@pytest.mark.parametrize("host, sni, ok", [
    pytest.param("api.example.com", "api.example.com", True, id="same name"),
    pytest.param("api.example.com", "API.Example.COM.", True, id="case and trailing dot normalised"),
    pytest.param("api.example.com", "evil.example.com", False, id="another name on the same tunnel"),
    pytest.param("api.example.com", None, False, id="no SNI for a name"),
    pytest.param("203.0.113.7", None, True, id="no SNI for an IP literal is normal"),
    pytest.param("203.0.113.7", "api.example.com", False, id="a name on an IP-literal tunnel"),
    pytest.param("api.example.com", "a..b", False, id="malformed SNI"),
])
def test_sni_must_name_the_connect_host(host: str, sni: str | None, ok: bool) -> None:
    assert sni_matches(tunnel(host), sni) is ok
