"""VaultBackend authentication against a real OpenBao: token from env or file, AppRole,
re-authentication after a 403, token renewal."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from egress.errors import SecretUnavailable
from egress.policy.secret_settings import VaultSettings
from tests.openbao import OpenBao
from tests.secrets.helpers import REF, MakeVault, token_env


async def test_token_from_environment(
    bao: OpenBao, reader_token: str, make_vault: MakeVault
) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_test_env"})
    vault = make_vault(token_env(bao), {"VAULT_TOKEN": reader_token})
    assert (await vault.fetch(REF)).reveal() == "sk_test_env"
    assert (await vault.fetch(REF)).reveal() == "sk_test_env"
    assert vault.logins == 1  # the token is read once, not per request


async def test_token_from_file(
    bao: OpenBao, reader_token: str, make_vault: MakeVault, tmp_path: Path
) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_test_file"})
    token_file = tmp_path / "vault-token"
    token_file.write_text(reader_token + "\n")
    vault = make_vault(VaultSettings(addr=bao.addr, token_file=str(token_file)))
    assert (await vault.fetch(REF)).reveal() == "sk_test_file"


async def test_approle_login(bao: OpenBao, make_vault: MakeVault) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_test_approle"})
    role = bao.create_approle()
    vault = make_vault(
        VaultSettings(
            addr=bao.addr,
            approle_role_id=role.role_id,
            approle_secret_id_file=str(role.secret_id_file),
        )
    )
    assert (await vault.fetch(REF)).reveal() == "sk_test_approle"
    assert vault.logins == 1


async def test_approle_on_a_custom_mount(bao: OpenBao, make_vault: MakeVault) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_test_mount"})
    role = bao.create_approle(mount="machines", role="proxy")
    vault = make_vault(
        VaultSettings(
            addr=bao.addr,
            approle_role_id=role.role_id,
            approle_secret_id_file=str(role.secret_id_file),
            approle_mount="machines",
        )
    )
    assert (await vault.fetch(REF)).reveal() == "sk_test_mount"


async def test_approle_relogs_in_after_its_token_is_revoked(
    bao: OpenBao, make_vault: MakeVault
) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    role = bao.create_approle()
    vault = make_vault(
        VaultSettings(
            addr=bao.addr,
            approle_role_id=role.role_id,
            approle_secret_id_file=str(role.secret_id_file),
        )
    )
    assert (await vault.fetch(REF)).reveal() == "sk_1"
    bao.revoke_logins()  # the token egress holds now gets 403
    bao.kv_put("skills/stripe", {"api_key": "sk_2"})
    assert (await vault.fetch(REF)).reveal() == "sk_2"
    assert vault.logins == 2


async def test_token_file_is_reread_after_a_403(
    bao: OpenBao, make_vault: MakeVault, tmp_path: Path
) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    old, new = bao.create_token(["egress-read"]), bao.create_token(["egress-read"])
    token_file = tmp_path / "vault-token"
    token_file.write_text(old)
    vault = make_vault(VaultSettings(addr=bao.addr, token_file=str(token_file)))
    assert (await vault.fetch(REF)).reveal() == "sk_1"
    bao.revoke_token(old)
    token_file.write_text(new)  # what an operator or vault agent does on rotation
    assert (await vault.fetch(REF)).reveal() == "sk_1"
    assert vault.logins == 2


async def test_revoked_token_that_is_not_replaced_fails_closed(
    bao: OpenBao, reader_token: str, make_vault: MakeVault
) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    vault = make_vault(token_env(bao), {"VAULT_TOKEN": reader_token})
    await vault.fetch(REF)
    bao.revoke_token(reader_token)
    with pytest.raises(SecretUnavailable) as info:
        await vault.fetch(REF)
    assert str(info.value) == (
        "vault:secret/skills/stripe#api_key: vault refused access (403): the token may be expired "
        "or revoked, or its policy does not allow read on secret/data/skills/stripe"
    )
    assert reader_token not in str(info.value)


async def test_token_without_a_policy_for_the_path_is_refused(
    bao: OpenBao, make_vault: MakeVault
) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    vault = make_vault(token_env(bao), {"VAULT_TOKEN": bao.create_token(["default"])})
    with pytest.raises(SecretUnavailable, match=r"vault refused access \(403\)"):
        await vault.fetch(REF)


@pytest.mark.parametrize(
    "settings, environ, message",
    [
        pytest.param(
            lambda b, p: VaultSettings(addr=b.addr, token_env="VAULT_TOKEN"),
            {},
            "vault.auth.token_env: environment variable VAULT_TOKEN is not set",
            id="token variable not set",
        ),
        pytest.param(
            lambda b, p: VaultSettings(addr=b.addr, token_file=str(p / "missing")),
            {},
            "vault.auth.token_file {tmp}/missing: no such file",
            id="token file missing",
        ),
        pytest.param(
            lambda b, p: VaultSettings(
                addr=b.addr, approle_role_id="nope", approle_secret_id_file=str(p / "secret-id")
            ),
            {},
            "vault approle login refused (HTTP 400): check role_id and the secret_id in "
            "{tmp}/secret-id",
            id="approle login with a wrong secret_id",
        ),
    ],
)
async def test_authentication_failures_are_unavailable(
    bao: OpenBao,
    make_vault: MakeVault,
    tmp_path: Path,
    settings: Callable[[OpenBao, Path], VaultSettings],
    environ: dict[str, str],
    message: str,
) -> None:
    bao.create_approle()  # the mount exists, so the wrong credentials are what fails
    (tmp_path / "secret-id").write_text("not-the-secret-id\n")
    vault = make_vault(settings(bao, tmp_path), environ)
    with pytest.raises(SecretUnavailable) as info:
        await vault.fetch(REF)
    assert str(info.value) == message.format(tmp=tmp_path)


async def test_renewable_token_is_renewed_before_it_expires(
    bao: OpenBao, make_vault: MakeVault
) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    short = bao.create_token(["egress-read"], ttl="3s")
    vault = make_vault(token_env(bao), {"VAULT_TOKEN": short})
    assert (await vault.fetch(REF)).reveal() == "sk_1"
    # Unrenewed, the token would be dead after 3 s; the renewer keeps it alive.
    await asyncio.sleep(5)
    assert vault.renewals >= 2
    assert (await vault.fetch(REF)).reveal() == "sk_1"
    assert vault.logins == 1


async def test_approle_token_near_its_max_ttl_is_replaced_by_a_new_login(
    bao: OpenBao, make_vault: MakeVault
) -> None:
    bao.kv_put("skills/stripe", {"api_key": "sk_1"})
    role = bao.create_approle(token_ttl="3s", token_max_ttl="4s")
    settings = VaultSettings(
        addr=bao.addr, approle_role_id=role.role_id, approle_secret_id_file=str(role.secret_id_file)
    )
    vault = make_vault(settings)
    assert (await vault.fetch(REF)).reveal() == "sk_1"
    # At 2 s a renewal still gives 2 s; at ~3.3 s only ~0.7 s is left before the max TTL, so
    # the renewer logs in again, in the background, before any request meets a 403.
    await asyncio.sleep(4.5)
    assert vault.renewals >= 1
    assert vault.logins >= 2
    assert (await vault.fetch(REF)).reveal() == "sk_1"
