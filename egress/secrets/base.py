"""What every secret backend shares: the value and the interface.

``Secret`` carries a credential through egress without letting it show up anywhere by
accident: its repr, str and format are ``Secret('****')``, it refuses to be pickled, and
``reveal()`` is the one way to get the text (called at the injection point only).

``SecretBackend`` is the narrow interface the cache talks to, for a ``SecretRef`` (where a
policy says a secret lives: egress/policy/secret_refs.py). Error messages name the reference,
never the value: a reference is a location, a secret is not.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from egress.policy.secret_refs import SecretRef

__all__ = ["Secret", "SecretBackend", "SecretInfo", "parse_rfc3339"]

_REDACTED = "Secret('****')"


class Secret:
    """A secret string that hides itself.

    >>> s = Secret("sk_live_123")
    >>> s, f"{s}", str(s)
    (Secret('****'), "Secret('****')", "Secret('****')")
    >>> s.reveal()
    'sk_live_123'

    Equality runs in constant time (``hmac.compare_digest``) so that comparing a candidate
    against a secret does not leak its prefix through timing. Secrets are unhashable: a
    hash of the value would be a cheap oracle for it.
    """

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            # The type only: the value may be the secret in another form.
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """Return the secret text. Call this only where the value leaves egress."""
        return self._value

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return _REDACTED

    def __str__(self) -> str:
        return _REDACTED

    def __format__(self, format_spec: str) -> str:
        return _REDACTED

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    __hash__ = None  # type: ignore[assignment]

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("Secret refuses to be pickled: reveal() it where it is needed instead")

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret refuses to be pickled: reveal() it where it is needed instead")

    def __getstate__(self) -> NoReturn:
        raise TypeError("Secret refuses to be pickled: reveal() it where it is needed instead")

    # copy.copy/deepcopy would go through __reduce_ex__; an immutable value can be shared.
    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self


class SecretBackend(Protocol):
    """Where secrets come from. Implementations: VaultBackend, EnvBackend, FileBackend.

    Contract:
    - ``__init__`` does no I/O (no connection, no file read, no login); the first ``fetch``
      does what is needed.
    - ``fetch`` returns a non-empty Secret, or raises
      ``SecretNotFound`` when the backend answered that the secret, field or version does
      not exist (or was deleted/destroyed, or is empty), or
      ``SecretUnavailable`` when the backend could not be asked (down, timeout, sealed,
      auth refused). Library exceptions never escape. Messages name the reference only.
    - ``close`` releases connections and background tasks; calling it twice is harmless.
    """

    async def fetch(self, ref: SecretRef) -> Secret: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class SecretInfo:
    """What a backend says about a secret without its value (`egress secrets status`)."""

    version: str | None = None
    changed_at: float | None = None  # Unix time the current value was written, if known
    note: str | None = None  # why there is no time (the backend's API has none)


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)?")


def parse_rfc3339(text: object) -> float | None:
    """Unix time of an RFC 3339 timestamp (Vault, 1Password), or None when not one."""
    match = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        return None
    whole, frac, zone = match.groups()
    # Vault writes nanoseconds; datetime takes at most microseconds.
    micro = f".{frac[:6]}" if frac else ""
    offset = "+00:00" if zone in (None, "Z", "z") else zone
    try:
        stamp = dt.datetime.fromisoformat(f"{whole.replace(' ', 'T')}{micro}{offset}")
    except ValueError:
        return None
    return stamp.timestamp()
