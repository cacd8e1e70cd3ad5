"""The public surface of egress.secrets, pinned: the addon and policy loader import these."""

from __future__ import annotations

import egress.secrets


def test_exported_names() -> None:
    assert sorted(egress.secrets.__all__) == [
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
    for name in egress.secrets.__all__:
        assert getattr(egress.secrets, name).__module__.startswith("egress.secrets."), name
