"""THE detector: finding a credential where it must not be, in headers, bodies and messages.

Pure functions and two small streaming state machines, no I/O:

* `encoded_forms(value)`: the byte strings a value shows up as when a client encodes it: as is,
  base64 (standard and URL-safe alphabet, at any of the three alignments, padded or not),
  hex (lower and upper case) and percent-encoded (reserved characters only, or every byte).
* `text_carries(value, texts)`: whether header values and a request target carry the value in
  any of those forms, after percent-decoding them (twice), including split across headers
  (`X-A: sk_live_pla` + `X-B: ceholder...`: the values are also searched joined, in order).
* `content_carries(value, content)`: whether a whole message (a WebSocket message, text or
  binary) holds the value in one of those forms.
* `BodyScanner`: feeds a request body through chunk by chunk and says which credential it
  carries, holding back only the bytes that could be the start of one (see `_held`), so the
  chunk holding it is never released.
* `BodyRedactor`: replaces a secret in a response body while it streams, with a replacement
  of the same length (Content-Length and HTTP/2 framing stay right), holding back only a
  suffix that could begin the secret.

Holding back only a possible prefix (not a fixed window) keeps streams live: an SSE event
ends in "\\n\\n", which no secret starts with, so it is released at once.

Not covered (a tripwire for careless leaks, not a guarantee against a determined skill: a
placeholder is not the key, and the real key never reaches the skill): other encodings
(gzip'd bodies, JSON \\u escapes, base32, reversed or interleaved text), a value split across
headers in another order, or across requests.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote

__all__ = ["BodyRedactor", "BodyScanner", "content_carries", "echo_forms", "encoded_forms",
           "redaction_for", "text_carries"]

_MIN_CORE = 8  # shortest base64 core searched for: below that, false matches get likely


def _b64_cores(raw: bytes) -> list[bytes]:
    """The base64 text `raw` becomes wherever it starts: for each of the three alignments,
    the encoding of the whole 3-byte groups of `raw` that alignment leaves intact."""
    out: list[bytes] = []
    for skip in (0, 1, 2):
        part = raw[skip:]
        part = part[: len(part) - len(part) % 3]
        if len(part) * 4 // 3 >= _MIN_CORE:
            core = base64.b64encode(part)
            out += [core, core.replace(b"+", b"-").replace(b"/", b"_")]
    return out


def encoded_forms(value: str) -> tuple[bytes, ...]:
    """Byte strings that `value` appears as, raw or encoded (duplicates removed, longest first)."""
    raw = value.encode("utf-8")
    forms = [raw, *_b64_cores(raw), binascii.hexlify(raw), binascii.hexlify(raw).upper(),
             quote(raw, safe="").encode(), "".join(f"%{b:02X}" for b in raw).encode(),
             "".join(f"%{b:02x}" for b in raw).encode()]
    return tuple(sorted(set(f for f in forms if f), key=lambda f: (-len(f), f)))


def echo_forms(value: str) -> tuple[bytes, ...]:
    """What an upstream that echoes a request may write the value as: `encoded_forms` plus
    the JSON string escapes of it (`\\/`, `\\"`, `\\uXXXX`) where those differ."""
    forms = set(encoded_forms(value))
    for escaped in (json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
                    json.dumps(value)[1:-1].replace("/", "\\/")):
        forms.add(escaped.encode("utf-8"))
    return tuple(sorted(forms, key=lambda f: (-len(f), f)))


def _decoded(text: str) -> list[str]:
    once = unquote(text)
    return list(dict.fromkeys((text, once, unquote(once))))


def text_carries(value: str, texts: Iterable[str]) -> bool:
    """True when `value` is in any of `texts` (header values, the request target) or in all of
    them joined in order, raw, percent-decoded or in one of its encoded forms."""
    if not value:
        return False
    items = list(texts)
    forms = [f.decode("utf-8", "replace") for f in encoded_forms(value)]
    haystacks = [d for t in [*items, "".join(items)] for d in _decoded(t)]
    return any(form in hay for hay in haystacks for form in forms)


def content_carries(value: str, content: bytes) -> bool:
    """True when a whole message or body (`content`) holds `value` in one of its encoded forms
    (a WebSocket message: its UTF-8 text or its binary payload)."""
    return bool(value) and any(form in content for form in encoded_forms(value))


def _held(buf: bytes, needles: Iterable[bytes]) -> int:
    """Length of the longest suffix of `buf` that is a proper prefix of some needle: the bytes
    that must wait for the next chunk before anyone can say they are not a needle."""
    best = 0
    for needle in needles:
        first = needle[:1]
        start = max(len(buf) - len(needle) + 1, 0)
        end = len(buf) - best  # only suffixes longer than the best so far can help
        pos = buf.find(first, start, end)
        while pos != -1:
            if needle.startswith(buf[pos:]):
                best = len(buf) - pos
                break  # the earliest start is the longest suffix for this needle
            pos = buf.find(first, pos + 1, end)
    return best


class _Window:
    """What both streaming classes keep: bytes held back (`_pending`, original) and the tail
    of what was already released (`_tail`, original, at most the longest needle minus one).

    mitmproxy marks the end of a body with an empty chunk, but an HTTP/2 peer can also send an
    empty DATA frame mid-body, which arrives the same way. So `finish` releases what was held
    (it may be the end), and the tail keeps a needle that resumes afterwards findable.
    """

    def __init__(self, needles: Iterable[bytes]) -> None:
        self._needles = sorted({n for n in needles if n}, key=len, reverse=True)
        self._keep_tail = max((len(n) for n in self._needles), default=1) - 1
        self._pending = b""
        self._tail = b""

    def _release(self, original: bytes) -> None:
        if self._keep_tail:
            self._tail = (self._tail + original)[-self._keep_tail:]


class BodyScanner(_Window):
    """Which credential a streamed body carries, without ever releasing the chunk that holds it.

    `needles` maps a credential name to the byte strings it may appear as. `feed` returns the
    bytes that are safe to forward now; once a needle was seen, `found` names its credential and
    nothing more is released (the caller aborts the stream: after an empty mid-body chunk, the
    bytes before it were released, so what the peer got is at most a needle's proper prefix).
    """

    def __init__(self, needles: Mapping[str, Iterable[bytes]]) -> None:
        named = [(name, n) for name, ns in needles.items() for n in ns if n]
        super().__init__(n for _, n in named)
        self._named = named
        self.found: str | None = None

    def feed(self, chunk: bytes) -> bytes:
        if self.found is not None:
            return b""
        buf = self._pending + chunk
        window = self._tail + buf
        for name, needle in self._named:
            if needle in window:
                self.found, self._pending = name, b""
                return b""
        keep = _held(buf, self._needles)
        out, self._pending = buf[: len(buf) - keep], buf[len(buf) - keep:]
        self._release(out)
        return out

    def finish(self) -> bytes:
        """The end of the body (or an empty chunk): release what was held back."""
        if self.found is not None:
            return b""
        out, self._pending = self._pending, b""
        self._release(out)
        return out


def redaction_for(needle: bytes) -> bytes:
    """The same-length replacement for `needle`: "[redacted-by-egress]" cut or padded with '*'."""
    marker = b"[redacted-by-egress]"
    return (marker + b"*" * len(needle))[: len(needle)]


_MASK_AT_END = 4  # a held-back tail this long is masked when released by an empty chunk


class BodyRedactor(_Window):
    """Replaces every needle in a streamed body with a same-length marker."""

    def __init__(self, needles: Iterable[bytes]) -> None:
        super().__init__(needles)
        self.redacted = 0  # occurrences replaced so far

    def _mask(self, window: bytes, start: int) -> bytes:
        """window[start:] with every needle occurrence that reaches into it masked."""
        out = bytearray(window[start:])
        for needle in self._needles:
            marker = redaction_for(needle)
            pos = window.find(needle)
            while pos != -1:
                end = pos + len(needle)
                if end > start:
                    lo = max(pos, start)
                    out[lo - start:end - start] = marker[lo - pos:]
                    self.redacted += 1
                pos = window.find(needle, end)
        return bytes(out)

    def feed(self, chunk: bytes) -> bytes:
        buf = self._pending + chunk
        masked = self._mask(self._tail + buf, len(self._tail))
        keep = _held(buf, self._needles)
        self._pending = buf[len(buf) - keep:]
        self._release(buf[: len(buf) - keep])
        return masked[: len(masked) - keep]

    def finish(self) -> bytes:
        """The end of the body (or an empty chunk): release what was held back. A held tail of
        4 bytes or more (a needle's start) is masked: if more of the body follows after all,
        the tail still finds and masks the rest of the needle, so at most 3 bytes of it pass."""
        held, self._pending = self._pending, b""
        self._release(held)
        if len(held) < _MASK_AT_END:
            return held
        needle = next(n for n in self._needles if n.startswith(held))
        self.redacted += 1
        return redaction_for(needle)[: len(held)]
