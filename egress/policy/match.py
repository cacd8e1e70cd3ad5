"""Host patterns and path globs: pure string functions.

Hosts are compared in one canonical spelling (egress/policy/hosts.py, normalise_host). Patterns are validated once at load time; matching is then dictionary lookups
(see `HostIndex`) and a segment-wise path comparison.

Request paths are judged exactly as they are forwarded: `path_spelling_problem` refuses any
spelling an upstream could read as another path (dot and empty segments, escapes that decode to
'.', '/', '\\' or '%', backslashes, ';' parameters), instead of resolving it.
"""

from __future__ import annotations

from dataclasses import dataclass

from egress.policy.hosts import is_ip_literal, normalise_host
from egress.policy.suffixes import public_suffix

__all__ = [
    "HostPattern",
    "normalise_path",
    "parse_host_pattern",
    "parse_path_pattern",
    "path_matches",
    "path_spelling_problem",
]

@dataclass(frozen=True)
class HostPattern:
    host: str  # normalised; for a wildcard, the suffix after "*."
    wildcard: bool


def parse_host_pattern(text: str) -> HostPattern:
    """Validate a policy `host:` value. Raises ValueError whose message says what to write."""
    raw = text.strip()
    if raw in ("*", "*.", "**"):
        raise ValueError(
            f"{raw!r} would allow every host; list the hosts the skill needs, "
            f"e.g. api.example.com or *.example.com"
        )
    wildcard = raw.startswith("*.")
    body = raw[2:] if wildcard else raw
    if "*" in body:
        raise ValueError(
            f"{raw!r}: '*' is only allowed as the whole first label, as in *.example.com"
        )
    if "/" in body or ":" in body and not is_ip_literal(body):
        raise ValueError(
            f"{raw!r} is not a host name; write only the host (ports go in `ports:`, "
            f"paths in `paths:`)"
        )
    try:
        host = normalise_host(body)
    except ValueError as exc:
        raise ValueError(f"{raw!r}: {exc}") from None
    if wildcard:
        if is_ip_literal(host):
            raise ValueError(f"{raw!r}: a wildcard cannot cover an IP address")
        if "." not in host:
            raise ValueError(
                f"{raw!r} covers a whole top-level domain; name the domain, "
                f"e.g. *.example.{host}"
            )
        suffix = public_suffix(host)
        if suffix is not None:
            raise ValueError(
                f"{raw!r}: {host} is a public suffix (Public Suffix List, {suffix.section} "
                f"section): names under it belong to unrelated owners, so this would allow "
                f"all of them; name the owner's domain instead, e.g. *.example.{host} or "
                f"api.example.{host}"
            )
    return HostPattern(host=host, wildcard=wildcard)


def parse_path_pattern(text: str) -> str:
    """Validate a `paths:` entry: absolute, no query, `*` only as a whole segment or `/**` at the end."""
    if not text.startswith("/"):
        raise ValueError(f"{text!r} must start with '/'")
    if "?" in text or "#" in text:
        raise ValueError(f"{text!r}: paths are matched without the query string; drop '?...'")
    segments = text.split("/")[1:]
    for i, seg in enumerate(segments):
        if seg == "**" and i != len(segments) - 1:
            raise ValueError(f"{text!r}: '**' is only allowed as the last segment")
        if "*" in seg and seg not in ("*", "**"):
            raise ValueError(
                f"{text!r}: '*' must be a whole segment (/v1/items/*) or '**' the last one"
            )
        if seg in (".", ".."):
            raise ValueError(f"{text!r}: '.' and '..' segments are not allowed")
    return text


# RFC 3986 `pchar` minus ';' (servers such as Tomcat strip ";params" from segments, so
# "/a/..;/b" climbs there) plus '/' and '%' (escapes are checked one by one).
_PATH_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,=:@/%")
_UNRESERVED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")


def path_spelling_problem(path: str) -> str | None:
    """Why `path` (a request path without its query) is not spelt plainly, or None.

    Rules with `paths` compare the path egress forwards, byte for byte, so it must have only
    one reading: upstreams resolve dot segments, merge '//', decode escapes and treat '\\' or
    ';' in their own ways, and egress will not guess which. Refused:
      * '.' and '..' segments, and empty segments ('//'); one trailing '/' is allowed
      * percent-escapes of unreserved characters (letters, digits, '-._~', so '%2e' too),
        of '/', '\\' and '%' (double encoding), of control characters; malformed escapes
      * '\\', ';', and any character outside RFC 3986 (spaces, controls, non-ASCII, '#')
    Escapes of other reserved or non-ASCII bytes ('%3F', '%C3%A9') are canonical and allowed.
    """
    if not path.startswith("/"):
        return "the path does not start with '/'"
    segments = path[1:].split("/")
    if len(segments) > 1 and segments[-1] == "":
        segments.pop()  # one trailing slash: "/v1/invoices/"
    for seg in segments:
        if seg == "" and path != "/":
            return "empty path segment ('//')"
        if seg in (".", ".."):
            return f"{seg!r} path segment"
        problem = _segment_problem(seg)
        if problem is not None:
            return problem
    return None


def _segment_problem(seg: str) -> str | None:
    i = 0
    while i < len(seg):
        ch = seg[i]
        if ch == "%":
            pair = seg[i + 1 : i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                return "malformed percent-escape"
            code = int(pair, 16)
            if code == 0x2E:
                return "percent-encoded '.'"
            if chr(code) in _UNRESERVED:
                return f"percent-escape of the unreserved character {chr(code)!r}"
            if code in (0x2F, 0x5C):
                return f"percent-encoded {chr(code)!r}"
            if code == 0x25:
                return "percent-encoded '%' (double encoding)"
            if code < 0x20 or code == 0x7F:
                return "percent-encoded control character"
            i += 3
            continue
        if ch not in _PATH_CHARS:
            if ch == "\\":
                return "backslash in the path"
            if ch == ";":
                return "';' in the path (path parameters)"
            return f"character {ascii(ch)} in the path"
        i += 1
    return None


def normalise_path(path: str) -> str | None:
    """Canonical form of a request path for matching, or None when it cannot be trusted.

    Not used to judge requests any more: egress judges the path as sent and refuses unplain
    spellings (`path_spelling_problem`) rather than resolving them.

    Drops the query, decodes unreserved percent-escapes, resolves `.`/`..` and empty
    segments. Encoded slashes, backslashes, NULs and `..` that climbs above the root are
    refused (None) instead of being guessed at, so no spelling can escape a rule.
    """
    path = path.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        return None
    decoded = _decode_percent(path)
    if decoded is None or "\\" in decoded or "\x00" in decoded:
        return None
    out: list[str] = []
    for seg in decoded.split("/")[1:]:
        if seg in ("", "."):
            continue
        if seg == "..":
            if not out:
                return None
            out.pop()
            continue
        out.append(seg)
    trailing = "/" if decoded.endswith("/") and out else ""
    return "/" + "/".join(out) + trailing


_HEX = "0123456789abcdefABCDEF"


def _decode_percent(path: str) -> str | None:
    if "%" not in path:
        return path
    out: list[str] = []
    i = 0
    while i < len(path):
        ch = path[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        pair = path[i + 1 : i + 3]
        if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
            return None
        code = int(pair, 16)
        # An encoded "/" (or a non-ASCII byte) would let one segment pose as two; refuse it.
        if code == 0x2F or code >= 0x80 or code < 0x20:
            return None
        out.append(chr(code))
        i += 3
    decoded = "".join(out)
    # Double encoding ("%252e") must not survive as a second round of escapes.
    return None if "%" in decoded else decoded


def path_matches(pattern: str, path: str) -> bool:
    """Match a normalised path against a validated pattern, segment by segment."""
    if pattern == path or pattern.rstrip("/") == path.rstrip("/") and pattern != "/":
        return True
    want = pattern.split("/")[1:]
    have = path.rstrip("/").split("/")[1:]
    for i, seg in enumerate(want):
        if seg == "**":
            return len(have) > i
        if i >= len(have):
            return False
        if seg != "*" and seg != have[i]:
            return False
    return len(have) == len(want)
