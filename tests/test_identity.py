"""Proxy-Authorization parsing and the token store (hashes on disk, seen live by the proxy)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import stat
from pathlib import Path

import pytest

from egress.errors import IdentityError
from egress.identity import TokenInfo, TokenStore, parse_proxy_authorization


def basic(raw: bytes | str) -> str:
    data = raw.encode() if isinstance(raw, str) else raw
    return "Basic " + base64.b64encode(data).decode("ascii")


# -- parse_proxy_authorization -------------------------------------------------------------
@pytest.mark.parametrize("header, parsed", [
    pytest.param(None, None, id="missing header"),
    pytest.param("", None, id="empty header"),
    pytest.param("Bearer abc", None, id="not Basic"),
    pytest.param("Digest " + base64.b64encode(b"s:t").decode(), None, id="Digest scheme"),
    pytest.param("Basic", None, id="Basic without credentials"),
    pytest.param("Basic ", None, id="Basic with only a space"),
    pytest.param("Basic !!!!", None, id="bad base64 alphabet"),
    pytest.param("Basic c2tpbGw6dG9rZW4", None, id="base64 missing its padding"),
    pytest.param("Basic c2tp bGw6dG9rZW4=", None, id="space inside the base64"),
    pytest.param("Basic ñÿ==", None, id="non-ASCII instead of base64"),
    pytest.param(basic("skilltoken"), None, id="no colon"),
    pytest.param(basic(":token"), None, id="empty user"),
    pytest.param(basic("skill:"), None, id="empty token"),
    pytest.param(basic(":"), None, id="only a colon"),
    pytest.param(basic(b"sk\xefll:token"), None, id="credentials that are not UTF-8"),
    pytest.param(basic("skill:token"), ("skill", "token"), id="skill and token"),
    pytest.param(basic("skill:to:ken"), ("skill", "to:ken"), id="token may contain a colon"),
    pytest.param("basic " + base64.b64encode(b"s:t").decode(), ("s", "t"),
                 id="scheme is case-insensitive"),
    pytest.param("  BASIC   " + base64.b64encode(b"s:t").decode() + "  ", ("s", "t"),
                 id="surrounding and separating spaces are tolerated"),
    pytest.param(basic("skïll:tökén✓"), ("skïll", "tökén✓"), id="UTF-8 skill and token"),
])
def test_parse_proxy_authorization(header: str | None, parsed: tuple[str, str] | None) -> None:
    assert parse_proxy_authorization(header) == parsed


# -- TokenStore ---------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "data")


def test_constructor_does_no_io(tmp_path: Path) -> None:
    TokenStore(tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_issued_token_authenticates_only_its_skill(store: TokenStore) -> None:
    a, b = store.issue("a"), store.issue("b")
    assert store.verify("a", a) and store.verify("b", b)
    assert not store.verify("a", b)  # the token of another skill
    assert not store.verify("b", a)
    assert not store.verify("a", a + "x")  # a wrong token
    assert not store.verify("c", a)  # a skill without a token
    assert not store.verify("a", "")


def test_token_has_prefix_and_at_least_128_random_bits(store: TokenStore) -> None:
    tokens = {store.rotate("a") if i else store.issue("a") for i in range(20)}
    assert len(tokens) == 20  # never repeats
    for token in tokens:
        assert token.startswith("egr_")
        body = token[len("egr_"):]
        assert re.fullmatch(r"[A-Za-z0-9_-]+", body)  # safe inside a proxy URL
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        assert len(raw) * 8 >= 128


@pytest.mark.parametrize("action, message", [
    pytest.param(lambda s: (s.issue("a"), s.issue("a")),
                 "skill 'a' already has a token; use `egress token rotate a`",
                 id="issue twice"),
    pytest.param(lambda s: s.rotate("a"), "skill 'a' has no token; use `egress token issue a`",
                 id="rotate without a token"),
    pytest.param(lambda s: s.revoke("a"), "skill 'a' has no token to revoke",
                 id="revoke without a token"),
    pytest.param(lambda s: (s.issue("a"), s.revoke("a"), s.revoke("a")),
                 "skill 'a' has no token to revoke", id="revoke twice"),
    pytest.param(lambda s: s.issue("a:b"),
                 "'a:b' cannot be a skill name (no ':' or control characters)",
                 id="skill name with a colon"),
    pytest.param(lambda s: s.issue(""), "'' cannot be a skill name (no ':' or control characters)",
                 id="empty skill name"),
    pytest.param(lambda s: s.issue("a\nb"),
                 "'a\\nb' cannot be a skill name (no ':' or control characters)",
                 id="skill name with a newline"),
])
def test_misuse_is_an_identity_error(store: TokenStore, action, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IdentityError) as info:
        action(store)
    assert str(info.value) == message


def test_rotate_replaces_the_token_and_revoke_removes_it(store: TokenStore) -> None:
    old = store.issue("a")
    new = store.rotate("a")
    assert new != old
    assert not store.verify("a", old)
    assert store.verify("a", new)
    store.revoke("a")
    assert not store.verify("a", new)
    assert store.list() == []


def test_list_shows_skills_and_token_ids_never_tokens(store: TokenStore) -> None:
    tb, ta = store.issue("b"), store.issue("a")
    infos = store.list()
    assert [i.skill for i in infos] == ["a", "b"]
    assert infos[0] == TokenInfo("a", hashlib.sha256(ta.encode()).hexdigest()[:8], infos[0].created)
    assert infos[1].token_id == hashlib.sha256(tb.encode()).hexdigest()[:8]
    for info in infos:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info.created)
        assert ta not in repr(info) and tb not in repr(info)


def test_file_holds_only_hashes_and_is_private(store: TokenStore) -> None:
    token = store.issue("a")
    text = store.path.read_text()
    assert token not in text
    assert token[len("egr_"):][:16] not in text  # not even part of it
    assert json.loads(text)["tokens"]["a"]["sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert [p.name for p in store.path.parent.iterdir()] == ["tokens.json"]  # no temp files left


def test_running_proxy_sees_issue_rotate_and_revoke_without_restart(tmp_path: Path) -> None:
    proxy = TokenStore(tmp_path)  # lives as long as the proxy
    assert not proxy.verify("a", "egr_nothing_yet")

    first = TokenStore(tmp_path).issue("a")  # `egress token issue` in another process
    assert proxy.verify("a", first)

    second = TokenStore(tmp_path).rotate("a")
    assert not proxy.verify("a", first)
    assert proxy.verify("a", second)

    TokenStore(tmp_path).revoke("a")
    assert not proxy.verify("a", second)


@pytest.mark.parametrize("content, detail", [
    pytest.param("not json", "Expecting value: line 1 column 1 (char 0)", id="not JSON"),
    pytest.param("", "Expecting value: line 1 column 1 (char 0)", id="empty file"),
    pytest.param('{"version": 1}', "'tokens'", id="no tokens key"),
    pytest.param('{"tokens": []}', "tokens is not a mapping", id="tokens is a list"),
    pytest.param("[]", "list indices must be integers or slices, not str", id="top level is a list"),
    pytest.param('{"tokens": {"a": "abc"}}',
                 "dictionary update sequence element #0 has length 1; 2 is required",
                 id="entry is a string"),
    pytest.param('{"tokens": {"a": {}}}', "entry 'a' has no valid sha256", id="entry without hash"),
    pytest.param('{"tokens": {"a": {"sha256": 5}}}', "entry 'a' has no valid sha256",
                 id="hash is a number"),
    pytest.param('{"tokens": {"a": {"sha256": "' + "é" * 64 + '"}}}',
                 "entry 'a' has no valid sha256", id="hash is not hex"),
])
def test_corrupt_store_authenticates_nobody(tmp_path: Path, content: str, detail: str) -> None:
    proxy = TokenStore(tmp_path)
    token = TokenStore(tmp_path).issue("a")
    assert proxy.verify("a", token)

    (tmp_path / "tokens.json").write_text(content)
    assert not proxy.verify("a", token)  # and does not raise
    assert proxy.error == f"{tmp_path / 'tokens.json'}: unreadable token store ({detail})"
    with pytest.raises(IdentityError) as info:
        TokenStore(tmp_path).issue("b")  # the CLI refuses to overwrite it
    assert str(info.value) == proxy.error

    TokenStore(tmp_path / "fresh").issue("a")
    (tmp_path / "tokens.json").write_text((tmp_path / "fresh" / "tokens.json").read_text())
    assert proxy.error is not None  # stays set until the next check
    assert not proxy.verify("a", token)  # the repaired file holds a different token
    assert proxy.error is None


def test_missing_store_authenticates_nobody(store: TokenStore) -> None:
    assert not store.verify("a", "egr_x")
    assert store.list() == []
    assert store.error is None
