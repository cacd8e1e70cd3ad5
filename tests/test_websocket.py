"""WebSocket messages without a proxy: the key search (the one detector, egress/credentials),
and that the wrappers of egress/proxy/websocket.py and connclose.py still fit the installed
mitmproxy (end to end: tests/adversarial/test_websocket_abuse.py)."""

from __future__ import annotations

import pytest

from egress.credentials.broker import CredentialBroker
from egress.policy.decide import Destination
from egress.policy.load import load_policy_texts
from egress.proxy import connclose, websocket
from egress.secrets import Secret

POLICY = """
skills:
  s:
    allow:
      - host: api.example.org
        credential: a
    credentials:
      a: {secret: "env:A", placeholder: "ph_aaaaaaaaaaaaaaaa"}
      b: {secret: "env:B"}
"""


@pytest.mark.parametrize("content, known, found", [
    pytest.param(b"hello", {}, set(), id="nothing"),
    pytest.param(b'{"k": "ph_aaaaaaaaaaaaaaaa"}', {}, {"a"}, id="placeholder in text"),
    pytest.param(b"\x00\xffph_aaaaaaaaaaaaaaaa\x00", {}, {"a"}, id="placeholder in binary"),
    pytest.param(b"ph_aaaaaaaa", {}, set(), id="half a placeholder"),
    pytest.param(b"key=real-b-value", {"b": "real-b-value"}, {"b"},
                 id="a fetched real value without a placeholder"),
    pytest.param("caf\u00e9-real".encode(), {"b": "caf\u00e9-real"}, {"b"},
                 id="non-ASCII real value, UTF-8 in the message"),
    pytest.param(b"real-b-value", {}, set(), id="a value never fetched is not known"),
    pytest.param(b'{"k": "cGhfYWFhYWFhYWFhYWFhYWFhYQ=="}', {}, {"a"},
                 id="placeholder base64-encoded (the detector headers and bodies use)"),
    pytest.param(b"id=%70%68%5F%61%61%61%61%61%61%61%61%61%61%61%61%61%61%61%61", {}, {"a"},
                 id="placeholder percent-encoded"),
])
def test_stray_credentials_in_a_message(content: bytes, known: dict[str, str],
                                        found: set[str]) -> None:
    # Outside verified TLS every credential is stray: this is the detector's table.
    skill = load_policy_texts([("p.yaml", POLICY)]).skills["s"]
    broker = CredentialBroker()
    broker._known["s"] = {k: (Secret(v),) for k, v in known.items()}
    dest = Destination("api.example.org", 443, "GET", "/")
    assert set(broker.stray_in_message(skill, content, dest, verified_tls=False)) == found


def test_a_key_bound_to_the_message_host_is_not_stray() -> None:
    skill = load_policy_texts([("p.yaml", POLICY)]).skills["s"]
    broker = CredentialBroker()
    content = b"ph_aaaaaaaaaaaaaaaa"
    bound = Destination("api.example.org", 443, "GET", "/")
    other = Destination("other.example.org", 443, "GET", "/")
    assert broker.stray_in_message(skill, content, bound, verified_tls=True) == []
    assert broker.stray_in_message(skill, content, other, verified_tls=True) == ["a"]


def test_websocket_wrapper_fits_the_installed_mitmproxy() -> None:
    from mitmproxy.proxy.layers import websocket as ws_layer

    websocket.install()
    wrapped = ws_layer.WebsocketLayer.relay_messages
    assert getattr(wrapped, "_egress_wrapped", False)
    websocket.install()  # idempotent: never wraps twice
    assert ws_layer.WebsocketLayer.relay_messages is wrapped


def test_connclose_wrapper_fits_the_installed_mitmproxy() -> None:
    from mitmproxy.proxy import server

    connclose.install()
    wrapped = server.ConnectionHandler.handle_connection
    assert getattr(wrapped, "_egress_wrapped", False)
    connclose.install()
    assert server.ConnectionHandler.handle_connection is wrapped
