"""parse_secret_ref: the three reference forms, and an error that says what to write."""

from __future__ import annotations

import pytest

from egress.policy.secret_refs import SecretRef, parse_secret_ref

FORMS = ("vault:MOUNT/PATH#FIELD, op://VAULT/ITEM/FIELD, doppler:PROJECT/CONFIG#NAME, "
         "env:NAME or file:/PATH")
VAULT_FORM = "write vault:MOUNT/PATH#FIELD, e.g. vault:secret/stripe#api_key"


@pytest.mark.parametrize(
    "text, ref",
    [
        pytest.param(
            "vault:secret/skills/stripe-invoices#api_key",
            SecretRef("vault", "secret/skills/stripe-invoices", "api_key"),
            id="vault reference with a nested path",
        ),
        pytest.param(
            "vault:secret/stripe#api_key",
            SecretRef("vault", "secret/stripe", "api_key"),
            id="vault reference with one path segment",
        ),
        pytest.param(
            "vault:kv/team-a.b/x#key name",
            SecretRef("vault", "kv/team-a.b/x", "key name"),
            id="vault field may contain spaces",
        ),
        pytest.param(
            "env:STRIPE_API_KEY", SecretRef("env", "STRIPE_API_KEY", None), id="env reference"
        ),
        pytest.param(
            "env:_x1", SecretRef("env", "_x1", None), id="env name may start with underscore"
        ),
        pytest.param(
            "file:/run/secrets/stripe",
            SecretRef("file", "/run/secrets/stripe", None),
            id="file reference",
        ),
        pytest.param(
            "file:/run/secrets/a#b",
            SecretRef("file", "/run/secrets/a#b", None),
            id="file path keeps a hash sign",
        ),
    ],
)
def test_valid_references(text: str, ref: SecretRef) -> None:
    parsed = parse_secret_ref(text)
    assert parsed == ref
    assert str(parsed) == text  # the text form round-trips


def test_vault_reference_splits_into_mount_and_path() -> None:
    ref = parse_secret_ref("vault:secret/skills/stripe#api_key")
    assert (ref.mount, ref.path, ref.field) == ("secret", "skills/stripe", "api_key")


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param("", f"empty secret reference: write {FORMS}", id="empty"),
        pytest.param("   ", f"empty secret reference: write {FORMS}", id="blank"),
        pytest.param(" env:X", "remove the spaces around the secret reference", id="leading space"),
        pytest.param(
            "STRIPE_KEY", f"a secret reference starts with a scheme: write {FORMS}", id="no scheme"
        ),
        pytest.param(
            "vualt:secret/x#y",
            f"unknown secret scheme 'vualt': write {FORMS}",
            id="misspelt scheme is quoted back",
        ),
        pytest.param(
            "VAULT:secret/x#y",
            f"unknown secret scheme 'VAULT': write {FORMS}",
            id="schemes are lowercase",
        ),
        pytest.param(
            "sk_live_abc123:xyz",
            f"unknown secret scheme: write {FORMS}",
            id="a pasted secret is not quoted back",
        ),
        pytest.param(
            "vault:secret/x",
            f"vault: needs a field after '#': {VAULT_FORM}",
            id="vault without field",
        ),
        pytest.param(
            "vault:secret/x#",
            f"vault: needs a field after '#': {VAULT_FORM}",
            id="vault with empty field",
        ),
        pytest.param(
            "vault:secret/x#a#b",
            f"vault: takes one '#FIELD': {VAULT_FORM}",
            id="vault with two fields",
        ),
        pytest.param(
            "vault:stripe#api_key",
            f"vault: needs a mount and a path: {VAULT_FORM}",
            id="vault without mount",
        ),
        pytest.param(
            "vault:/secret/x#k",
            f"vault: remove the leading '/': {VAULT_FORM}",
            id="vault with leading slash",
        ),
        pytest.param(
            "vault:secret//x#k",
            "vault: empty path segment ('//' or a trailing '/'): e.g. vault:secret/stripe#api_key",
            id="vault with double slash",
        ),
        pytest.param(
            "vault:secret/x/#k",
            "vault: empty path segment ('//' or a trailing '/'): e.g. vault:secret/stripe#api_key",
            id="vault with trailing slash",
        ),
        pytest.param(
            "vault:secret/../sys/x#k",
            "vault: '.' and '..' are not allowed in the path; name the secret directly",
            id="vault path traversal",
        ),
        pytest.param(
            "vault:secret/a%2Fb#k",
            "vault: spaces, '?' and '%' are not allowed in the path",
            id="vault percent-encoding",
        ),
        pytest.param(
            "vault:secret/a?version=1#k",
            "vault: spaces, '?' and '%' are not allowed in the path",
            id="vault query",
        ),
        pytest.param(
            "vault:secret/a\n#k",
            "control characters are not allowed in a secret reference",
            id="control character",
        ),
        pytest.param(
            "env:",
            "env: needs an environment variable name (letters, digits, _), e.g. env:STRIPE_API_KEY",
            id="env without name",
        ),
        pytest.param(
            "env:1ABC",
            "env: needs an environment variable name (letters, digits, _), e.g. env:STRIPE_API_KEY",
            id="env name starting with a digit",
        ),
        pytest.param(
            "env:A#b",
            "env: needs an environment variable name (letters, digits, _), e.g. env:STRIPE_API_KEY",
            id="env takes no field",
        ),
        pytest.param(
            "file:",
            "file: needs a path, e.g. file:/run/secrets/stripe_api_key",
            id="file without path",
        ),
        pytest.param(
            "file:secrets/key",
            "file: needs an absolute path (relative paths depend on the "
            "working directory), e.g. file:/run/secrets/stripe_api_key",
            id="relative file path",
        ),
    ],
)
def test_invalid_references_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_secret_ref(text)
    assert str(info.value) == message


def test_a_non_string_reference_is_refused() -> None:
    with pytest.raises(ValueError) as info:
        parse_secret_ref(42)  # type: ignore[arg-type]
    assert str(info.value) == f"a secret reference is a string: write {FORMS}"


def test_refs_are_hashable_cache_keys() -> None:
    assert (
        len({parse_secret_ref("env:A"), parse_secret_ref("env:A"), parse_secret_ref("env:B")}) == 2
    )
