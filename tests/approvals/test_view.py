"""What a person sees before approving: secrets masked, every type readable, nothing able
to deceive (egress/ops/approval_view.py). Tables of behaviour."""

from __future__ import annotations

import base64
import json

import pytest

from egress.ops.approval_view import (
    MASK,
    looks_secret,
    mask_headers,
    mask_query,
    preview_body,
    request_view,
    secret_name,
    visible,
)

# Placeholders need not look like keys: the skill's own are masked by value, in any encoding.
NEEDLE = "PLACEHOLDER-for-the-stripe-key"


@pytest.mark.parametrize("name, secret", [
    ("api_key", True), ("apiKey", True), ("X-Api-Key", True), ("client_secret", True),
    ("clientSecret", True), ("password", True), ("X-Auth-Token", True), ("access_token", True),
    ("signature", True), ("sig", True), ("cvc", True), ("session_id", True), ("key", True),
    ("author", False), ("passenger", False), ("amount", False), ("customer", False),
    ("description", False), ("monkey", False), ("keyboard", False), ("currency", False),
])
def test_names_that_hold_secrets(name: str, secret: bool) -> None:
    assert secret_name(name) is secret


@pytest.mark.parametrize("value, secret", [
    pytest.param("sk_live_51H8abc", True, id="stripe key prefix"),
    pytest.param("ghp_abcdefghijklmnop", True, id="github token prefix"),
    pytest.param("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", True, id="JWT"),
    pytest.param("a8F3kd92JdkQ0xPz7vB2mN4c", True, id="long random token"),
    pytest.param(f"Bearer {NEEDLE}", True, id="contains a needle"),
    pytest.param("cus_123", False, id="an id"),
    pytest.param("hello world, this is a sentence", False, id="prose"),
    pytest.param("abcdefghijklmnopqrstuvwxyzabcdef", False, id="letters only"),
    pytest.param("2025-01-31T12:00:00Z", False, id="a time"),
])
def test_values_that_look_secret(value: str, secret: bool) -> None:
    assert looks_secret(value, [NEEDLE]) is secret


@pytest.mark.parametrize("query, shown", [
    ("", ""),
    ("customer=cus_1&limit=10", "customer=cus_1&limit=10"),
    ("api_key=abc&customer=cus_1", f"api_key={MASK}&customer=cus_1"),
    (f"q={NEEDLE}", f"q={MASK}"),
    (f"q=Bearer%20{NEEDLE}", f"q={MASK}"),  # judged decoded
    ("access%5Ftoken=abc", f"access%5Ftoken={MASK}"),  # name decoded too, spelling kept
    ("flag&token", "flag&token"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", MASK),  # a bare secret-looking value
    ("note=%E2%80%AEevil", "note=%E2%80%AEevil"),  # kept as sent (escaped: harmless)
    ("a=\u202eb", "a=\\u202eb"),  # a raw bidi override is made visible
])
def test_query_masking(query: str, shown: str) -> None:
    assert mask_query(query, [NEEDLE]) == shown


def test_header_masking() -> None:
    shown = dict(mask_headers([
        ("Authorization", "Bearer x"), ("Cookie", "a=b"), ("X-Api-Key", "123"),
        ("X-Custom", f"prefix {NEEDLE}"), ("Idempotency-Key", "abc-1"),
        ("Content-Type", "application/json"), ("X-Note", "a\u200bb"),
    ], [NEEDLE]))
    assert shown["Authorization"] == shown["Cookie"] == shown["X-Api-Key"] == MASK
    assert shown["X-Custom"] == MASK and shown["Idempotency-Key"] == MASK
    assert shown["Content-Type"] == "application/json" and shown["X-Note"] == "a\\u200bb"


def test_json_bodies_are_pretty_and_masked_by_name_and_value() -> None:
    body = json.dumps({"amount": 100, "card": {"number": "4242", "cvc": "123"},
                       "list": [{"token": "t"}, "plain", NEEDLE], "empty_secret": "",
                       "b64": base64.b64encode(NEEDLE.encode()).decode()}).encode()
    kind, text = preview_body(body, "application/json; charset=utf-8", [NEEDLE])
    assert kind == "json"
    shown = json.loads(text)
    assert shown["amount"] == 100 and shown["card"] == {"number": "4242", "cvc": MASK}
    assert shown["list"][0] == {"token": MASK} and shown["list"][1] == "plain"
    assert shown["list"][2].startswith("[redacted") and shown["empty_secret"] == ""
    assert NEEDLE not in text and base64.b64encode(NEEDLE.encode()).decode() not in text
    assert text.startswith('{\n  "amount": 100,')


def test_form_bodies_show_one_field_per_line() -> None:
    kind, text = preview_body(b"amount=100&currency=usd&card%5Bcvc%5D=123&memo=a+b",
                              "application/x-www-form-urlencoded", [])
    assert kind == "form"
    assert text.split("\n") == ["amount = 100", "currency = usd", f"card[cvc] = {MASK}",
                                "memo = a b"]


@pytest.mark.parametrize("body, ctype, kind", [
    (b"", "application/json", "none"),
    (b"hello <b>world</b>", "text/plain", "text"),
    (b'{"not json', "application/json", "text"),
    (b'{"a": 1}', "", "json"),  # sniffed
    (b"[" * 100_000 + b"]" * 100_000, "application/json", "text"),  # too deep: shown as text
    (bytes(range(256)) + b"\xff" * 44, "application/octet-stream", "binary"),
])
def test_every_body_gets_a_preview(body: bytes, ctype: str, kind: str) -> None:
    got, text = preview_body(body, ctype, [])
    assert got == kind
    if kind == "binary":
        assert text.startswith("binary body, 300 bytes: 00 01 02") and "(44 more bytes)" in text


def test_nothing_shown_can_hide_or_reorder_text() -> None:
    tricky = "pay \u202e001\u202c to \u200bmallory\x1b[31m\u0085 \\u202e"
    assert visible(tricky) == ("pay \\u202e001\\u202c to \\u200bmallory\\u001b[31m\\u0085 "
                               "\\\\u202e")
    _, text = preview_body(tricky.encode(), "text/plain", [])
    assert "\u202e" not in text and "\x1b" not in text and "\\\\u202e" in text
    _, as_json = preview_body(json.dumps({"memo": tricky}, ensure_ascii=False).encode(),
                              "application/json", [])
    assert "\u202e" not in as_json and "\u200b" not in as_json


def test_request_view_is_built_from_what_the_skill_sent() -> None:
    view = request_view(path="/v1/refunds", query=f"token={NEEDLE}",
                        headers=[("Content-Type", "application/json"),
                                 ("Authorization", f"Bearer {NEEDLE}")],
                        body=b'{"amount": 1}', needles=[NEEDLE])
    assert view.query == f"token={MASK}" and view.content_type == "application/json"
    assert dict(view.headers)["Authorization"] == MASK
    assert view.body_size == 13 and view.summary(5) == ("{\n  \"", True)
