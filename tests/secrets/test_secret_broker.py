"""SecretCache: TTL with jitter, single flight, grace window, fail closed.

Most cases run on a real OpenBao and move the broker's clock by hand, so TTL and grace are
exact without sleeping; the backend calls are counted by the broker's own stats.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from egress.errors import SecretNotFound, SecretUnavailable
from egress.policy.secret_refs import parse_secret_ref
from egress.policy.secret_settings import (
    CacheSettings,
    SecretSettings,
    VaultSettings,
    parse_secret_settings,
)
from egress.secrets import CachedSecret, EnvBackend, SecretCache, VaultBackend, build_secret_cache
from tests.openbao import OpenBao
from tests.fakes import FakeClock
from tests.fakes import FakeSecretBackend

REF = parse_secret_ref("vault:secret/skills/stripe#api_key")
CACHE = CacheSettings(ttl=60.0, jitter=0.0, grace=300.0)


@pytest.fixture
async def broker_for(
    bao: OpenBao, reader_token: str, clock: FakeClock
) -> AsyncIterator[Callable[[CacheSettings], SecretCache]]:
    """Brokers over a VaultBackend on the test's OpenBao, with the manual clock."""
    made: list[SecretCache] = []

    def make(cache: CacheSettings = CACHE) -> SecretCache:
        vault = VaultBackend(
            VaultSettings(addr=bao.addr, token_env="VAULT_TOKEN"),
            environ={"VAULT_TOKEN": reader_token},
        )
        broker = SecretCache({"vault": vault}, cache, clock=clock, rand=lambda: 0.5)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.close()


async def test_value_is_served_from_the_cache_within_ttl(
    bao: OpenBao, broker_for: Callable[[CacheSettings], SecretCache], clock: FakeClock
) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    broker = broker_for(CACHE)
    for _ in range(5):
        got = await broker.get(REF)
        assert (got.secret.reveal(), got.stale) == ("sk_1", False)
        clock.advance(10)  # 0, 10, ... 40: all within the 60 s ttl
    assert (broker.stats.fetches, broker.stats.hits) == (1, 4)


async def test_rotation_is_picked_up_after_ttl(
    bao: OpenBao, broker_for: Callable[[CacheSettings], SecretCache], clock: FakeClock
) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    broker = broker_for(CACHE)
    assert (await broker.get(REF)).secret.reveal() == "sk_1"
    bao.kv_put("skills/stripe", {"api_key": "sk_2"})
    clock.advance(59.9)
    assert (await broker.get(REF)).secret.reveal() == "sk_1"  # still fresh
    clock.advance(0.2)
    assert (await broker.get(REF)).secret.reveal() == "sk_2"
    assert broker.stats.fetches == 2


async def test_rotation_is_picked_up_with_the_real_clock(bao: OpenBao, reader_token: str) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    vault = VaultBackend(VaultSettings(addr=bao.addr, token_env="T"), environ={"T": reader_token})
    broker = SecretCache({"vault": vault}, CacheSettings(ttl=0.5, jitter=0.0, grace=5))
    try:
        assert (await broker.get(REF)).secret.reveal() == "sk_1"
        bao.kv_put("skills/stripe", {"api_key": "sk_2"})
        seen = "sk_1"
        for _ in range(40):  # bounded: 40 x 0.1 s, the ttl is 0.5 s
            await asyncio.sleep(0.1)
            seen = (await broker.get(REF)).secret.reveal()
            if seen == "sk_2":
                break
        assert seen == "sk_2"
    finally:
        await broker.close()


async def test_concurrent_gets_share_one_fetch(
    bao: OpenBao, broker_for: Callable[[CacheSettings], SecretCache]
) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    broker = broker_for(CACHE)
    results = await asyncio.gather(*(broker.get(REF) for _ in range(20)))
    assert {r.secret.reveal() for r in results} == {"sk_1"}
    assert broker.stats.fetches == 1


async def test_callers_arriving_during_a_fetch_wait_for_it(clock: FakeClock) -> None:
    backend = FakeSecretBackend({"K": "v"}, gated=True)
    broker = SecretCache({"env": backend}, CACHE, clock=clock)
    ref = parse_secret_ref("env:K")
    first = asyncio.create_task(broker.get(ref))
    await asyncio.wait_for(backend.started.wait(), timeout=5)
    late = [asyncio.create_task(broker.get(ref)) for _ in range(19)]
    await asyncio.sleep(0)
    assert not any(t.done() for t in [first, *late])
    backend.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *late), timeout=5)
    assert [r.secret.reveal() for r in results] == ["v"] * 20
    assert backend.calls == 1
    await broker.close()


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(clock: FakeClock) -> None:
    backend = FakeSecretBackend({"K": "v"}, gated=True)
    broker = SecretCache({"env": backend}, CACHE, clock=clock)
    ref = parse_secret_ref("env:K")
    impatient = asyncio.create_task(broker.get(ref))
    await asyncio.wait_for(backend.started.wait(), timeout=5)
    patient = asyncio.create_task(broker.get(ref))
    await asyncio.sleep(0)
    impatient.cancel()
    backend.gate.set()
    assert (await asyncio.wait_for(patient, timeout=5)).secret.reveal() == "v"
    assert impatient.cancelled()
    assert (await broker.get(ref)).secret.reveal() == "v"  # cached by the shared fetch
    assert backend.calls == 1
    await broker.close()


async def test_backend_down_within_grace_serves_the_stale_value(
    bao: OpenBao, broker_for: Callable[[CacheSettings], SecretCache], clock: FakeClock
) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    broker = broker_for(CACHE)
    await broker.get(REF)
    bao.kill()
    clock.advance(299)  # expired (ttl 60), fetched 299 s ago: within grace 300
    got = await broker.get(REF)
    assert got == CachedSecret(got.secret, stale=True)
    assert got.secret.reveal() == "sk_1"
    assert (broker.stats.fetches, broker.stats.failures, broker.stats.stale_uses) == (2, 1, 1)


async def test_backend_down_past_grace_fails_closed(
    bao: OpenBao, broker_for: Callable[[CacheSettings], SecretCache], clock: FakeClock
) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    broker = broker_for(CACHE)
    await broker.get(REF)
    bao.kill()
    clock.advance(300)  # grace counts from the fetch: 300 s is past it
    with pytest.raises(SecretUnavailable) as info:
        await broker.get(REF)
    assert (
        str(info.value)
        == f"vault:secret/skills/stripe#api_key: cannot connect to vault at {bao.addr}"
    )
    assert broker.stats.stale_uses == 0


async def test_grace_zero_never_serves_stale(
    bao: OpenBao, broker_for: Callable[[CacheSettings], SecretCache], clock: FakeClock
) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    broker = broker_for(CacheSettings(ttl=60, jitter=0, grace=0))
    await broker.get(REF)
    bao.kill()
    clock.advance(61)
    with pytest.raises(SecretUnavailable):
        await broker.get(REF)


async def test_cold_start_with_backend_down_fails_closed(
    bao: OpenBao, broker_for: Callable[[CacheSettings], SecretCache]
) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    bao.kill()
    broker = broker_for(CACHE)
    with pytest.raises(SecretUnavailable, match="cannot connect to vault"):
        await broker.get(REF)
    assert (broker.stats.fetches, broker.stats.failures) == (1, 1)


async def test_backend_back_after_an_outage_serves_fresh_values(
    bao: OpenBao, clock: FakeClock
) -> None:
    # The root token: the dev server forgets every other token when it restarts.
    vault = VaultBackend(VaultSettings(addr=bao.addr, token_env="T"), environ={"T": bao.root_token})
    broker = SecretCache({"vault": vault}, CACHE, clock=clock)
    try:
        bao.kv_put("skills/stripe", {"api_key": "sk_1"})
        await broker.get(REF)
        bao.kill()
        clock.advance(61)
        assert (await broker.get(REF)).stale is True
        bao.restart()
        bao.kv_put("skills/stripe", {"api_key": "sk_2"})
        clock.advance(1)
        got = await broker.get(REF)
        assert (got.secret.reveal(), got.stale) == ("sk_2", False)
    finally:
        await broker.close()


async def test_not_found_is_never_papered_over(
    bao: OpenBao, broker_for: Callable[[CacheSettings], SecretCache], clock: FakeClock
) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    broker = broker_for(CACHE)
    await broker.get(REF)
    bao.kv_delete("skills/stripe")
    clock.advance(61)
    with pytest.raises(SecretNotFound, match="version 1 is deleted"):
        await broker.get(REF)
    # The deleted value is forgotten: an outage now cannot bring it back as stale.
    bao.kill()
    with pytest.raises(SecretUnavailable):
        await broker.get(REF)
    assert broker.stats.stale_uses == 0


@pytest.mark.parametrize(
    "rand, age, fresh",
    [
        pytest.param(0.0, 89.9, True, id="shortest jitter still fresh just before ttl x 0.9"),
        pytest.param(0.0, 90.1, False, id="shortest jitter expires at ttl x 0.9"),
        pytest.param(0.5, 99.9, True, id="middle jitter fresh just before ttl"),
        pytest.param(0.5, 100.1, False, id="middle jitter expires at ttl"),
        pytest.param(0.999, 109.8, True, id="longest jitter fresh until about ttl x 1.1"),
        pytest.param(0.999, 110.0, False, id="longest jitter expires by ttl x 1.1"),
    ],
)
async def test_jitter_spreads_expiry_around_ttl(
    clock: FakeClock, rand: float, age: float, fresh: bool
) -> None:
    backend = EnvBackend({"K": "v"})
    broker = SecretCache(
        {"env": backend},
        CacheSettings(ttl=100, jitter=0.1, grace=0),
        clock=clock,
        rand=lambda: rand,
    )
    ref = parse_secret_ref("env:K")
    await broker.get(ref)
    clock.advance(age)
    await broker.get(ref)
    assert broker.stats.hits == (1 if fresh else 0)
    assert broker.stats.fetches == (1 if fresh else 2)


async def test_unconfigured_scheme_fails_closed(clock: FakeClock) -> None:
    broker = build_secret_cache(SecretSettings(), environ={})
    with pytest.raises(SecretUnavailable) as info:
        await broker.get(REF)
    assert str(info.value) == (
        "vault:secret/skills/stripe#api_key: no vault backend is configured; "
        "add settings.secrets.vault"
    )
    await broker.close()


async def test_a_backend_breaking_its_contract_fails_closed_without_echoing(
    clock: FakeClock,
) -> None:
    broker = SecretCache({"vault": FakeSecretBackend(broken="contract")}, CACHE, clock=clock)
    with pytest.raises(SecretUnavailable) as info:
        await broker.get(REF)
    assert (
        str(info.value) == "vault:secret/skills/stripe#api_key: the vault backend failed (KeyError)"
    )
    await broker.close()  # the backend's failing close is logged, not raised


async def test_close_closes_each_backend_once_and_refuses_later_gets(clock: FakeClock) -> None:
    shared = FakeSecretBackend({}, gated=True)
    broker = SecretCache({"env": shared, "file": shared}, CACHE, clock=clock)
    await broker.close()
    assert shared.closes == 1
    with pytest.raises(SecretUnavailable) as info:
        await broker.get(parse_secret_ref("env:K"))
    assert str(info.value) == "env:K: the secret cache is closed"


async def test_build_broker_wires_env_file_and_vault(
    bao: OpenBao, reader_token: str, tmp_path: Path
) -> None:
    bao.kv_put("skills/stripe", {"api_key": "from-vault"})
    (tmp_path / "key").write_text("from-file\n")
    settings = parse_secret_settings(
        {
            "vault": {"addr": bao.addr, "auth": {"token_env": "VAULT_TOKEN"}},
            "cache": {"ttl": 30},
        }
    )
    broker = build_secret_cache(settings, environ={"VAULT_TOKEN": reader_token, "STRIPE": "from-env"})
    try:
        for text, expected in [
            ("vault:secret/skills/stripe#api_key", "from-vault"),
            ("env:STRIPE", "from-env"),
            (f"file:{tmp_path}/key", "from-file"),
        ]:
            assert (await broker.get(parse_secret_ref(text))).secret.reveal() == expected
    finally:
        await broker.close()
