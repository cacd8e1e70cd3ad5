"""VaultBackend reading and writing KV v2 on a real OpenBao, and the server going away."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from egress.errors import SecretError, SecretNotFound, SecretUnavailable
from egress.policy.secret_refs import parse_secret_ref
from egress.policy.secret_settings import VaultSettings
from tests.openbao import OpenBao
from tests.secrets.helpers import REF, MakeVault, token_env

# -- reading -----------------------------------------------------------------------------


def _deleted(bao: OpenBao) -> None:
    bao.kv_put("skills/stripe", {"api_key": "v1"})
    bao.kv_put("skills/stripe", {"api_key": "v2"})
    bao.kv_delete("skills/stripe")  # version 1 is still there: the current one counts


def _destroyed(bao: OpenBao) -> None:
    version = bao.kv_put("skills/stripe", {"api_key": "v1"})
    bao.kv_destroy("skills/stripe", [version])


@pytest.mark.parametrize(
    "setup, ref, message",
    [
        pytest.param(
            lambda b: None,
            "vault:secret/skills/stripe#api_key",
            "no secret at this path",
            id="missing path",
        ),
        pytest.param(
            lambda b: b.kv_put("skills/stripe", {"other": "x"}),
            "vault:secret/skills/stripe#api_key",
            "no field 'api_key' at secret/skills/stripe",
            id="missing field",
        ),
        pytest.param(
            lambda b: b.kv_put("skills/stripe", {"api_key": ""}),
            "vault:secret/skills/stripe#api_key",
            "field 'api_key' is empty",
            id="empty field",
        ),
        pytest.param(
            lambda b: b.kv_put("skills/stripe", {"api_key": 42}),
            "vault:secret/skills/stripe#api_key",
            "field 'api_key' is not a string",
            id="field that is not a string",
        ),
        pytest.param(
            _deleted,
            "vault:secret/skills/stripe#api_key",
            "version 2 is deleted",
            id="deleted current version",
        ),
        pytest.param(
            _destroyed,
            "vault:secret/skills/stripe#api_key",
            "version 1 is destroyed",
            id="destroyed current version",
        ),
        pytest.param(
            lambda b: None,
            "vault:nomount/skills/stripe#api_key",
            "no secret at this path",
            id="mount that does not exist",
        ),
    ],
)
async def test_missing_secrets_are_not_found(
    bao: OpenBao, make_vault: MakeVault, setup: Callable[[OpenBao], None], ref: str, message: str
) -> None:
    setup(bao)
    vault = make_vault(token_env(bao), {"VAULT_TOKEN": bao.root_token})
    with pytest.raises(SecretNotFound) as info:
        await vault.fetch(parse_secret_ref(ref))
    assert str(info.value) == f"{ref}: {message}"


async def test_rotation_in_the_backend_is_read_on_the_next_fetch(
    bao: OpenBao, reader_token: str, make_vault: MakeVault
) -> None:
    vault = make_vault(token_env(bao), {"VAULT_TOKEN": reader_token})
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    assert (await vault.fetch(REF)).reveal() == "sk_1"
    bao.kv_put("skills/stripe", {"api_key": "sk_2"})
    assert (await vault.fetch(REF)).reveal() == "sk_2"


async def test_path_segments_are_escaped(bao: OpenBao, make_vault: MakeVault) -> None:
    bao.kv_put("équipe/clé+1", {"f": "odd-path"})
    vault = make_vault(token_env(bao), {"VAULT_TOKEN": bao.root_token})
    assert (
        await vault.fetch(parse_secret_ref("vault:secret/équipe/clé+1#f"))
    ).reveal() == "odd-path"


async def test_namespace_is_sent_with_every_request(bao: OpenBao, make_vault: MakeVault) -> None:
    bao.ok("POST", "sys/namespaces/team-a", {})
    bao.ok("POST", "team-a/sys/mounts/kv", {"type": "kv", "options": {"version": "2"}})
    bao.ok("POST", "team-a/kv/data/stripe", {"data": {"api_key": "sk_in_namespace"}})
    ref = parse_secret_ref("vault:kv/stripe#api_key")
    in_ns = make_vault(token_env(bao, namespace="team-a"), {"VAULT_TOKEN": bao.root_token})
    assert (await in_ns.fetch(ref)).reveal() == "sk_in_namespace"
    root_ns = make_vault(token_env(bao), {"VAULT_TOKEN": bao.root_token})
    with pytest.raises(SecretNotFound):
        await root_ns.fetch(ref)


# -- the server going away ---------------------------------------------------------------


async def test_killed_server_is_unavailable(
    bao: OpenBao, reader_token: str, make_vault: MakeVault
) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    vault = make_vault(token_env(bao), {"VAULT_TOKEN": reader_token})
    await vault.fetch(REF)
    assert await vault.ping() is True
    bao.kill()
    with pytest.raises(SecretUnavailable) as info:
        await vault.fetch(REF)
    assert (
        str(info.value)
        == f"vault:secret/skills/stripe#api_key: cannot connect to vault at {bao.addr}"
    )
    assert await vault.ping() is False


async def test_backend_recovers_when_the_server_comes_back(
    bao: OpenBao, make_vault: MakeVault
) -> None:
    vault = make_vault(token_env(bao), {"VAULT_TOKEN": bao.root_token})
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    await vault.fetch(REF)
    bao.kill()
    with pytest.raises(SecretUnavailable):
        await vault.fetch(REF)
    bao.restart()  # dev mode starts empty: same address and root token
    with pytest.raises(SecretNotFound):
        await vault.fetch(REF)
    bao.kv_put("skills/stripe", {"api_key": "sk_2"})
    assert (await vault.fetch(REF)).reveal() == "sk_2"


async def test_proxy_variables_are_ignored(
    bao: OpenBao, make_vault: MakeVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    # egress is itself the proxy skills use; its own Vault calls must never go through one.
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    bao.kv_put("skills/stripe", {"api_key": "sk_direct"})
    vault = make_vault(token_env(bao), {"VAULT_TOKEN": bao.root_token})
    assert (await vault.fetch(REF)).reveal() == "sk_direct"


async def test_sealed_server_is_unavailable(bao: OpenBao, make_vault: MakeVault) -> None:
    vault = make_vault(token_env(bao), {"VAULT_TOKEN": bao.root_token})
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    await vault.fetch(REF)
    bao.ok("PUT", "sys/seal")
    with pytest.raises(SecretUnavailable) as info:
        await vault.fetch(REF)
    assert str(info.value) == (
        "vault:secret/skills/stripe#api_key: "
        "vault read failed with HTTP 503 (sealed or in maintenance)"
    )
    assert await vault.ping() is False


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


async def test_server_that_does_not_answer_times_out(
    silent_port: int, make_vault: MakeVault
) -> None:
    vault = make_vault(
        VaultSettings(addr=f"http://127.0.0.1:{silent_port}", token_env="T", timeout=0.3),
        {"T": "some-token"},
    )
    with pytest.raises(SecretUnavailable) as info:
        await asyncio.wait_for(vault.fetch(REF), timeout=10)
    assert str(info.value) == (
        f"vault token lookup: vault at http://127.0.0.1:{silent_port} did not answer within 0.3s"
    )


async def test_missing_ca_file_is_unavailable(make_vault: MakeVault, tmp_path: Path) -> None:
    vault = make_vault(
        VaultSettings(addr="https://127.0.0.1:1", token_env="T", ca_file=str(tmp_path / "ca.pem")),
        {"T": "x"},
    )
    with pytest.raises(SecretUnavailable) as info:
        await vault.fetch(REF)
    assert str(info.value) == f"vault token lookup: cannot load vault.ca_file {tmp_path}/ca.pem"


async def test_closed_backend_is_unavailable(bao: OpenBao, make_vault: MakeVault) -> None:
    vault = make_vault(token_env(bao), {"VAULT_TOKEN": bao.root_token})
    await vault.close()
    with pytest.raises(SecretUnavailable, match="the vault backend is closed"):
        await vault.fetch(REF)


async def test_other_schemes_are_refused(make_vault: MakeVault) -> None:
    vault = make_vault(VaultSettings(addr="http://127.0.0.1:1", token_env="T"), {})
    with pytest.raises(SecretUnavailable) as info:
        await vault.fetch(parse_secret_ref("env:T"))
    assert str(info.value) == "env:T: the vault backend cannot read env: references"


# -- writing -----------------------------------------------------------------------------


async def test_write_creates_a_secret(bao: OpenBao, make_vault: MakeVault) -> None:
    vault = make_vault(token_env(bao), {"VAULT_TOKEN": bao.create_token(["egress-write"])})
    await vault.write(REF, "sk_written")
    assert (await vault.fetch(REF)).reveal() == "sk_written"


async def test_write_keeps_the_other_fields(bao: OpenBao, make_vault: MakeVault) -> None:
    bao.kv_put("skills/stripe", {"api_key": "old", "account": "acct_1"})
    vault = make_vault(token_env(bao), {"VAULT_TOKEN": bao.create_token(["egress-write"])})
    await vault.write(REF, "new")
    _, answer = bao.api("GET", "secret/data/skills/stripe")
    assert answer["data"]["data"] == {"api_key": "new", "account": "acct_1"}
    assert answer["data"]["metadata"]["version"] == 2


async def test_write_over_a_deleted_version(bao: OpenBao, make_vault: MakeVault) -> None:
    _deleted(bao)
    vault = make_vault(token_env(bao), {"VAULT_TOKEN": bao.root_token})
    await vault.write(REF, "v3")
    assert (await vault.fetch(REF)).reveal() == "v3"


async def test_write_without_permission_is_refused(
    bao: OpenBao, reader_token: str, make_vault: MakeVault
) -> None:
    vault = make_vault(token_env(bao), {"VAULT_TOKEN": reader_token})
    bao.kv_put("skills/stripe", {"api_key": "old"})
    with pytest.raises(SecretUnavailable) as info:
        await vault.write(REF, "new")
    assert str(info.value) == (
        "vault:secret/skills/stripe#api_key: vault refused access (403): the token may be expired "
        "or revoked, or its policy does not allow update on secret/data/skills/stripe"
    )
    assert (await vault.fetch(REF)).reveal() == "old"


# -- the whole surface keeps secrets out of messages ---------------------------------------


async def test_no_error_text_contains_the_token_or_the_value(
    bao: OpenBao, make_vault: MakeVault
) -> None:
    token = bao.create_token(["egress-read"])
    bao.kv_put("skills/stripe", {"api_key": "sk_live_must_not_leak"})
    vault = make_vault(token_env(bao), {"VAULT_TOKEN": token})
    messages: list[str] = []
    for ref in ("vault:secret/skills/stripe#nope", "vault:secret/none#api_key"):
        with pytest.raises(SecretError) as info:
            await vault.fetch(parse_secret_ref(ref))
        messages.append(str(info.value))
    bao.revoke_token(token)
    with pytest.raises(SecretError) as info:
        await vault.fetch(REF)
    messages.append(str(info.value))
    assert len(messages) == 3
    for text in messages:
        assert token not in text and "sk_live_must_not_leak" not in text
