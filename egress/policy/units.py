"""Human-friendly sizes and durations, shared by the policy loader and the CLI.

    parse_size("100MB") == 100_000_000      parse_size("64MiB") == 67_108_864
    parse_duration("90s") == 90.0           parse_duration("1h30m") == 5400.0

Both raise ValueError with a message that says what to write instead.
"""

from __future__ import annotations

import re

__all__ = ["format_duration", "parse_duration", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(text: str | int) -> int:
    """Bytes from an integer or a string such as "500k", "100MB" or "64MiB"."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"{text} is negative; give a size such as 100MB")
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size; write e.g. 100MB, 64MiB or 500000")
    unit = (match.group(2) or "").lower().removesuffix("b")
    return int(match.group(1)) * _SIZE_UNITS[unit]


def parse_duration(text: str | int | float) -> float:
    """Seconds from a number or a string such as "30s", "15m", "1h30m", "7d"."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"{text} is negative; give a duration such as 1h")
        return float(text)
    raw = str(text).strip().lower()
    if raw.replace(".", "", 1).isdigit():
        return float(raw)
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(raw) or not raw:
        raise ValueError(f"{text!r} is not a duration; write e.g. 30s, 15m, 1h30m or 7d")
    return total


def format_duration(seconds: float) -> str:
    """The shortest exact spelling parse_duration reads back: 5400 -> "1h30m"."""
    if seconds <= 0:
        return "0s"
    out, left = [], int(seconds)
    for unit in ("d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if left >= size:
            out.append(f"{left // size}{unit}")
            left %= int(size)
    return "".join(out) or f"{seconds}s"
