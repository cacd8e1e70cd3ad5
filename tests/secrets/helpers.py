"""Shared bits of the secrets tests: Vault settings, a manual clock, small SecretBackends.

The backends are for what a real server cannot show on demand: a fetch held open until
the test releases it (to prove concurrency), and a backend that breaks its contract.
"""

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


class ManualClock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class GatedBackend:
    """Answers from ``values`` once ``gate`` is set; counts calls and closes."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.calls = 0
        self.closes = 0

    async def fetch(self, ref: SecretRef) -> Secret:
        self.calls += 1
        self.started.set()
        await asyncio.wait_for(self.gate.wait(), timeout=10)
        if ref.location not in self.values:
            raise SecretNotFound(f"{ref}: not in the test backend")
        return Secret(self.values[ref.location])

    async def close(self) -> None:
        self.closes += 1


class BrokenBackend:
    """Breaks the contract: raises a plain exception whose text holds a secret."""

    async def fetch(self, ref: SecretRef) -> Secret:
        raise KeyError("sk_live_leaked_in_exception_text")

    async def close(self) -> None:
        raise RuntimeError("close failed")
