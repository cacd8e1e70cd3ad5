"""Putting a key into a request, for the shapes that need no signature (pure).

    header   the placeholder replaced in every header value where the skill sent it; else
             `header` set to `format`, replacing what the skill sent
    query    query parameter PARAM (all of its occurrences) replaced by one `PARAM=key`, in
             the place of the first; or `PARAM=key` added
    basic    `Authorization: Basic base64(username:key)`, replacing what the skill sent
    bearer   `Authorization: Bearer token` (a minted OAuth 2.0 access token)

A value with CR, LF or NUL is refused (it would split the header); a query value is
percent-encoded (everything but RFC 3986 unreserved characters), so it cannot add
parameters or end the target.
"""

from __future__ import annotations

import base64
from urllib.parse import quote, unquote

from egress.policy.model import Credential

__all__ = ["inject_basic", "inject_bearer", "inject_header", "inject_query"]


def _check(value: str) -> None:
    if any(c in value for c in "\r\n\x00"):
        raise ValueError("secret value contains a line break or NUL; refusing to send it")


def inject_header(fields: list[tuple[str, str]], cred: Credential, value: str
                  ) -> list[tuple[str, str]]:
    """Headers with the credential put in (the placeholder replaced, or the header set)."""
    _check(value)
    if cred.placeholder and any(cred.placeholder in v for _, v in fields):
        return [(k, v.replace(cred.placeholder, value)) for k, v in fields]
    return _set(fields, cred.header, cred.format.replace("{secret}", value))


def inject_basic(fields: list[tuple[str, str]], username: str, value: str
                 ) -> list[tuple[str, str]]:
    _check(value)
    token = base64.b64encode(f"{username}:{value}".encode()).decode("ascii")
    return _set(fields, "Authorization", f"Basic {token}")


def inject_bearer(fields: list[tuple[str, str]], token: str) -> list[tuple[str, str]]:
    _check(token)
    return _set(fields, "Authorization", f"Bearer {token}")


def inject_query(target: str, param: str, value: str) -> str:
    """`target` (path?query) with PARAM=value: every PARAM replaced, or one appended."""
    _check(value)
    path, mark, query = target.partition("?")
    encoded = f"{param}={quote(value, safe='')}"
    parts = query.split("&") if mark and query else []
    found = False
    out = []
    for part in parts:
        name = part.partition("=")[0]
        if unquote(name) == param:
            if not found:
                out.append(encoded)  # the first occurrence keeps its place
            found = True
        else:
            out.append(part)
    if not found:
        out.append(encoded)
    return f"{path}?{'&'.join(out)}"


def _set(fields: list[tuple[str, str]], header: str, value: str) -> list[tuple[str, str]]:
    lower = header.lower()
    out = [(k, v) for k, v in fields if k.lower() != lower]
    out.append((header, value))
    return out
