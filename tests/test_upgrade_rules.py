"""Which protocol switches a request may ask for, and which 101 answers may be relayed."""

from __future__ import annotations

import pytest

from egress.proxy.upgrades import request_refusal, switch_refusal
from egress.reasons import Problem, Reason

WS = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
      ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]


@pytest.mark.parametrize("method, headers, http2, reason", [
    pytest.param("GET", [("Host", "a")], False, None, id="no upgrade"),
    pytest.param("GET", WS, False, None, id="websocket handshake"),
    pytest.param("GET", [("upgrade", "WebSocket"), ("sec-websocket-version", "13")], False, None,
                 id="header names and token in any case"),
    pytest.param("GET", [("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA")],
                 False, Reason.UPGRADE_NOT_ALLOWED, id="h2c"),
    pytest.param("GET", [("Upgrade", "TLS/1.0")], False, Reason.UPGRADE_NOT_ALLOWED,
                 id="TLS upgrade"),
    pytest.param("GET", [("Upgrade", "websocket, h2c"), ("Sec-WebSocket-Version", "13")], False,
                 Reason.UPGRADE_NOT_ALLOWED, id="a list with websocket in it"),
    pytest.param("GET", [*WS, ("Upgrade", "h2c")], False, Reason.UPGRADE_NOT_ALLOWED,
                 id="two Upgrade headers"),
    pytest.param("POST", WS, False, Reason.UPGRADE_NOT_ALLOWED, id="websocket with POST"),
    pytest.param("GET", [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "8")], False,
                 Reason.UPGRADE_NOT_ALLOWED, id="old websocket version"),
    pytest.param("GET", [("Upgrade", "websocket")], False, Reason.UPGRADE_NOT_ALLOWED,
                 id="websocket without a version"),
    pytest.param("GET", WS, True, Reason.UPGRADE_NOT_ALLOWED, id="Upgrade on HTTP/2"),
    pytest.param("CONNECT", [], False, Reason.NESTED_CONNECT, id="CONNECT"),
    pytest.param("CONNECT-UDP", [], False, Reason.NESTED_CONNECT, id="CONNECT-UDP"),
    pytest.param("connect", [], True, Reason.NESTED_CONNECT, id="lowercase connect"),
])
def test_request_refusal(method: str, headers: list[tuple[str, str]], http2: bool,
                         reason: Reason | None) -> None:
    refused = request_refusal(method, headers, http2=http2)
    assert (refused.reason if refused else None) == reason


def test_websocket_refused_when_mitmproxy_has_it_off() -> None:
    # mitmproxy relays a 101 raw when its websocket option is off and rawtcp on.
    assert request_refusal("GET", WS, http2=False, websocket_enabled=False) == Problem(
        Reason.UPGRADE_NOT_ALLOWED, "WebSocket is disabled (mitmproxy option websocket)")


@pytest.mark.parametrize("status, request_headers, response_headers, allowed", [
    pytest.param(200, [], [], True, id="not a 101"),
    pytest.param(101, WS, [("Upgrade", "websocket")], True, id="the websocket handshake"),
    pytest.param(101, [], [("Upgrade", "h2c")], False, id="101 nobody asked for"),
    pytest.param(101, WS, [("Upgrade", "h2c")], False, id="asked websocket, got h2c"),
    pytest.param(101, WS, [], False, id="101 without Upgrade"),
    pytest.param(101, [("Upgrade", "h2c")], [("Upgrade", "h2c")], False,
                 id="h2c both ways (refused on the request already)"),
])
def test_switch_refusal(status: int, request_headers: list[tuple[str, str]],
                        response_headers: list[tuple[str, str]], allowed: bool) -> None:
    why = switch_refusal(status, "GET", request_headers, response_headers, http2=False)
    assert (why is None) is allowed
