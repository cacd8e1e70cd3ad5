"""Console sessions: who is logged in to the console, their CSRF token, one-time login codes.

A browser cannot send `Authorization: Bearer` on a page load, so the console trades the admin
token (typed into its login form) or a one-time code (`egress console` prints a link holding
one) for a session: a random id in an HttpOnly, SameSite=Strict cookie, and a CSRF token the
page keeps in memory and sends as `X-Egress-CSRF` with every change. Sessions live in memory
(a restart logs everyone out), expire after `ttl`, and are looked up by the SHA-256 of their
id, so lookups take no time that depends on how much of an id an attacker guessed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CODE_TTL", "SESSION_TTL", "Session", "Sessions", "clean_name"]

SESSION_TTL = 12 * 3600.0
CODE_TTL = 120.0
_MAX_SESSIONS = 200
_MAX_CODES = 50
_NAME_MAX = 64


@dataclass
class Session:
    user: str  # as the person named themselves at login; recorded with their decisions
    csrf: str
    expires: float  # monotonic


def clean_name(text: object) -> str | None:
    """A person's name as given, if usable: 1-64 printable characters, no markup-only junk."""
    if not isinstance(text, str):
        return None
    name = " ".join(text.split())[:_NAME_MAX]
    if not name or not name.isprintable():
        return None
    return name


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


class Sessions:
    def __init__(self, *, ttl: float = SESSION_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()
        self._codes: OrderedDict[bytes, tuple[str, float]] = OrderedDict()

    def login(self, user: str) -> tuple[str, Session]:
        """A new session for `user`: (its id for the cookie, the session)."""
        self._drop_expired()
        sid = secrets.token_urlsafe(32)
        session = Session(user=user, csrf=secrets.token_urlsafe(32),
                          expires=self._clock() + self.ttl)
        self._sessions[_digest(sid)] = session
        while len(self._sessions) > _MAX_SESSIONS:
            self._sessions.popitem(last=False)  # the oldest login goes first
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._sessions.get(_digest(sid))
        if session is None or session.expires <= self._clock():
            return None
        return session

    def logout(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(_digest(sid), None)

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), session.csrf.encode())

    def issue_code(self, user: str, ttl: float = CODE_TTL) -> str:
        """A one-time login code for `user`, good for `ttl` seconds."""
        code = secrets.token_urlsafe(24)
        self._codes[_digest(code)] = (user, self._clock() + ttl)
        while len(self._codes) > _MAX_CODES:
            self._codes.popitem(last=False)
        return code

    def redeem(self, code: str) -> str | None:
        """The user a code was issued for, once; None for an unknown, used or expired code."""
        found = self._codes.pop(_digest(code), None)
        if found is None or found[1] <= self._clock():
            return None
        return found[0]

    def _drop_expired(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]
