"""``settings.secrets`` from the policy YAML, parsed into frozen settings (pure, no I/O).

    settings:
      secrets:
        vault:
          addr: https://vault.internal:8200    # required
          namespace: team-a                    # optional (Vault Enterprise / OpenBao namespaces)
          timeout: 5                           # seconds per request, default 5
          ca_file: /etc/egress/vault-ca.pem    # optional, https only
          auth:                                # exactly one of:
            token_env: VAULT_TOKEN             #   token in this environment variable
            # token_file: /run/secrets/vault-token
            # approle: {role_id: ..., secret_id_file: /run/secrets/secret-id, mount: approle}
        cache:
          ttl: 300      # seconds a fetched secret is used before it is fetched again
          jitter: 0.1   # +/- fraction of ttl, so secrets do not all expire together
          grace: 600    # seconds after a fetch during which the value may still be used
                        # while the backend is down (0: never); then requests fail closed

Errors are ``SettingsFieldError(field, message)``: ``field`` is the dotted path under
``settings.secrets`` ("" for the mapping itself), ``message`` says what to write. Tokens and
secret ids never belong in the policy file, so the keys that would hold them are refused
with a pointer to the file or variable form.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

__all__ = [
    "CacheSettings",
    "SecretSettings",
    "SettingsFieldError",
    "VaultSettings",
    "parse_secret_settings",
]


@dataclass(frozen=True)
class VaultSettings:
    """How to reach and log in to Vault/OpenBao. Exactly one auth method is set."""

    addr: str
    token_env: str | None = None
    token_file: str | None = None
    approle_role_id: str | None = None
    approle_secret_id_file: str | None = None
    approle_mount: str = "approle"
    namespace: str | None = None
    timeout: float = 5.0
    ca_file: str | None = None


@dataclass(frozen=True)
class CacheSettings:
    """Secret cache timing, in seconds. ``grace`` counts from when a value was fetched."""

    ttl: float = 300.0
    jitter: float = 0.1
    grace: float = 600.0


@dataclass(frozen=True)
class SecretSettings:
    vault: VaultSettings | None = None
    cache: CacheSettings = field(default_factory=CacheSettings)


class SettingsFieldError(ValueError):
    """One problem in ``settings.secrets``; the policy loader adds file and line."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MOUNT = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


def parse_secret_settings(raw: object) -> SecretSettings:
    """Validate the ``settings.secrets`` mapping (None: not given) and build SecretSettings."""
    if raw is None:
        return SecretSettings()
    top = _mapping(raw, "", "a mapping with 'vault' and/or 'cache'")
    _no_unknown_keys(top, "", ("vault", "cache"))
    vault = _parse_vault(top["vault"]) if "vault" in top else None
    cache = _parse_cache(top["cache"]) if "cache" in top else CacheSettings()
    return SecretSettings(vault=vault, cache=cache)


def _parse_vault(raw: object) -> VaultSettings:
    v = _mapping(raw, "vault", "a mapping with 'addr' and 'auth'")
    _no_unknown_keys(v, "vault", ("addr", "auth", "namespace", "timeout", "ca_file"))
    if "addr" not in v:
        raise SettingsFieldError(
            "vault.addr", "required: the Vault/OpenBao address, e.g. http://127.0.0.1:8200"
        )
    addr = _parse_addr(v["addr"])
    namespace = _optional_str(v, "namespace", "vault.namespace", "a namespace name, e.g. team-a")
    ca_file = _optional_str(
        v, "ca_file", "vault.ca_file", "a path to a PEM file of CA certificates"
    )
    if ca_file is not None and not addr.startswith("https://"):
        raise SettingsFieldError(
            "vault.ca_file", "only applies to an https:// addr; remove it or use https://"
        )
    timeout = 5.0
    if "timeout" in v:
        timeout = _number(
            v["timeout"], "vault.timeout", "a number of seconds greater than 0, e.g. 5"
        )
        if timeout <= 0:
            raise SettingsFieldError(
                "vault.timeout", "must be a number of seconds greater than 0, e.g. 5"
            )
    if "auth" not in v:
        raise SettingsFieldError("vault.auth", _AUTH_CHOICE)
    base = VaultSettings(addr=addr, namespace=namespace, timeout=timeout, ca_file=ca_file)
    return _parse_auth(v["auth"], base)


_AUTH_CHOICE = "choose one of token_env, token_file or approle, e.g. {token_env: VAULT_TOKEN}"


def _parse_addr(raw: object) -> str:
    example = "e.g. http://127.0.0.1:8200 or https://vault.example.com:8200"
    if not isinstance(raw, str) or not raw:
        raise SettingsFieldError("vault.addr", f"must be a URL, {example}")
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise SettingsFieldError("vault.addr", f"is not a valid URL, {example}") from None
    if parts.scheme not in ("http", "https"):
        raise SettingsFieldError("vault.addr", f"must start with http:// or https://, {example}")
    if not parts.hostname:
        raise SettingsFieldError("vault.addr", f"needs a host name, {example}")
    if parts.username is not None or parts.password is not None:
        raise SettingsFieldError(
            "vault.addr", "remove the user:password@ part; log in with vault.auth"
        )
    if parts.query or parts.fragment:
        raise SettingsFieldError("vault.addr", f"remove the '?...' or '#...' part, {example}")
    return raw.rstrip("/")


def _parse_auth(raw: object, base: VaultSettings) -> VaultSettings:
    a = _mapping(raw, "vault.auth", _AUTH_CHOICE)
    if "token" in a:
        raise SettingsFieldError(
            "vault.auth.token",
            "tokens do not belong in policy files: put it in an environment variable "
            "(token_env: NAME) or a file (token_file: PATH)",
        )
    _no_unknown_keys(a, "vault.auth", ("token_env", "token_file", "approle"))
    chosen = sorted(k for k in a)
    if not chosen:
        raise SettingsFieldError("vault.auth", _AUTH_CHOICE)
    if len(chosen) > 1:
        raise SettingsFieldError(
            "vault.auth",
            f"choose only one of token_env, token_file or approle (found: {', '.join(chosen)})",
        )
    if "token_env" in a:
        name = a["token_env"]
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            # The value is not quoted back: it may be the token pasted in the wrong place.
            raise SettingsFieldError(
                "vault.auth.token_env",
                "must be the name of an environment variable, e.g. VAULT_TOKEN",
            )
        return replace(base, token_env=name)
    if "token_file" in a:
        path = a["token_file"]
        if not isinstance(path, str) or not path:
            raise SettingsFieldError(
                "vault.auth.token_file", "must be a path to a file holding the token"
            )
        return replace(base, token_file=path)
    return _parse_approle(a["approle"], base)


def _parse_approle(raw: object, base: VaultSettings) -> VaultSettings:
    where = "vault.auth.approle"
    ap = _mapping(raw, where, "a mapping with role_id and secret_id_file")
    if "secret_id" in ap:
        raise SettingsFieldError(
            f"{where}.secret_id",
            "secret ids do not belong in policy files: "
            "put it in a file and name it with secret_id_file",
        )
    _no_unknown_keys(ap, where, ("role_id", "secret_id_file", "mount"))
    role_id = ap.get("role_id")
    if not isinstance(role_id, str) or not role_id:
        raise SettingsFieldError(f"{where}.role_id", "required: the AppRole role_id (a string)")
    secret_id_file = ap.get("secret_id_file")
    if not isinstance(secret_id_file, str) or not secret_id_file:
        raise SettingsFieldError(
            f"{where}.secret_id_file", "required: a path to a file holding the AppRole secret_id"
        )
    mount = ap.get("mount", "approle")
    if not isinstance(mount, str) or not _MOUNT.fullmatch(mount) or mount.startswith("auth/"):
        raise SettingsFieldError(
            f"{where}.mount", "must be the auth mount path without 'auth/', e.g. approle"
        )
    return replace(
        base, approle_role_id=role_id, approle_secret_id_file=secret_id_file, approle_mount=mount
    )


def _parse_cache(raw: object) -> CacheSettings:
    c = _mapping(raw, "cache", "a mapping with ttl, jitter and grace")
    _no_unknown_keys(c, "cache", ("ttl", "jitter", "grace"))
    d = CacheSettings()
    ttl, jitter, grace = d.ttl, d.jitter, d.grace
    if "ttl" in c:
        ttl = _number(c["ttl"], "cache.ttl", "a number of seconds greater than 0, e.g. 300")
        if ttl <= 0:
            raise SettingsFieldError(
                "cache.ttl", "must be a number of seconds greater than 0, e.g. 300"
            )
    if "jitter" in c:
        jitter = _number(
            c["jitter"], "cache.jitter", "a fraction from 0 up to (not including) 1, e.g. 0.1"
        )
        if not 0 <= jitter < 1:
            raise SettingsFieldError(
                "cache.jitter", "must be a fraction from 0 up to (not including) 1, e.g. 0.1"
            )
    if "grace" in c:
        grace = _number(c["grace"], "cache.grace", "a number of seconds, 0 or more, e.g. 600")
        if grace < 0:
            raise SettingsFieldError(
                "cache.grace", "must be a number of seconds, 0 or more, e.g. 600"
            )
    return CacheSettings(ttl=ttl, jitter=jitter, grace=grace)


def _mapping(raw: object, where: str, expected: str) -> Mapping[str, object]:
    if not isinstance(raw, Mapping):
        raise SettingsFieldError(where, f"must be {expected}")
    for key in raw:
        if not isinstance(key, str):
            raise SettingsFieldError(where, f"keys must be strings; must be {expected}")
    return raw


def _no_unknown_keys(m: Mapping[str, object], where: str, known: tuple[str, ...]) -> None:
    for key in m:
        if key not in known:
            name = f"{where}.{key}" if where else key
            raise SettingsFieldError(
                name, f"unknown key; expected one of: {', '.join(sorted(known))}"
            )


def _optional_str(m: Mapping[str, object], key: str, where: str, expected: str) -> str | None:
    if m.get(key) is None:
        return None
    value = m[key]
    if not isinstance(value, str) or not value:
        raise SettingsFieldError(where, f"must be {expected}")
    return value


def _number(raw: object, where: str, expected: str) -> float:
    # bool is an int in Python, but "ttl: yes" is a mistake, not 1 second.
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise SettingsFieldError(where, f"must be {expected}")
    return float(raw)
