"""Key kinds and placeholders: shape kept, value gone."""

from __future__ import annotations

import random
import re
import string

import pytest

from egress.openclaw.keys import is_key_like_env, key_kind, make_placeholder, shape_matches
from tests.openclaw.conftest import fake_keys


def seeded(seed: int):  # noqa: ANN201 -- a choice function
    rng = random.Random(seed)
    return rng.choice


@pytest.mark.parametrize("value, prefix, host, header", [
    pytest.param("sk-ant-api03-" + "a" * 95, "sk-ant-api03-", "api.anthropic.com", "x-api-key",
                 id="anthropic key: the longest prefix wins over sk-"),
    pytest.param("sk-proj-" + "a" * 60, "sk-proj-", "api.openai.com", "Authorization",
                 id="openai project key"),
    pytest.param("sk-" + "a" * 48, "sk-", "api.openai.com", "Authorization", id="legacy openai key"),
    pytest.param("ghp_" + "a" * 36, "ghp_", "api.github.com", "Authorization", id="github pat"),
    pytest.param("github_pat_" + "a" * 70, "github_pat_", "api.github.com", "Authorization",
                 id="github fine-grained pat"),
    pytest.param("xoxb-1-2-abc", "xoxb-", "slack.com", "Authorization", id="slack bot token"),
    pytest.param("AIza" + "a" * 35, "AIza", "generativelanguage.googleapis.com", "x-goog-api-key",
                 id="google api key"),
    pytest.param("glpat-" + "a" * 20, "glpat-", "gitlab.com", "PRIVATE-TOKEN", id="gitlab token"),
])
def test_known_prefixes(value: str, prefix: str, host: str, header: str) -> None:
    kind = key_kind(value)
    assert kind is not None
    assert (kind.prefix, kind.host, kind.header) == (prefix, host, header)


@pytest.mark.parametrize("value", [
    pytest.param("0123456789abcdef0123456789abcdef", id="hex key has no kind"),
    pytest.param("sk-", id="a bare prefix is not a key"),
    pytest.param("skeleton-key-value", id="sk without the dash"),
])
def test_unknown_kinds(value: str) -> None:
    assert key_kind(value) is None


@pytest.mark.parametrize("label", sorted(fake_keys()))
def test_placeholder_has_the_shape_and_nothing_else_of_the_key(label: str) -> None:
    key = fake_keys(seed=7)[label]
    placeholder = make_placeholder(key, seeded(8))
    assert placeholder != key
    assert len(placeholder) == len(key)
    assert shape_matches(placeholder, key)
    kind = key_kind(key)
    body_start = len(kind.prefix) if kind else 0
    # Separators stay where they are; letters and digits are drawn anew.
    assert [(i, c) for i, c in enumerate(key) if not c.isalnum()] == \
        [(i, c) for i, c in enumerate(placeholder) if not c.isalnum()]
    same = sum(a == b for a, b in zip(key[body_start:], placeholder[body_start:], strict=True)
               if a.isalnum())
    assert same < len(key) // 4  # chance agreement only


def test_digit_runs_stay_digits_and_hex_stays_hex() -> None:
    slack = "xoxb-123456789012-1234567890123-" + "aB3" * 8
    p = make_placeholder(slack, seeded(1))
    assert re.fullmatch(r"xoxb-\d{12}-\d{13}-[A-Za-z0-9]{24}", p)
    hexkey = "0123456789abcdef" * 2
    assert re.fullmatch(r"[0-9a-f]{32}", make_placeholder(hexkey, seeded(2)))


@pytest.mark.parametrize("value, kept", [
    pytest.param("tvly-" + "A1b2" * 8, "tvly-", id="unknown letter tag kept"),
    pytest.param("deadbeef-1234-5678-9abc-def012345678", "", id="hex-looking start is key material"),
    pytest.param("abc-" + "x", "", id="tag longer than the rest is not kept"),
])
def test_unknown_tags(value: str, kept: str) -> None:
    p = make_placeholder(value, seeded(3))
    assert p.startswith(kept)
    if len(value) >= 12:
        assert len(p) == len(value)


def test_short_values_get_a_long_unmistakable_placeholder() -> None:
    p = make_placeholder("abc12345", seeded(4))
    assert re.fullmatch(r"egress_placeholder_[A-Za-z0-9]{16}", p)


def test_placeholders_differ_every_time() -> None:
    key = fake_keys()["github"]
    assert len({make_placeholder(key) for _ in range(50)}) == 50


@pytest.mark.parametrize("name, value, expected", [
    pytest.param("OPENAI_API_KEY", "whatever-long-value", True, id="name says API key"),
    pytest.param("SLACK_BOT_TOKEN", "xoxb-1-2-abcdef", True, id="name says token"),
    pytest.param("DB_PASSWORD", "hunter2hunter2", True, id="name says password"),
    pytest.param("FOO", "ghp_" + "a" * 36, True, id="value has a known prefix"),
    pytest.param("WEATHER_UNITS", "metric-units", False, id="ordinary setting"),
    pytest.param("KEYBOARD_LAYOUT", "de-nodeadkeys", False, id="KEY inside a word does not count"),
    pytest.param("AUTH_URL", "https://auth.example.com/token", False, id="a URL is not a key"),
    pytest.param("API_KEY", "short", False, id="too short to be a key"),
    pytest.param("API_KEY", {"source": "env", "id": "X"}, False, id="SecretRef object"),
    pytest.param("HOME_DIR_TOKEN", "/var/lib/token", False, id="a path is not a key"),
])
def test_which_env_entries_are_keys(name: str, value: object, expected: bool) -> None:
    assert is_key_like_env(name, value) is expected


def test_placeholder_alphabet_is_printable_ascii() -> None:
    p = make_placeholder("key_" + "é" * 10 + "x" * 20, seeded(5))
    assert all(c in string.printable and not c.isspace() for c in p)
