"""Host normalisation, host patterns and path globs: pure string functions.

A host is compared in one canonical spelling: lowercase, IDNA (punycode) for non-ASCII names,
no trailing dot, and IP literals in their canonical form (so `0x7f.1` and `127.0.0.1` are the
same host). Patterns are validated once at load time; matching is then dictionary lookups
(see `HostIndex`) and a segment-wise path comparison.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import idna

from egress.netguard.addresses import parse_ip_literal
from egress.policy.suffixes import public_suffix

__all__ = [
    "HostPattern",
    "normalise_host",
    "normalise_path",
    "parse_host_pattern",
    "parse_path_pattern",
    "path_matches",
]

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


def normalise_host(host: str) -> str:
    """Return the canonical spelling of `host`, or raise ValueError saying what is wrong."""
    text = host.strip()
    if not text:
        raise ValueError("empty host")
    # parse_ip_literal takes "[v6]" itself and refuses brackets around anything else
    # ("[example.com]" is not a host spelling any client should send).
    address = parse_ip_literal(text)
    if address is not None:
        return str(address)
    if text.endswith("."):
        text = text[:-1]
    if text.isascii():
        text = text.lower()
    else:
        try:
            text = idna.encode(text, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"not a valid internationalised host name ({exc})") from exc
    if len(text) > 253:
        raise ValueError("host name longer than 253 characters")
    for label in text.split("."):
        if not _LABEL.match(label):
            raise ValueError(f"label {label!r} is not a valid DNS label")
    return text


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
    if "/" in body or ":" in body and not _is_ip_literal(body):
        raise ValueError(
            f"{raw!r} is not a host name; write only the host (ports go in `ports:`, "
            f"paths in `paths:`)"
        )
    try:
        host = normalise_host(body)
    except ValueError as exc:
        raise ValueError(f"{raw!r}: {exc}") from None
    if wildcard:
        if _is_ip_literal(host):
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


def _is_ip_literal(text: str) -> bool:
    # parse_ip_literal raises for strings that are neither an address nor a host name
    # ("host:443"); for a pattern check those simply are not IP literals.
    try:
        return parse_ip_literal(text) is not None
    except ValueError:
        return False


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


def normalise_path(path: str) -> str | None:
    """Canonical form of a request path for matching, or None when it cannot be trusted.

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
