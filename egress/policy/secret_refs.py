"""Where a policy says a secret lives: ``SecretRef``, parsed from the policy's text (pure).

    vault:MOUNT/PATH#FIELD          KV v2 read of GET /v1/MOUNT/data/PATH, field FIELD
    op://VAULT/ITEM[/SECTION]/FIELD 1Password (Connect server): 1Password's own syntax
    doppler:PROJECT/CONFIG#NAME     Doppler secret NAME of a config; doppler:NAME with a
                                    service token (scoped to one config)
    env:NAME                        environment variable NAME of the egress process
    file:/ABSOLUTE/PATH             file contents, one trailing newline removed

The loader parses every `credentials.*.secret` into a SecretRef, so a policy that loads holds
only references the secret backends (egress/secrets) can read. A reference is a location,
never a value; parse errors never quote the text (it may be a secret pasted in the wrong
place).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["REF_FORMS", "REMOTE_SCHEMES", "SETTINGS_KEY", "Scheme", "SecretRef",
           "parse_secret_ref"]

Scheme = Literal["vault", "op", "doppler", "env", "file"]
SCHEMES: tuple[str, ...] = get_args(Scheme)
REMOTE_SCHEMES = ("vault", "op", "doppler")  # need settings.secrets.<backend>
SETTINGS_KEY = {"vault": "vault", "op": "onepassword", "doppler": "doppler"}

REF_FORMS = ("vault:MOUNT/PATH#FIELD, op://VAULT/ITEM/FIELD, doppler:PROJECT/CONFIG#NAME, "
             "env:NAME or file:/PATH")
"""The accepted forms, quoted by every parse error so the reader sees what to write."""


@dataclass(frozen=True)
class SecretRef:
    """Where a secret lives. ``str(ref)`` gives back the text form used in policy files."""

    scheme: Scheme
    # vault: "MOUNT/PATH"; op: "VAULT/ITEM" or "VAULT/ITEM/SECTION"; doppler: "PROJECT/CONFIG"
    # or "" (a service token's own config); env: the variable name; file: an absolute path
    location: str
    field: str | None = None  # vault: the KV v2 key; op: the field; doppler: the secret name

    @property
    def mount(self) -> str:
        """The KV v2 mount of a vault reference: the first segment of its location."""
        return self.location.split("/", 1)[0]

    @property
    def path(self) -> str:
        """The path of a vault reference under its mount."""
        return self.location.split("/", 1)[1] if "/" in self.location else ""

    @property
    def parts(self) -> list[str]:
        """The segments of the location (op: vault, item[, section]; doppler: project,
        config)."""
        return self.location.split("/") if self.location else []

    def __str__(self) -> str:
        if self.scheme == "op":
            return f"op://{self.location}/{self.field}"
        if self.scheme == "doppler" and not self.location:
            return f"doppler:{self.field}"
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
    if scheme == "op":
        return _parse_op(rest)
    if scheme == "doppler":
        return _parse_doppler(rest)
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


_OP_EXAMPLE = "write op://VAULT/ITEM/FIELD or op://VAULT/ITEM/SECTION/FIELD, e.g. op://Skills/Stripe/credential"


def _parse_op(rest: str) -> SecretRef:
    if not rest.startswith("//"):
        raise ValueError(f"op: references start with op:// ({_OP_EXAMPLE})")
    segments = rest[2:].split("/")
    if len(segments) not in (3, 4):
        raise ValueError(f"op: needs a vault, an item and a field: {_OP_EXAMPLE}")
    if any(not s.strip() for s in segments):
        raise ValueError(f"op: empty vault, item, section or field name: {_OP_EXAMPLE}")
    if any(s != s.strip() for s in segments):
        raise ValueError("op: remove the spaces around the names")
    if any(c in "?#" for s in segments for c in s):
        raise ValueError("op: '?' and '#' (field attributes, queries) are not supported; "
                         f"{_OP_EXAMPLE}")
    return SecretRef("op", "/".join(segments[:-1]), segments[-1])


_DOPPLER_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_DOPPLER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOPPLER_EXAMPLE = ("write doppler:PROJECT/CONFIG#NAME, or doppler:NAME with a service token, "
                    "e.g. doppler:backend/prd#STRIPE_KEY")


def _parse_doppler(rest: str) -> SecretRef:
    location, hash_, name = rest.rpartition("#") if "#" in rest else ("", "", rest)
    if not _DOPPLER_NAME.fullmatch(name):
        raise ValueError(f"doppler: needs a secret name (letters, digits, _): {_DOPPLER_EXAMPLE}")
    if hash_ and location:
        parts = location.split("/")
        if len(parts) != 2 or not all(_DOPPLER_SLUG.fullmatch(p) for p in parts):
            raise ValueError(f"doppler: PROJECT/CONFIG are two names: {_DOPPLER_EXAMPLE}")
    return SecretRef("doppler", location, name)
