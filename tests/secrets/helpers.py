"""Shared bits of the secrets tests: Vault settings (the clock and the gated or broken
backend are tests/fakes.py's)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from egress.errors import SecretNotFound
from egress.policy.secret_refs import SecretRef, parse_secret_ref
from egress.policy.secret_settings import VaultSettings
from egress.secrets import Secret, VaultBackend
from tests.openbao import OpenBao

MakeVault = Callable[..., VaultBackend]
"""The ``make_vault`` fixture: (settings, environ=None) -> a VaultBackend closed after the test."""

REF = parse_secret_ref("vault:secret/skills/stripe#api_key")


def token_env(bao: OpenBao, *, namespace: str | None = None) -> VaultSettings:
    """Settings for ``bao`` with the token in environment variable VAULT_TOKEN."""
    return VaultSettings(addr=bao.addr, token_env="VAULT_TOKEN", namespace=namespace)
