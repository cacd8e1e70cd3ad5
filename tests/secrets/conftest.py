"""Fixtures for the secrets tests: a real OpenBao per test, its tokens, a manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

import pytest

from egress.policy.secret_settings import VaultSettings
from egress.secrets import VaultBackend
from tests.openbao import READ_POLICY, WRITE_POLICY, OpenBao, openbao_server
from tests.fakes import FakeClock


@pytest.fixture
def bao(tmp_path: Path) -> Iterator[OpenBao]:
    """A fresh OpenBao with policies egress-read (read secret/*) and egress-write."""
    workdir = tmp_path / "bao"
    workdir.mkdir()
    with openbao_server(workdir) as server:
        server.put_policy("egress-read", READ_POLICY)
        server.put_policy("egress-write", WRITE_POLICY)
        yield server


@pytest.fixture
def reader_token(bao: OpenBao) -> str:
    """A token that may read secret/data/* and nothing else (plus the default policy)."""
    return bao.create_token(["egress-read"])


@pytest.fixture
async def make_vault() -> AsyncIterator[Callable[..., VaultBackend]]:
    """Build VaultBackends that are closed (sessions, renewal tasks) after the test."""
    made: list[VaultBackend] = []

    def make(settings: VaultSettings, environ: Mapping[str, str] | None = None) -> VaultBackend:
        backend = VaultBackend(settings, environ=environ)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
