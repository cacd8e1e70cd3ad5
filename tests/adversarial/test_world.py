"""The adversarial world itself: allowed traffic arrives as sent, so a refusal elsewhere in this
suite means egress refused, not that the world is broken."""

from __future__ import annotations

import socket
import ssl
import time

from tests.adversarial.conftest import REAL_KEY, AdvWorld
from tests.clients import basic, read_response


def open_tunnel(adv: AdvWorld, host: str, port: int) -> socket.socket:
    raw = socket.create_connection(adv.proxy_addr, timeout=10)
    raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\nProxy-Authorization: "
                f"{basic('mallory', adv.proxy.tokens['mallory'])}\r\n\r\n".encode())
    assert read_response(raw, head_only=True).status == 200
    return raw


def wait_for(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_intercepted_get_arrives_with_the_key(adv: AdvWorld) -> None:
    adv.reset()
    raw = open_tunnel(adv, "api.adv.test", adv.tls.port)
    ctx = ssl.create_default_context(cafile=adv.bundle)
    with ctx.wrap_socket(raw, server_hostname="api.adv.test") as s:
        s.sendall(b"GET /v1/invoices HTTP/1.1\r\nHost: api.adv.test:%d\r\n\r\n" % adv.tls.port)
        assert read_response(s).status == 200
    assert wait_for(lambda: b"GET /v1/invoices HTTP/1.1" in adv.tls.received())
    assert f"Bearer {REAL_KEY}".encode() in adv.tls.received()


def test_passthrough_keeps_the_sni(adv: AdvWorld) -> None:
    adv.reset()
    raw = open_tunnel(adv, "pass.adv.test", adv.tls.port)
    ctx = ssl.create_default_context(cafile=adv.ca.path)  # the upstream's own certificate
    with ctx.wrap_socket(raw, server_hostname="pass.adv.test") as s:
        s.sendall(b"DELETE /anything HTTP/1.1\r\nHost: pass.adv.test\r\n\r\n")
        assert read_response(s).status == 200
    assert wait_for(lambda: adv.tls.snis() == ["pass.adv.test"])
    assert adv.tls.request_lines() == ["DELETE /anything HTTP/1.1"]
