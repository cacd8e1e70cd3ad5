"""Property: however a ClientHello (and the request after it) is cut into writes and TLS
records, with pauses between the pieces, egress either refuses with an audit line or the
upstream sees exactly the judged SNI, host and method.

hypothesis draws the cuts (biased to the first bytes, where mitmproxy used to guess "raw TCP"),
the pauses and the case: passthrough or intercepted host, SNI matching the CONNECT host or
naming another one, and an allowed (GET) or refused (DELETE) method inside intercepted TLS.
Bounded: 60 examples (about 10 s), pauses of at most 0.12 s, no shrinking.
"""

from __future__ import annotations

import time
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.adversarial.conftest import AdvWorld
from tests.adversarial.wire import BioTLS, open_tunnel, recv_until_closed, send_split, wait_for

CASES = {
    # name: (CONNECT host, SNI sent, intercepted)
    "passthrough": ("pass.adv.test", "pass.adv.test", False),
    "passthrough, other SNI": ("pass.adv.test", "other.adv.test", False),
    "intercepted": ("api.adv.test", "api.adv.test", True),
    "intercepted, other SNI": ("api.adv.test", "admin.adv.test", True),
}

cuts = st.lists(st.one_of(st.integers(1, 12), st.integers(1, 4000)), max_size=4)
pauses = st.sampled_from([0.0, 0.02, 0.12])


def new_audit(adv: AdvWorld, start: int) -> list[dict[str, Any]]:
    return adv.proxy.audit()[start:]


# No shrinking: a failing example is readable as drawn, and shrinking one that waits for a
# close could run for minutes (measured: 5 min) on a CI budget.
@settings(max_examples=60, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=st.sampled_from(sorted(CASES)), hello_cuts=cuts, request_cuts=cuts, pause=pauses,
       method=st.sampled_from(["GET", "DELETE"]))
def test_fragmented_clienthello_is_refused_or_judged_exactly(
        adv: AdvWorld, case: str, hello_cuts: list[int], request_cuts: list[int], pause: float,
        method: str) -> None:
    host, sni, intercepted = CASES[case]
    adv.reset()
    start = len(adv.proxy.audit())
    raw = open_tunnel(adv.proxy_addr, "mallory", adv.proxy.tokens["mallory"], host,
                      adv.tls.port)
    try:
        client = BioTLS(raw, sni, cafile=adv.bundle if intercepted else adv.ca.path)
        send_split(raw, client.client_hello(), hello_cuts, pause)
        if sni != host:
            # Must be refused: closed with nothing relayed, one host_mismatch line.
            assert recv_until_closed(raw, timeout=3) == b""
            assert wait_for(lambda: any(r["reason"] == "host_mismatch"
                                        for r in new_audit(adv, start)))
            assert adv.tls.accepted == 0
            return
        client.handshake()
        path = "/v1/invoices" if intercepted else "/anything"
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{adv.tls.port}\r\n\r\n".encode()
        bounds = sorted({0, *[c for c in request_cuts if 0 < c < len(head)], len(head)})
        client.send_records([head[a:b] for a, b in zip(bounds, bounds[1:])], pause=pause)
        answer = client.read(timeout=3, until=b"\r\n\r\n")
    finally:
        raw.close()
    refused = intercepted and method == "DELETE"
    if refused:
        assert answer.startswith(b"HTTP/1.1 403")
        assert wait_for(lambda: any(r["reason"] == "method_not_allowed"
                                    for r in new_audit(adv, start)))
        assert method.encode() not in adv.tls.received()
    else:
        assert answer.startswith(b"HTTP/1.1 200")
        assert wait_for(lambda: adv.tls.request_lines() == [f"{method} {path} HTTP/1.1"])
    # Whatever reached the upstream named the judged host, and only it.
    assert set(adv.tls.snis()) <= {host}
    if adv.tls.accepted:
        assert adv.tls.snis() == [host] * adv.tls.accepted
    time.sleep(0.01)
