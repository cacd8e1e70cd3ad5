"""An intercepted host is never relayed by the fast path: its tunnel goes to mitmproxy whole.

On the fast path the front admits the CONNECT and hands the connection to mitmproxy
(egress/proxy/engine.py); a bug there would relay the skill's bytes to the upstream unjudged,
skipping methods, paths and credential rules. The attacks: a ClientHello split at its first
byte (a relay would start as soon as it could), a client that trusts only the upstream's own
CA (it would succeed only if the TLS session went end to end), raw bytes that are neither TLS
nor HTTP. Each asserts on what the upstream received and on the audit log. Runs on both paths
(tests/proxy.py).
"""

from __future__ import annotations

import ssl

import pytest

from tests.adversarial.conftest import AdvWorld
from tests.adversarial.wire import BioTLS, open_tunnel, recv_until_closed, send_split, wait_for


def tunnel(adv: AdvWorld, host: str = "api.adv.test"):  # type: ignore[no-untyped-def]
    return open_tunnel(adv.proxy_addr, "mallory", adv.proxy.tokens["mallory"], host,
                       adv.tls.port)


def audit_since(adv: AdvWorld, start: int) -> list[dict[str, object]]:
    return adv.proxy.audit()[start:]


def test_a_split_clienthello_is_terminated_by_egress_and_its_requests_judged(
        adv: AdvWorld) -> None:
    adv.reset()
    start = len(adv.proxy.audit())
    sock = tunnel(adv)
    tls = BioTLS(sock, "api.adv.test", cafile=adv.bundle)
    send_split(sock, tls.client_hello(), [1, 5], pause=0.3)
    tls.handshake()
    cert = tls.obj.getpeercert()
    assert cert is not None
    issuer = dict(x[0] for x in cert["issuer"])
    assert issuer.get("organizationName") == "mitmproxy"  # egress's CA, not the upstream's
    tls.send_records([b"DELETE /v1/invoices HTTP/1.1\r\nHost: api.adv.test\r\n\r\n"])
    answer = tls.read(until=b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 403"), answer[:100]
    sock.close()
    assert wait_for(lambda: any(r["reason"] == "method_not_allowed"
                                for r in audit_since(adv, start)))
    refused = [r for r in audit_since(adv, start) if r["decision"] == "deny"]
    assert [r["reason"] for r in refused] == ["method_not_allowed"]  # once
    # The upstream never saw it. (mitmproxy may have opened its own TLS session to the
    # upstream during the handshake, to learn its certificate: no request went over it.)
    assert adv.tls.received() == b""


def test_a_client_trusting_only_the_upstream_ca_cannot_get_an_end_to_end_session(
        adv: AdvWorld) -> None:
    # A relay would hand the client the upstream's own certificate; egress presents its own.
    adv.reset()
    sock = tunnel(adv)
    ctx = ssl.create_default_context(cafile=adv.ca.path)
    with pytest.raises(ssl.SSLCertVerificationError):
        ctx.wrap_socket(sock, server_hostname="api.adv.test")
    sock.close()
    assert adv.tls.received() == b""


def test_raw_bytes_to_an_intercepted_host_are_refused_not_relayed(adv: AdvWorld) -> None:
    adv.reset()
    start = len(adv.proxy.audit())
    sock = tunnel(adv)
    sock.sendall(b"\x00\x01SSH-2.0-OpenSSH_9.6\r\n")
    assert recv_until_closed(sock, timeout=10) == b""
    sock.close()
    assert wait_for(lambda: any(r["reason"] == "protocol_not_allowed"
                                for r in audit_since(adv, start)))
    assert adv.tls.received() == b""
