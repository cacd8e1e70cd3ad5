"""Secret backends and the cache the request path reads them through.

    base.py         Secret (the value, redacted everywhere), SecretInfo, the SecretBackend protocol
    local.py        env:NAME and file:/PATH
    vault.py        vault:MOUNT/PATH#FIELD from OpenBao / HashiCorp Vault (aiohttp)
    onepassword.py  op://VAULT/ITEM/FIELD from a 1Password Connect server (aiohttp)
    doppler.py      doppler:PROJECT/CONFIG#NAME from Doppler's API (aiohttp)
    http.py         what the two share: one bounded JSON GET, the token from env or file
    preflight.py    what can be known of a reference without fetching it (load-time checks)
    cache.py        SecretCache: TTL with jitter, single flight, grace; build_secret_cache

References (``SecretRef``) and ``settings.secrets`` are plain data of the policy core
(egress/policy/secret_refs.py, secret_settings.py). See egress/errors.py for SecretNotFound /
SecretUnavailable.

What it may import: the policy core, egress.errors and the standard library; aiohttp only in
vault.py, onepassword.py, doppler.py and http.py, which are loaded when such a backend is built
or ``VaultBackend`` is asked for (so
importing this package, or loading a policy, never drags aiohttp in). Never mitmproxy,
dnspython, the proxy, ops or the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from egress.secrets.base import Secret, SecretBackend, SecretInfo
from egress.secrets.cache import CachedSecret, CacheStats, SecretCache, build_secret_cache
from egress.secrets.local import EnvBackend, FileBackend

if TYPE_CHECKING:
    from egress.secrets.vault import VaultBackend

__all__ = [
    "CacheStats",
    "CachedSecret",
    "EnvBackend",
    "FileBackend",
    "Secret",
    "SecretBackend",
    "SecretCache",
    "SecretInfo",
    "VaultBackend",
    "build_secret_cache",
]


def __getattr__(name: str) -> Any:
    if name == "VaultBackend":
        from egress.secrets.vault import VaultBackend

        return VaultBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
