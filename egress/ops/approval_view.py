"""What a person sees before approving a request: masked, readable, unable to deceive.

Pure functions, no I/O. `request_view` turns a held request into a `RequestView`:

* the query string with secret-looking values masked (`api_key=[masked]`): by parameter
  name (key, token, secret, password, signature, ...), by value (a credential's placeholder
  or real value, a JWT, a long random-looking token);
* the headers, with credential-carrying ones masked (Authorization, Cookie, X-Api-Key, ...);
* a body preview: JSON pretty-printed with secret-named fields masked, form bodies
  (`a=1&b=2`, what Stripe's API takes) one field per line the same way, other text as is,
  binary as a size and the first bytes in hex. Every form of a credential's placeholder or
  real value (raw, base64, hex, percent- and JSON-escaped) is masked first, whatever the type.

Everything shown is made visible: control characters, bidi overrides and invisible Unicode
(which could make "100" read as "001" or hide text) are written as `\\uXXXX`. The console
renders it as text, never as HTML (egress/ops/console/console.js).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from egress.credentials.detect import BodyRedactor, echo_forms

__all__ = ["MASK", "PREVIEW_LIMIT", "RequestView", "looks_secret", "mask_headers",
           "mask_query", "preview_body", "request_view", "secret_name", "visible"]

MASK = "[masked]"
PREVIEW_LIMIT = 4096  # characters of body shown in lists; `show` has the whole preview
_HEX_SHOWN = 256  # bytes of a binary body shown in hex

# Words that make a name (a query, form or JSON field, a header) hold a secret. Names are cut
# into words ("clientSecret", "api-key", "X_Auth_Token"), so "author" or "passenger" are not.
_SECRET_WORDS = frozenset({
    "password", "passwd", "passphrase", "pass", "pwd", "secret", "secrets", "token", "tokens",
    "apikey", "auth", "authorization", "credential", "credentials", "cookie", "session",
    "signature", "sig", "key", "privatekey", "accesskey", "cvc", "cvv", "pin", "otp", "jwt"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+")
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie",
                             "x-api-key", "api-key", "x-auth-token", "x-amz-security-token"})
_JWT = re.compile(r"^eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*$")
_KEY_PREFIX = re.compile(r"^(sk|rk|pk)_(live|test)_|^(ghp|gho|ghs|ghu|github_pat)_|^xox[abpr]-|"
                         r"^AKIA[0-9A-Z]{12}|^AIza|^glpat-|^sk-")
_TOKENISH = re.compile(r"^[A-Za-z0-9+/=_.~-]{24,}$")
# Characters that would let text deceive a reader: C0/C1 controls (but tab and newline), DEL,
# bidi controls, zero-width and other invisible format characters.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Zl", "Zp"})


@dataclass(frozen=True)
class RequestView:
    """A held request as a person sees it (every string already made visible)."""

    path: str
    query: str  # masked
    headers: tuple[tuple[str, str], ...]  # masked
    content_type: str
    body_kind: str  # "none" | "json" | "form" | "text" | "binary"
    body: str  # the whole preview (masked)
    body_size: int  # bytes

    def summary(self, limit: int = PREVIEW_LIMIT) -> tuple[str, bool]:
        """The preview cut to `limit` characters, and whether it was cut."""
        if len(self.body) <= limit:
            return self.body, False
        return self.body[:limit], True


def visible(text: str, *, keep_newlines: bool = False, escape_backslash: bool = True) -> str:
    """`text` with every control, bidi and invisible character written as \\uXXXX (and a
    backslash doubled, so the escapes cannot be forged; JSON text has its own escaping)."""
    out: list[str] = []
    for ch in text:
        if ch == "\\" and escape_backslash:
            out.append("\\\\")
        elif keep_newlines and ch in "\n\t":
            out.append(ch)
        elif unicodedata.category(ch) in _INVISIBLE_CATEGORIES:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return "".join(out)


def looks_secret(value: str, needles: Sequence[str] = ()) -> bool:
    """Whether a value looks like a credential: one of `needles` (placeholders, real keys) or
    contains one, a JWT, a well-known key prefix, or a long token of mixed letters and digits."""
    if any(n and n in value for n in needles):
        return True
    v = value.strip()
    if _JWT.match(v) or _KEY_PREFIX.match(v):
        return True
    if _TOKENISH.match(v):
        has_digit = any(c.isdigit() for c in v)
        has_alpha = any(c.isalpha() for c in v)
        return has_digit and has_alpha
    return False


def mask_query(query: str, needles: Sequence[str] = ()) -> str:
    """`a=1&api_key=xyz` -> `a=1&api_key=[masked]`: the raw spelling kept, values masked by
    name or by value (decoded before judging)."""
    if not query:
        return ""
    parts: list[str] = []
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        if not eq:  # a bare word: a flag, or a secret passed on its own
            parts.append(MASK if looks_secret(unquote_plus(name), needles) else pair)
        elif _secret_field(unquote_plus(name), unquote_plus(value), needles):
            parts.append(f"{name}={MASK}")
        else:
            parts.append(pair)
    return visible("&".join(parts))


def mask_headers(headers: Iterable[tuple[str, str]], needles: Sequence[str] = ()
                 ) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for name, value in headers:
        low = name.lower()
        if low in _SECRET_HEADERS or secret_name(name) or looks_secret(value, needles):
            value = MASK
        out.append((visible(name), visible(value)))
    return tuple(out)


def preview_body(body: bytes, content_type: str, needles: Sequence[str] = ()) -> tuple[str, str]:
    """(kind, preview) of a body: every form of each needle masked, then by type."""
    if not body:
        return "none", ""
    redactor = BodyRedactor([f for n in needles if n for f in echo_forms(n)])
    clean = redactor.feed(body) + redactor.finish()
    ctype = content_type.split(";", 1)[0].strip().lower()
    try:
        text = clean.decode("utf-8")
    except UnicodeDecodeError:
        shown = clean[:_HEX_SHOWN].hex(" ")
        more = f" ... ({len(clean) - _HEX_SHOWN} more bytes)" if len(clean) > _HEX_SHOWN else ""
        return "binary", f"binary body, {len(clean)} bytes: {shown}{more}"
    if ctype == "application/json" or ctype.endswith("+json") or (
            not ctype and text.lstrip()[:1] in ("{", "[")):
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            pass
        else:
            try:
                pretty = json.dumps(_mask_json(parsed, needles), indent=2, ensure_ascii=False)
            except (ValueError, RecursionError):
                pretty = None
            if pretty is not None:
                return "json", visible(pretty, keep_newlines=True, escape_backslash=False)
    if ctype == "application/x-www-form-urlencoded":
        lines = []
        for pair in text.split("&"):
            name, _, value = pair.partition("=")
            name, value = unquote_plus(name), unquote_plus(value)
            lines.append(f"{name} = {MASK if _secret_field(name, value, needles) else value}")
        return "form", visible("\n".join(lines), keep_newlines=True)
    return "text", visible(text, keep_newlines=True)


def request_view(*, path: str, query: str, headers: Iterable[tuple[str, str]], body: bytes,
                 needles: Sequence[str] = ()) -> RequestView:
    """The whole view of a held request. `headers` as the skill sent them (before egress
    injected a credential); `needles`: the skill's placeholders and real keys, to mask."""
    header_list = list(headers)
    ctype = next((v for k, v in header_list if k.lower() == "content-type"), "")
    kind, preview = preview_body(body, ctype, needles)
    return RequestView(path=visible(path), query=mask_query(query, needles),
                       headers=mask_headers(header_list, needles), content_type=visible(ctype),
                       body_kind=kind, body=preview, body_size=len(body))


def secret_name(name: str) -> bool:
    """Whether a field or header name says its value is a secret (`api_key`, `clientSecret`,
    `X-Auth-Token`; not `author`, `passenger`)."""
    words = _WORD_SPLIT.split(_CAMEL.sub("_", name).lower())
    return any(w in _SECRET_WORDS for w in words) or "".join(words) in _SECRET_WORDS


def _secret_field(name: str, value: str, needles: Sequence[str]) -> bool:
    return secret_name(name) or looks_secret(value, needles)


def _mask_json(value: Any, needles: Sequence[str], depth: int = 0) -> Any:
    if depth > 200:
        raise ValueError("nested too deep to show")
    if isinstance(value, dict):
        return {k: (MASK if secret_name(str(k)) and v is not None and v != ""
                    else _mask_json(v, needles, depth + 1)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_json(v, needles, depth + 1) for v in value]
    if isinstance(value, str) and looks_secret(value, needles):
        return MASK
    return value
