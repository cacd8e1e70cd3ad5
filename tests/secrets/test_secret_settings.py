"""parse_secret_settings: settings.secrets from the policy YAML, with field-named errors."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from egress.policy.secret_settings import (
    CacheSettings,
    SecretSettings,
    SettingsFieldError,
    VaultSettings,
    parse_secret_settings,
)

ADDR = "http://127.0.0.1:8200"
AUTH_CHOICE = "choose one of token_env, token_file or approle, e.g. {token_env: VAULT_TOKEN}"
URL_EXAMPLE = "e.g. http://127.0.0.1:8200 or https://vault.example.com:8200"


def vault(**extra: Any) -> dict[str, Any]:
    return {"vault": {"addr": ADDR, "auth": {"token_env": "VAULT_TOKEN"}, **extra}}


@pytest.mark.parametrize(
    "raw, expected",
    [
        pytest.param(None, SecretSettings(), id="absent section gives defaults"),
        pytest.param({}, SecretSettings(), id="empty section gives defaults"),
        pytest.param(
            yaml.safe_load(
                'vault: {addr: "http://127.0.0.1:8200", auth: {token_env: VAULT_TOKEN}}'
            ),
            SecretSettings(vault=VaultSettings(addr=ADDR, token_env="VAULT_TOKEN")),
            id="DESIGN.md example",
        ),
        pytest.param(
            {
                "vault": {
                    "addr": "https://vault.example.com:8200/",
                    "auth": {"token_file": "/run/t"},
                    "namespace": "team-a",
                    "timeout": 2,
                    "ca_file": "/etc/ca.pem",
                }
            },
            SecretSettings(
                vault=VaultSettings(
                    addr="https://vault.example.com:8200",
                    token_file="/run/t",
                    namespace="team-a",
                    timeout=2.0,
                    ca_file="/etc/ca.pem",
                )
            ),
            id="token file, namespace, timeout, ca_file; trailing slash dropped",
        ),
        pytest.param(
            {
                "vault": {
                    "addr": ADDR,
                    "auth": {"approle": {"role_id": "r-1", "secret_id_file": "/s"}},
                }
            },
            SecretSettings(
                vault=VaultSettings(
                    addr=ADDR,
                    approle_role_id="r-1",
                    approle_secret_id_file="/s",
                    approle_mount="approle",
                )
            ),
            id="approle with the default mount",
        ),
        pytest.param(
            {
                "vault": {
                    "addr": ADDR,
                    "auth": {
                        "approle": {
                            "role_id": "r-1",
                            "secret_id_file": "/s",
                            "mount": "teams/egress",
                        }
                    },
                }
            },
            SecretSettings(
                vault=VaultSettings(
                    addr=ADDR,
                    approle_role_id="r-1",
                    approle_secret_id_file="/s",
                    approle_mount="teams/egress",
                )
            ),
            id="approle on a nested mount",
        ),
        pytest.param(
            {"cache": {"ttl": 30, "jitter": 0, "grace": 0}},
            SecretSettings(cache=CacheSettings(ttl=30.0, jitter=0.0, grace=0.0)),
            id="cache settings, grace off",
        ),
        pytest.param(
            {"cache": {"ttl": 0.5}},
            SecretSettings(cache=CacheSettings(ttl=0.5)),
            id="cache keys default one by one",
        ),
    ],
)
def test_valid_settings(raw: object, expected: SecretSettings) -> None:
    assert parse_secret_settings(raw) == expected


@pytest.mark.parametrize(
    "raw, field, message",
    [
        pytest.param(
            [], "", "must be a mapping with vault, onepassword, doppler, cache, max_age", id="section not a mapping"
        ),
        pytest.param(
            {"vualt": {}},
            "vualt",
            "unknown key; expected one of: cache, doppler, max_age, onepassword, vault",
            id="unknown top-level key",
        ),
        pytest.param(
            {"vault": None},
            "vault",
            "must be a mapping with 'addr' and 'auth'",
            id="empty vault section",
        ),
        pytest.param(
            {"vault": {"auth": {"token_env": "T"}}},
            "vault.addr",
            "required: the Vault/OpenBao address, e.g. http://127.0.0.1:8200",
            id="missing addr",
        ),
        pytest.param(
            vault(addr="127.0.0.1:8200"),
            "vault.addr",
            f"must start with http:// or https://, {URL_EXAMPLE}",
            id="addr without scheme",
        ),
        pytest.param(
            vault(addr=8200), "vault.addr", f"must be a URL, {URL_EXAMPLE}", id="addr not a string"
        ),
        pytest.param(
            vault(addr="http://"),
            "vault.addr",
            f"needs a host name, {URL_EXAMPLE}",
            id="addr without host",
        ),
        pytest.param(
            vault(addr="http://h:99999"),
            "vault.addr",
            f"is not a valid URL, {URL_EXAMPLE}",
            id="addr with bad port",
        ),
        pytest.param(
            vault(addr="http://u:p@h:8200"),
            "vault.addr",
            "remove the user:password@ part; log in with vault.auth",
            id="addr with credentials",
        ),
        pytest.param(
            vault(addr="http://h:8200/?x=1"),
            "vault.addr",
            f"remove the '?...' or '#...' part, {URL_EXAMPLE}",
            id="addr with query",
        ),
        pytest.param(
            vault(timeout=0),
            "vault.timeout",
            "must be a number of seconds greater than 0, e.g. 5",
            id="zero timeout",
        ),
        pytest.param(
            vault(timeout="5s"),
            "vault.timeout",
            "must be a number of seconds greater than 0, e.g. 5",
            id="timeout as text",
        ),
        pytest.param(
            vault(namespace=""),
            "vault.namespace",
            "must be a namespace name, e.g. team-a",
            id="empty namespace",
        ),
        pytest.param(
            vault(ca_file="/etc/ca.pem"),
            "vault.ca_file",
            "only applies to an https:// addr; remove it or use https://",
            id="ca_file with http",
        ),
        pytest.param(
            vault(tls_skip_verify=True),
            "vault.tls_skip_verify",
            "unknown key; expected one of: addr, auth, ca_file, namespace, timeout",
            id="unknown vault key",
        ),
        pytest.param({"vault": {"addr": ADDR}}, "vault.auth", AUTH_CHOICE, id="missing auth"),
        pytest.param(vault(auth={}), "vault.auth", AUTH_CHOICE, id="empty auth"),
        pytest.param(
            vault(auth="VAULT_TOKEN"),
            "vault.auth",
            f"must be {AUTH_CHOICE}",
            id="auth not a mapping",
        ),
        pytest.param(
            vault(auth={"token_env": "A", "token_file": "/t"}),
            "vault.auth",
            "choose only one of token_env, token_file or approle (found: token_env, token_file)",
            id="two auth methods",
        ),
        pytest.param(
            vault(auth={"token": "hvs.abc"}),
            "vault.auth.token",
            "tokens do not belong in policy files: put it in an environment variable "
            "(token_env: NAME) or a file (token_file: PATH)",
            id="inline token refused",
        ),
        pytest.param(
            vault(auth={"kubernetes": {}}),
            "vault.auth.kubernetes",
            "unknown key; expected one of: approle, token_env, token_file",
            id="unknown auth method",
        ),
        pytest.param(
            vault(auth={"token_env": "hvs.CAESIJ"}),
            "vault.auth.token_env",
            "must be the name of an environment variable, e.g. VAULT_TOKEN",
            id="token pasted into token_env",
        ),
        pytest.param(
            vault(auth={"token_file": ""}),
            "vault.auth.token_file",
            "must be a path to a file holding the token",
            id="empty token_file",
        ),
        pytest.param(
            vault(auth={"approle": {"role_id": "r", "secret_id": "s"}}),
            "vault.auth.approle.secret_id",
            "secret ids do not belong in policy files: put it in a file and name it with "
            "secret_id_file",
            id="inline secret_id refused",
        ),
        pytest.param(
            vault(auth={"approle": {"secret_id_file": "/s"}}),
            "vault.auth.approle.role_id",
            "required: the AppRole role_id (a string)",
            id="approle without role_id",
        ),
        pytest.param(
            vault(auth={"approle": {"role_id": "r"}}),
            "vault.auth.approle.secret_id_file",
            "required: a path to a file holding the AppRole secret_id",
            id="approle without secret_id_file",
        ),
        pytest.param(
            vault(
                auth={"approle": {"role_id": "r", "secret_id_file": "/s", "mount": "auth/approle"}}
            ),
            "vault.auth.approle.mount",
            "must be the auth mount path without 'auth/', e.g. approle",
            id="approle mount with auth prefix",
        ),
        pytest.param(
            vault(auth={"approle": {"role_id": "r", "secret_id_file": "/s", "x": 1}}),
            "vault.auth.approle.x",
            "unknown key; expected one of: mount, role_id, secret_id_file",
            id="unknown approle key",
        ),
        pytest.param(
            {"cache": {"ttl": 0}},
            "cache.ttl",
            "must be a number of seconds greater than 0, e.g. 300",
            id="zero ttl",
        ),
        pytest.param(
            {"cache": {"ttl": True}},
            "cache.ttl",
            "must be a number of seconds greater than 0, e.g. 300",
            id="boolean ttl",
        ),
        pytest.param(
            {"cache": {"ttl": float("inf")}},
            "cache.ttl",
            "must be a number of seconds greater than 0, e.g. 300",
            id="infinite ttl",
        ),
        pytest.param(
            {"cache": {"jitter": 1}},
            "cache.jitter",
            "must be a fraction from 0 up to (not including) 1, e.g. 0.1",
            id="jitter of 1",
        ),
        pytest.param(
            {"cache": {"jitter": -0.1}},
            "cache.jitter",
            "must be a fraction from 0 up to (not including) 1, e.g. 0.1",
            id="negative jitter",
        ),
        pytest.param(
            {"cache": {"grace": -1}},
            "cache.grace",
            "must be a number of seconds, 0 or more, e.g. 600",
            id="negative grace",
        ),
        pytest.param(
            {"cache": {"max_entries": 10}},
            "cache.max_entries",
            "unknown key; expected one of: grace, jitter, ttl",
            id="unknown cache key",
        ),
        pytest.param(
            {"cache": [300]},
            "cache",
            "must be a mapping with ttl, jitter and grace",
            id="cache not a mapping",
        ),
    ],
)
def test_invalid_settings_name_the_field_and_the_fix(raw: object, field: str, message: str) -> None:
    with pytest.raises(SettingsFieldError) as info:
        parse_secret_settings(raw)
    assert (info.value.field, info.value.message) == (field, message)
    assert str(info.value) == (f"{field}: {message}" if field else message)


def test_settings_errors_are_value_errors() -> None:
    # The policy loader catches ValueError from helpers and adds file and line.
    assert issubclass(SettingsFieldError, ValueError)


def test_a_pasted_token_is_not_echoed() -> None:
    with pytest.raises(SettingsFieldError) as info:
        parse_secret_settings(vault(auth={"token_env": "hvs.CAESIJsecretvalue"}))
    assert "hvs.CAESIJsecretvalue" not in str(info.value)
