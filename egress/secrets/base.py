"""The vocabulary every secret backend shares: the value, the reference, the interface.

``Secret`` carries a credential through egress without letting it show up anywhere by
accident: its repr, str and format are ``Secret('****')``, it refuses to be pickled, and
``reveal()`` is the one way to get the text (called at the injection point only).

``SecretRef`` is where a policy says a credential lives, written as text in the policy file:

    vault:MOUNT/PATH#FIELD   KV v2 read of GET /v1/MOUNT/data/PATH, field FIELD
    env:NAME                 environment variable NAME of the egress process
    file:/ABSOLUTE/PATH      file contents, one trailing newline removed

``SecretBackend`` is the narrow interface the cache talks to. Error messages name the
reference, never the value: a reference is a location, a secret is not.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, Protocol, get_args

__all__ = [
    "REF_FORMS",
    "Scheme",
    "Secret",
    "SecretBackend",
    "SecretRef",
    "parse_secret_ref",
]

Scheme = Literal["vault", "env", "file"]
SCHEMES: tuple[str, ...] = get_args(Scheme)

REF_FORMS = "vault:MOUNT/PATH#FIELD, env:NAME or file:/PATH"
"""The accepted forms, quoted by every parse error so the reader sees what to write."""

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


@dataclass(frozen=True)
class SecretRef:
    """Where a secret lives. ``str(ref)`` gives back the text form used in policy files."""

    scheme: Scheme
    location: str  # vault: "MOUNT/PATH"; env: the variable name; file: an absolute path
    field: str | None = None  # vault only: the key inside the KV v2 secret

    @property
    def mount(self) -> str:
        """The KV v2 mount of a vault reference: the first segment of its location."""
        return self.location.split("/", 1)[0]

    @property
    def path(self) -> str:
        """The path of a vault reference under its mount."""
        return self.location.split("/", 1)[1] if "/" in self.location else ""

    def __str__(self) -> str:
        if self.field is None:
            return f"{self.scheme}:{self.location}"
        return f"{self.scheme}:{self.location}#{self.field}"


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Only a short alphabetic prefix is quoted back in an error: someone who pasted the secret
# itself ("sk_live_...:...") must not see it copied into logs by the error message.
_QUOTABLE_SCHEME = re.compile(r"[A-Za-z]{1,12}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_secret_ref(text: str) -> SecretRef:
    """Parse ``vault:MOUNT/PATH#FIELD``, ``env:NAME`` or ``file:/PATH`` into a SecretRef.

    Raises ValueError whose message says what to write instead. The message never repeats
    the text itself, in case the text is the secret pasted in the wrong place.
    """
    if not isinstance(text, str):
        raise ValueError(f"a secret reference is a string: write {REF_FORMS}")
    if not text.strip():
        raise ValueError(f"empty secret reference: write {REF_FORMS}")
    if text != text.strip():
        raise ValueError("remove the spaces around the secret reference")
    scheme, colon, rest = text.partition(":")
    if not colon:
        raise ValueError(f"a secret reference starts with a scheme: write {REF_FORMS}")
    if scheme not in SCHEMES:
        if _QUOTABLE_SCHEME.fullmatch(scheme):
            raise ValueError(f"unknown secret scheme {scheme!r}: write {REF_FORMS}")
        raise ValueError(f"unknown secret scheme: write {REF_FORMS}")
    if _CONTROL.search(rest):
        raise ValueError("control characters are not allowed in a secret reference")
    if scheme == "vault":
        return _parse_vault(rest)
    if scheme == "env":
        if not _ENV_NAME.fullmatch(rest):
            raise ValueError(
                "env: needs an environment variable name (letters, digits, _), "
                "e.g. env:STRIPE_API_KEY"
            )
        return SecretRef("env", rest, None)
    if not rest:
        raise ValueError("file: needs a path, e.g. file:/run/secrets/stripe_api_key")
    if not rest.startswith("/"):
        raise ValueError(
            "file: needs an absolute path (relative paths depend on the working "
            "directory), e.g. file:/run/secrets/stripe_api_key"
        )
    return SecretRef("file", rest, None)


_VAULT_EXAMPLE = "e.g. vault:secret/stripe#api_key"


def _parse_vault(rest: str) -> SecretRef:
    location, hash_, field = rest.partition("#")
    if not hash_ or not field:
        raise ValueError(
            f"vault: needs a field after '#': write vault:MOUNT/PATH#FIELD, {_VAULT_EXAMPLE}"
        )
    if "#" in field:
        raise ValueError(
            f"vault: takes one '#FIELD': write vault:MOUNT/PATH#FIELD, {_VAULT_EXAMPLE}"
        )
    if location.startswith("/"):
        raise ValueError(
            f"vault: remove the leading '/': write vault:MOUNT/PATH#FIELD, {_VAULT_EXAMPLE}"
        )
    segments = location.split("/")
    if len(segments) < 2:
        raise ValueError(
            f"vault: needs a mount and a path: write vault:MOUNT/PATH#FIELD, {_VAULT_EXAMPLE}"
        )
    if any(s == "" for s in segments):
        raise ValueError(f"vault: empty path segment ('//' or a trailing '/'): {_VAULT_EXAMPLE}")
    if any(s in (".", "..") for s in segments):
        raise ValueError(
            "vault: '.' and '..' are not allowed in the path; name the secret directly"
        )
    if any(c.isspace() or c in "?%" for c in location):
        raise ValueError("vault: spaces, '?' and '%' are not allowed in the path")
    return SecretRef("vault", location, field)


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
