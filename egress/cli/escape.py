"""Text from the audit log made safe for an operator's terminal.

Audit records carry what skills sent: a denied request's path, method or host (when it was
malformed) is skill-controlled. Printed raw, an ANSI escape sequence in a path could recolour,
retitle or rewrite the operator's terminal (or hide a line), and bidirectional controls can
make text read differently from what it is. `printable` escapes, in Python notation:

* C0 controls (U+0000-U+001F, tab and newline included: one record is one line) and DEL;
* C1 controls (U+0080-U+009F: U+009B is a one-character CSI on terminals that honour C1);
* Unicode format characters (category Cf: bidi embeddings, overrides and isolates, zero-width
  spaces and joiners, the BOM, invisible operators), line and paragraph separators (Zl, Zp),
  surrogates and private-use or unassigned code points (Cs, Co, Cn);
* the backslash itself, so an escape printed by egress cannot be confused with one a skill
  wrote literally.

JSON output needs only the last step beyond `json.dumps(ensure_ascii=True)`, which already
writes every non-ASCII character and C0 control as `\\uXXXX`: DEL is the one control left raw.
"""

from __future__ import annotations

import unicodedata

__all__ = ["json_safe", "printable"]

_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """`text` with every character a terminal could act on (or hide) escaped."""
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text  # the common case: nothing to do
    out: list[str] = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch.isascii():
            out.append(ch if ch.isprintable() else _escape(ch))
        elif unicodedata.category(ch) in _ESCAPED_CATEGORIES:
            out.append(_escape(ch))
        else:
            out.append(ch)
    return "".join(out)


def json_safe(line: str) -> str:
    """A line produced by json.dumps(..., ensure_ascii=True) with DEL escaped too."""
    return line.replace("\x7f", "\\u007f")
