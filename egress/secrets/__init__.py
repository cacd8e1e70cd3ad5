"""Secrets for credential injection: references, backends (Vault/OpenBao, env, file), cache.

The request path asks a SecretBroker (``build_broker(settings)``) for a SecretRef parsed
from the policy (``parse_secret_ref``) and gets a CachedSecret whose value only
``Secret.reveal()`` gives out. See egress/errors.py for SecretNotFound / SecretUnavailable.
"""

from __future__ import annotations

from egress.secrets.base import Secret, SecretBackend, SecretRef, parse_secret_ref
from egress.secrets.cache import BrokerStats, CachedSecret, SecretBroker, build_broker
from egress.secrets.config import (
    CacheSettings,
    SecretSettings,
    SettingsFieldError,
    VaultSettings,
    parse_secret_settings,
)
from egress.secrets.local import EnvBackend, FileBackend
from egress.secrets.vault import VaultBackend

__all__ = [
    "BrokerStats",
    "CacheSettings",
    "CachedSecret",
    "EnvBackend",
    "FileBackend",
    "Secret",
    "SecretBackend",
    "SecretBroker",
    "SecretRef",
    "SecretSettings",
    "SettingsFieldError",
    "VaultBackend",
    "VaultSettings",
    "build_broker",
    "parse_secret_ref",
    "parse_secret_settings",
]
