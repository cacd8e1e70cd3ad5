"""Finding and redacting credentials in headers and streamed bodies (egress/leakscan.py)."""

from __future__ import annotations

import base64
import itertools
from urllib.parse import quote

import pytest

from egress.credentials.detect import (
    BodyRedactor,
    BodyScanner,
    echo_forms,
    encoded_forms,
    redaction_for,
    text_carries,
)

PH = "sk_live_egress_placeholder_0000000000000000"
KEY = "sk_REAL/key+with=odd\"chars_1234567890"


_URLSAFE = base64.urlsafe_b64encode(f"xx{KEY}".encode()).decode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("texts, carried", [
    pytest.param([f"Bearer {PH}"], True, id="raw in a header"),
    pytest.param(["Basic " + b64(f"user:{PH}")], True, id="base64 in Basic auth (offset 5)"),
    pytest.param(["Basic " + b64(f"u:{PH}")], True, id="base64 at offset 2"),
    pytest.param(["Basic " + b64(f"{PH}")], True, id="base64 at offset 0"),
    pytest.param([_URLSAFE], True, id="url-safe base64 of a value with + and /"),
    pytest.param([b64(f"x:{PH}").rstrip("=")], True, id="base64 without padding"),
    pytest.param([PH.encode().hex()], True, id="hex"),
    pytest.param([PH.encode().hex().upper()], True, id="hex upper case"),
    pytest.param(["/v1/x?k=" + quote(PH, safe="")], True, id="percent-encoded in the target"),
    pytest.param(["/v1/x?k=" + "".join(f"%{b:02x}" for b in PH.encode())], True,
                 id="every byte percent-encoded"),
    pytest.param(["/v1/x?k=" + quote(quote(PH, safe=""), safe="")], True,
                 id="double percent-encoding"),
    pytest.param(["/x?k=sk_live_egress%5Fplaceholder_0000000000000000"], True,
                 id="one character percent-encoded"),
    pytest.param(["sk_live_egress_pla", "ceholder_0000000000000000"], True,
                 id="split across two headers, in order"),
    pytest.param(["a", "sk_live_", "egress_placeholder_", "0000000000000000", "b"], True,
                 id="split across three headers"),
    pytest.param(["ceholder_0000000000000000", "sk_live_egress_pla"], False,
                 id="split in reverse order (not covered, documented)"),
    pytest.param(["sk_live_egress_placeholder_000000000000000"], False, id="one character short"),
    pytest.param(["application/json", "gzip, br", "/v1/invoices"], False, id="ordinary request"),
    pytest.param([base64.b64encode(b"\x00" * 40).decode()], False, id="unrelated base64"),
])
def test_text_carries(texts: list[str], carried: bool) -> None:
    value = KEY if texts[0] == _URLSAFE else PH
    assert text_carries(value, texts) is carried


def test_encoded_forms_cover_every_base64_alignment() -> None:
    forms = encoded_forms(PH)
    for prefix in ("", "a", "ab", "abc", "abcd"):
        encoded = base64.b64encode((prefix + PH + "tail").encode())
        assert any(f in encoded for f in forms), prefix


def chunkings(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos = [], 0
    for size in itertools.cycle(sizes):
        if pos >= len(data):
            return out
        out.append(data[pos:pos + size])
        pos += size
    return out


BODY = b'{"headers": {"authorization": "Bearer ' + KEY.encode() + b'"}, "n": 1}\n'


@pytest.mark.parametrize("sizes", [
    pytest.param([len(BODY)], id="one chunk"),
    pytest.param([1], id="one byte at a time"),
    pytest.param([40], id="split inside the key"),
    pytest.param([37, 2, 3], id="uneven chunks around the key"),
    pytest.param([7, 64], id="small then large"),
])
def test_scanner_never_releases_a_chunk_holding_the_value(sizes: list[int]) -> None:
    scanner = BodyScanner({"key": encoded_forms(KEY)})
    released = b"".join(scanner.feed(c) for c in chunkings(BODY, sizes)) + scanner.finish()
    assert scanner.found == "key"
    assert KEY.encode()[:4] not in released[len(b'{"headers": {"authorization": "Bearer '):]
    assert released == BODY[:len(b'{"headers": {"authorization": "Bearer ')][:len(released)]


@pytest.mark.parametrize("body", [
    pytest.param(b"x" * 100_000, id="large plain body"),
    pytest.param(b"sk_live_egress_pla" * 5 + b"end", id="prefixes that never complete"),
    pytest.param(b"", id="empty"),
])
def test_scanner_passes_clean_bodies_through_whole(body: bytes) -> None:
    scanner = BodyScanner({"ph": encoded_forms(PH)})
    released = b"".join(scanner.feed(c) for c in chunkings(body, [13, 4096])) + scanner.finish()
    assert scanner.found is None and released == body


def test_scanner_holds_back_only_what_could_start_a_needle() -> None:
    scanner = BodyScanner({"ph": encoded_forms(PH)})
    assert scanner.feed(b"data: event 0\n\n") == b"data: event 0\n\n"  # SSE: nothing held
    assert scanner.feed(b"abc sk_live_eg") == b"abc "  # a possible start waits
    assert scanner.feed(b"g!") == b"sk_live_egg!"  # and is released once it is not


@pytest.mark.parametrize("sizes", [[len(BODY)], [1], [40], [37, 2, 3], [5, 1000]])
def test_redactor_replaces_the_value_at_any_split_with_the_same_length(sizes: list[int]) -> None:
    redactor = BodyRedactor(echo_forms(KEY))
    out = b"".join(redactor.feed(c) for c in chunkings(BODY, sizes)) + redactor.finish()
    assert len(out) == len(BODY)
    assert KEY.encode() not in out and out.count(b"[redacted-by-egress]") == 1
    assert redactor.redacted == 1


@pytest.mark.parametrize("form", [
    pytest.param(KEY.encode(), id="raw"),
    pytest.param(KEY.replace('"', '\\"').encode(), id="JSON-escaped quote"),
    pytest.param(KEY.replace('"', '\\"').replace("/", "\\/").encode(), id="JSON-escaped slash"),
    pytest.param(base64.b64encode(b"Bearer " + KEY.encode()), id="base64 of the header"),
    pytest.param(KEY.encode().hex().encode(), id="hex"),
    pytest.param(quote(KEY, safe="").encode(), id="percent-encoded"),
])
def test_redactor_covers_echo_forms(form: bytes) -> None:
    redactor = BodyRedactor(echo_forms(KEY))
    body = b"before " + form + b" after"
    out = redactor.feed(body) + redactor.finish()
    assert len(out) == len(body) and form not in out and redactor.redacted >= 1


def test_redactor_leaves_sse_alone_and_live() -> None:
    redactor = BodyRedactor(echo_forms(KEY))
    for i in range(3):
        event = f"data: event {i}\n\n".encode()
        assert redactor.feed(event) == event


@pytest.mark.parametrize("needle, replacement", [
    (b"abc", b"[re"),
    (b"x" * 25, b"[redacted-by-egress]*****"),
])
def test_redaction_keeps_the_length(needle: bytes, replacement: bytes) -> None:
    assert redaction_for(needle) == replacement


# An HTTP/2 peer can send an empty DATA frame mid-body; mitmproxy hands it to the stream
# callable as b"", exactly like the end of the body. The classes must stay safe either way.

def test_scanner_catches_a_needle_resumed_after_an_empty_chunk() -> None:
    scanner = BodyScanner({"ph": encoded_forms(PH)})
    released = scanner.feed(b"lead " + PH.encode()[:10]) + scanner.finish()  # "end" ... or not
    assert released == b"lead " + PH.encode()[:10] and scanner.found is None
    assert scanner.feed(PH.encode()[10:] + b" more") == b""  # the rest is never released
    assert scanner.found == "ph"


def test_redactor_masks_a_needle_split_by_an_empty_chunk() -> None:
    redactor = BodyRedactor(echo_forms(KEY))
    first = redactor.feed(b"x " + KEY.encode()[:12]) + redactor.finish()
    rest = redactor.feed(KEY.encode()[12:] + b" y") + redactor.finish()
    out = first + rest
    assert len(out) == len(KEY) + 4
    assert out == b"x " + redaction_for(KEY.encode()) + b" y"


def test_redactor_releases_a_short_tail_at_the_end_unmasked() -> None:
    redactor = BodyRedactor(echo_forms(KEY))
    body = b"ends with " + KEY.encode()[:3]
    assert redactor.feed(body) + redactor.finish() == body
