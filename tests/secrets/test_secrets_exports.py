"""The public surface of egress.secrets, pinned, and what importing it costs."""

from __future__ import annotations

import subprocess
import sys

import egress.secrets


def test_exported_names() -> None:
    assert sorted(egress.secrets.__all__) == [
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
    for name in egress.secrets.__all__:
        assert getattr(egress.secrets, name).__module__.startswith("egress.secrets."), name


def test_importing_the_package_does_not_load_aiohttp() -> None:
    # aiohttp is the Vault backend's: loaded when a vault is configured, not before.
    code = ("import sys, egress.secrets; from egress.secrets import Secret, build_secret_cache; "
            "assert 'aiohttp' not in sys.modules; "
            "from egress.secrets import VaultBackend; assert 'aiohttp' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
