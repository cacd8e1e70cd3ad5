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
        onepassword:                           # 1Password Connect server (op://...)
          connect_url: http://op-connect:8080  # required (Connect is self-hosted)
          token_env: OP_CONNECT_TOKEN          # or token_file: PATH
          timeout: 5                           # ca_file: PEM for an https connect_url
        doppler:                               # Doppler (doppler:PROJECT/CONFIG#NAME)
          token_env: DOPPLER_TOKEN             # or token_file: PATH
          api_url: https://api.doppler.com     # default
        max_age: 90d    # `egress secrets status` flags secrets last changed longer ago
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

from egress.policy.units import parse_duration

__all__ = [
    "CacheSettings",
    "DopplerSettings",
    "OnePasswordSettings",
    "SecretSettings",
    "SettingsFieldError",
    "VaultSettings",
    "parse_secret_settings",
]

DOPPLER_API = "https://api.doppler.com"  # Doppler's public API (the default api_url)


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
class OnePasswordSettings:
    """A 1Password Connect server and the token to ask it with (exactly one of env/file)."""

    connect_url: str
    token_env: str | None = None
    token_file: str | None = None
    timeout: float = 5.0
    ca_file: str | None = None


@dataclass(frozen=True)
class DopplerSettings:
    """Doppler's API and the service (or personal) token (exactly one of env/file)."""

    api_url: str = DOPPLER_API
    token_env: str | None = None
    token_file: str | None = None
    timeout: float = 5.0
    ca_file: str | None = None


@dataclass(frozen=True)
class SecretSettings:
    vault: VaultSettings | None = None
    cache: CacheSettings = field(default_factory=CacheSettings)
    onepassword: OnePasswordSettings | None = None
    doppler: DopplerSettings | None = None
    max_age: float | None = None  # seconds; `egress secrets status` flags older secrets

    def configured(self, settings_key: str) -> bool:
        """Whether the backend named by its settings key (vault, onepassword, doppler) is."""
        return getattr(self, settings_key, None) is not None


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
    top = _mapping(raw, "", "a mapping with vault, onepassword, doppler, cache, max_age")
    _no_unknown_keys(top, "", ("vault", "cache", "onepassword", "doppler", "max_age"))
    vault = _parse_vault(top["vault"]) if "vault" in top else None
    cache = _parse_cache(top["cache"]) if "cache" in top else CacheSettings()
    op = _parse_onepassword(top["onepassword"]) if "onepassword" in top else None
    doppler = _parse_doppler(top["doppler"]) if "doppler" in top else None
    max_age = _parse_max_age(top["max_age"]) if "max_age" in top else None
    return SecretSettings(vault=vault, cache=cache, onepassword=op, doppler=doppler,
                          max_age=max_age)


def _parse_max_age(raw: object) -> float:
    try:
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ValueError("not a duration")
        seconds = parse_duration(raw)
    except ValueError:
        raise SettingsFieldError("max_age", "must be a duration such as 90d or 12w") from None
    if seconds < 3600:
        raise SettingsFieldError("max_age", "must be at least 1h, e.g. 90d")
    return seconds


_TOKEN_CHOICE = "choose one of token_env or token_file, e.g. token_env: {example}"


def _token_source(m: Mapping[str, object], where: str, example: str) -> tuple[str | None,
                                                                              str | None]:
    """(token_env, token_file) of a backend: exactly one, never the token itself."""
    if "token" in m:
        raise SettingsFieldError(
            f"{where}.token",
            "tokens do not belong in policy files: put it in an environment variable "
            "(token_env: NAME) or a file (token_file: PATH)",
        )
    chosen = sorted(k for k in ("token_env", "token_file") if k in m)
    if len(chosen) != 1:
        raise SettingsFieldError(where, _TOKEN_CHOICE.format(example=example))
    if "token_env" in m:
        name = m["token_env"]
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise SettingsFieldError(
                f"{where}.token_env", f"must be the name of an environment variable, e.g. {example}"
            )
        return name, None
    path = m["token_file"]
    if not isinstance(path, str) or not path:
        raise SettingsFieldError(f"{where}.token_file", "must be a path to a file holding the token")
    return None, path


def _http_options(m: Mapping[str, object], where: str, url: str) -> tuple[float, str | None]:
    """timeout and ca_file, shared by the HTTP backends."""
    timeout = 5.0
    if "timeout" in m:
        timeout = _number(m["timeout"], f"{where}.timeout",
                          "a number of seconds greater than 0, e.g. 5")
        if timeout <= 0:
            raise SettingsFieldError(
                f"{where}.timeout", "must be a number of seconds greater than 0, e.g. 5"
            )
    ca_file = _optional_str(m, "ca_file", f"{where}.ca_file", "a path to a PEM file of CA certificates")
    if ca_file is not None and not url.startswith("https://"):
        raise SettingsFieldError(
            f"{where}.ca_file", "only applies to an https:// address; remove it or use https://"
        )
    return timeout, ca_file


def _parse_onepassword(raw: object) -> OnePasswordSettings:
    where = "onepassword"
    m = _mapping(raw, where, "a mapping with connect_url and token_env (or token_file)")
    _no_unknown_keys(m, where, ("connect_url", "token_env", "token_file", "timeout", "ca_file"))
    if "connect_url" not in m:
        raise SettingsFieldError(
            f"{where}.connect_url",
            "required: the address of your 1Password Connect server, e.g. http://op-connect:8080",
        )
    url = _parse_url(m["connect_url"], f"{where}.connect_url", "e.g. http://op-connect:8080")
    token_env, token_file = _token_source(m, where, "OP_CONNECT_TOKEN")
    timeout, ca_file = _http_options(m, where, url)
    return OnePasswordSettings(url, token_env, token_file, timeout, ca_file)


def _parse_doppler(raw: object) -> DopplerSettings:
    where = "doppler"
    m = _mapping(raw, where, "a mapping with token_env (or token_file) and optionally api_url")
    _no_unknown_keys(m, where, ("api_url", "token_env", "token_file", "timeout", "ca_file"))
    url = DOPPLER_API
    if "api_url" in m:
        url = _parse_url(m["api_url"], f"{where}.api_url", f"e.g. {DOPPLER_API}")
    token_env, token_file = _token_source(m, where, "DOPPLER_TOKEN")
    timeout, ca_file = _http_options(m, where, url)
    return DopplerSettings(url, token_env, token_file, timeout, ca_file)


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
    return _parse_url(raw, "vault.addr",
                      "e.g. http://127.0.0.1:8200 or https://vault.example.com:8200",
                      login="log in with vault.auth")


def _parse_url(raw: object, where: str, example: str, login: str = "give a token instead") -> str:
    if not isinstance(raw, str) or not raw:
        raise SettingsFieldError(where, f"must be a URL, {example}")
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise SettingsFieldError(where, f"is not a valid URL, {example}") from None
    if parts.scheme not in ("http", "https"):
        raise SettingsFieldError(where, f"must start with http:// or https://, {example}")
    if not parts.hostname:
        raise SettingsFieldError(where, f"needs a host name, {example}")
    if parts.username is not None or parts.password is not None:
        raise SettingsFieldError(where, f"remove the user:password@ part; {login}")
    if parts.query or parts.fragment:
        raise SettingsFieldError(where, f"remove the '?...' or '#...' part, {example}")
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
