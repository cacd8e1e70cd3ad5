"""Every exception egress raises on purpose.

    EgressError
     ├── PolicyError            one problem in a policy file: file, line, field, message
     ├── PolicyErrors           a policy directory with one or more PolicyError
     ├── IdentityError          token store unreadable or a token command misused
     ├── ResolveError           DNS said no, or said nothing in time (reason: dns_failure)
     ├── SecretError
     │    ├── SecretNotFound    the backend answered: no such secret/field (or version deleted)
     │    └── SecretUnavailable the backend could not be asked (down, timeout, sealed)
     │         ├── SecretForbidden     it refused egress's token or access to the secret
     │         └── SecretMisconfigured egress cannot ask it: no settings, token variable unset
     └── ConfigError            a command-line or option value that cannot work

Library exceptions (yaml, dnspython, aiohttp, OSError) are translated into these at the
adapter that calls the library, with ``raise ... from exc``. No message here ever contains a
secret value or a token.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ConfigError",
    "EgressError",
    "IdentityError",
    "PolicyError",
    "PolicyErrors",
    "ResolveError",
    "SecretError",
    "SecretForbidden",
    "SecretMisconfigured",
    "SecretNotFound",
    "SecretUnavailable",
    "secret_error_class",
]


class EgressError(Exception):
    """Base of every error egress raises on purpose."""


class PolicyError(EgressError):
    """One problem in a policy file, rendered as ``file:line: field: message``."""

    def __init__(self, file: str, line: int, field: str, message: str) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"

    def __repr__(self) -> str:
        return f"PolicyError({str(self)!r})"


class PolicyErrors(EgressError):
    """A policy directory that failed validation; ``errors`` lists every problem found."""

    def __init__(self, errors: Iterable[PolicyError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.file, e.line, e.field))
        super().__init__("\n".join(str(e) for e in self.errors))


class IdentityError(EgressError):
    """The token store cannot be read or written, or a token command was misused."""


class ResolveError(EgressError):
    """A hostname could not be resolved: NXDOMAIN, SERVFAIL, no answer or timeout."""

    def __init__(self, host: str, detail: str) -> None:
        self.host = host
        self.detail = detail
        super().__init__(f"cannot resolve {host}: {detail}")


class SecretError(EgressError):
    """A secret could not be produced. Never carries the secret value."""


class SecretNotFound(SecretError):
    """The backend answered and the secret, field or version does not exist."""


class SecretUnavailable(SecretError):
    """The backend could not be asked: unreachable, timed out, sealed or auth refused."""


class SecretForbidden(SecretUnavailable):
    """The backend refused egress's token (401/403), or the token may not read this secret.
    Still "unavailable" to the cache: a value fetched before may be served within grace."""


class SecretMisconfigured(SecretUnavailable):
    """egress cannot ask the backend at all: its settings are missing, or the variable or file
    that should hold its token is unset, empty or unreadable."""


def secret_error_class(exc: BaseException) -> str:
    """The stable class of a secret failure for audit lines, /readyz and `egress check
    --resolve`: missing, forbidden, misconfigured or down (anything else that failed)."""
    if isinstance(exc, SecretNotFound):
        return "missing"
    if isinstance(exc, SecretForbidden):
        return "forbidden"
    if isinstance(exc, SecretMisconfigured):
        return "misconfigured"
    return "down"


class ConfigError(EgressError):
    """A command-line argument, option or environment value that cannot work."""
