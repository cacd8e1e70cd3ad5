"""API keys as OpenClaw configs hold them: what kind a key is, and a placeholder of its shape.

A placeholder stands in for a key everywhere the agent sees it (its config, its environment).
SDKs often check a key's format before sending anything, so a placeholder keeps the key's
prefix (`sk-ant-api03-`, `ghp_`, `xoxb-`, ...), its length and its separators; every letter or
digit after the prefix is drawn at random from the kinds of characters in that stretch of the
key (digits stay digits in `xoxb-1234-...`). Nothing else of the key survives, so the
placeholder says nothing about the key's value.

Known prefixes also suggest the API host the key is for and how the API expects it (header
and format). Keys without a telling prefix are known by the variable that holds them when
their API takes them in the URL (`?appid=`, `?key=`): `env_kind`. These are guesses from
public documentation, written as such in the policies `egress openclaw import` generates:
an operator confirms them before enforcing. A key of no known kind has no known shape, and
the import leaves it where it is (moving it could break the skill).
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "KeyKind",
    "MIN_KEY_LENGTH",
    "env_kind",
    "is_key_like_env",
    "key_kind",
    "make_placeholder",
    "shape_matches",
]

MIN_KEY_LENGTH = 8
"""Shorter values are not treated as keys (flags, ids, ports)."""

_MIN_PLACEHOLDER = 12  # the policy loader refuses shorter placeholders (not unmistakable)


@dataclass(frozen=True)
class KeyKind:
    """What a key's prefix tells: whose key it is and how its API wants it."""

    prefix: str
    service: str  # human name, for comments and the summary
    host: str | None  # the API host such keys are for (a guess), None when unknown
    header: str = "Authorization"
    format: str = "Bearer {secret}"
    query: str | None = None  # the API takes the key in this query parameter instead


# Longest prefix first, so `sk-ant-` wins over `sk-`.
_KNOWN: tuple[KeyKind, ...] = tuple(sorted((
    KeyKind("sk-ant-api03-", "Anthropic", "api.anthropic.com", "x-api-key", "{secret}"),
    KeyKind("sk-ant-admin01-", "Anthropic (admin)", "api.anthropic.com", "x-api-key", "{secret}"),
    KeyKind("sk-ant-", "Anthropic", "api.anthropic.com", "x-api-key", "{secret}"),
    KeyKind("sk-proj-", "OpenAI (project)", "api.openai.com"),
    KeyKind("sk-svcacct-", "OpenAI (service account)", "api.openai.com"),
    KeyKind("sk-admin-", "OpenAI (admin)", "api.openai.com"),
    KeyKind("sk-or-v1-", "OpenRouter", "openrouter.ai"),
    KeyKind("sk-", "OpenAI", "api.openai.com"),
    KeyKind("github_pat_", "GitHub (fine-grained)", "api.github.com"),
    KeyKind("ghp_", "GitHub", "api.github.com"),
    KeyKind("gho_", "GitHub (OAuth)", "api.github.com"),
    KeyKind("ghu_", "GitHub (app user)", "api.github.com"),
    KeyKind("ghs_", "GitHub (app installation)", "api.github.com"),
    KeyKind("glpat-", "GitLab", "gitlab.com", "PRIVATE-TOKEN", "{secret}"),
    KeyKind("xoxb-", "Slack (bot)", "slack.com"),
    KeyKind("xoxp-", "Slack (user)", "slack.com"),
    KeyKind("xapp-", "Slack (app)", "slack.com"),
    KeyKind("AIza", "Google API", "generativelanguage.googleapis.com", "x-goog-api-key",
            "{secret}"),
    KeyKind("sk_live_", "Stripe (live)", "api.stripe.com"),
    KeyKind("sk_test_", "Stripe (test)", "api.stripe.com"),
    KeyKind("rk_live_", "Stripe (restricted)", "api.stripe.com"),
    KeyKind("hf_", "Hugging Face", "huggingface.co"),
    KeyKind("gsk_", "Groq", "api.groq.com"),
    KeyKind("pplx-", "Perplexity", "api.perplexity.ai"),
    KeyKind("xai-", "xAI", "api.x.ai"),
    KeyKind("r8_", "Replicate", "api.replicate.com"),
    KeyKind("tvly-", "Tavily", "api.tavily.com"),
    KeyKind("ntn_", "Notion", "api.notion.com"),
    KeyKind("lin_api_", "Linear", "api.linear.app", "Authorization", "{secret}"),
), key=lambda k: -len(k.prefix)))

# Keys with no telling prefix whose APIs take them in the URL, by the variable that holds
# them (skills name them so in SKILL.md's primaryEnv). From each API's public reference.
_BY_ENV: dict[str, KeyKind] = {
    name: kind
    for kind, names in (
        (KeyKind("", "OpenWeather", "api.openweathermap.org", query="appid"),
         ("OPENWEATHER_API_KEY", "OPENWEATHERMAP_API_KEY", "OWM_API_KEY")),
        (KeyKind("", "Google Maps Platform", "maps.googleapis.com", query="key"),
         ("GOOGLE_MAPS_API_KEY", "GOOGLE_PLACES_API_KEY", "GMAPS_API_KEY")),
        (KeyKind("", "Trello (API key)", "api.trello.com", query="key"), ("TRELLO_API_KEY",)),
        (KeyKind("", "Trello (token)", "api.trello.com", query="token"), ("TRELLO_TOKEN",)),
        (KeyKind("", "WeatherAPI.com", "api.weatherapi.com", query="key"),
         ("WEATHERAPI_KEY", "WEATHERAPI_API_KEY")),
    )
    for name in names
}


def env_kind(name: str) -> KeyKind | None:
    """The known kind of a key without a telling prefix, from the variable that holds it."""
    return _BY_ENV.get(name.upper())


# An unknown key may still start with a type tag ("tvly-", "acme_live_"): letters only, so
# that no random part of the key is ever kept.
_TAG = re.compile(r"^(?:[A-Za-z]{1,8}[-_]){1,2}")

# Env names that say "this is a credential": a whole `_`-separated word of the name.
_SECRET_WORDS = re.compile(
    r"(?:^|_)(?:API_?KEY|APIKEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS|PAT|CREDENTIALS?|AUTH)"
    r"(?:_|$)",
    re.IGNORECASE,
)
_NOT_A_KEY = re.compile(r"^(?:https?://|/|~/|\./)|\s", re.IGNORECASE)


def key_kind(value: str) -> KeyKind | None:
    """The known kind of `value` from its prefix, or None."""
    for kind in _KNOWN:
        if value.startswith(kind.prefix) and len(value) > len(kind.prefix):
            return kind
    return None


def _prefix(value: str) -> str:
    kind = key_kind(value)
    if kind is not None:
        return kind.prefix
    tag = _TAG.match(value)
    # Keep at least half the key random (a short value is mostly its prefix otherwise), and
    # never a hex-looking start ("deadbeef-..." of a UUID-shaped key is key material).
    if (tag is not None and len(tag.group(0)) * 2 <= len(value)
            and re.search(r"[g-zG-Z]", tag.group(0))):
        return tag.group(0)
    return ""


def is_key_like_env(name: str, value: object) -> bool:
    """Does the env entry `name=value` look like a credential worth moving out of the config?"""
    if not isinstance(value, str) or len(value) < MIN_KEY_LENGTH or _NOT_A_KEY.search(value):
        return False
    return key_kind(value) is not None or _SECRET_WORDS.search(name) is not None


_Choice = Callable[[str], str]


def make_placeholder(value: str, choice: _Choice = secrets.choice) -> str:
    """A placeholder of `value`'s shape: same prefix, length and separators, random otherwise.

    `choice` picks one character from an alphabet (secrets.choice; tests pass a seeded one).
    Values too short for an unmistakable placeholder get `egress_placeholder_` + 16 random
    characters instead (the shape cannot be kept; such short keys are rare).
    """
    if len(value) < _MIN_PLACEHOLDER:
        return "egress_placeholder_" + "".join(choice(_ALNUM) for _ in range(16))
    prefix = _prefix(value)
    out = [prefix]
    for run in re.findall(r"[A-Za-z0-9]+|[^A-Za-z0-9]+", value[len(prefix):]):
        if not run[0].isascii() or not run[0].isalnum():
            out.append(_separators(run))
            continue
        alphabet = _alphabet(run)
        out.append("".join(choice(alphabet) for _ in run))
    placeholder = "".join(out)
    if placeholder == value:  # only possible for a value with no letters or digits to vary
        return "egress_placeholder_" + "".join(choice(_ALNUM) for _ in range(16))
    return placeholder


_ALNUM = string.ascii_letters + string.digits


def _alphabet(run: str) -> str:
    # A long hexadecimal stretch stays hexadecimal (many keys are 32 or 40 hex digits).
    if len(run) >= 16 and all(c in "0123456789abcdef" for c in run):
        return "0123456789abcdef"
    if len(run) >= 16 and all(c in "0123456789ABCDEF" for c in run):
        return "0123456789ABCDEF"
    alphabet = ""
    if any(c.isdigit() for c in run):
        alphabet += string.digits
    if any(c.islower() for c in run):
        alphabet += string.ascii_lowercase
    if any(c.isupper() for c in run):
        alphabet += string.ascii_uppercase
    return alphabet


def _separators(run: str) -> str:
    # Keep printable ASCII separators ("-", "_", "."); anything else (spaces, non-ASCII) is
    # not part of a key's format and becomes "_" so the placeholder stays one clean token.
    return "".join(c if c.isascii() and c.isprintable() and not c.isspace() else "_" for c in run)


def shape_matches(placeholder: str, value: str) -> bool:
    """Could `placeholder` stand for `value` (same prefix and length)? Used to keep a
    placeholder when a key is replaced by a new one of the same kind."""
    return len(placeholder) == len(value) and _prefix(placeholder) == _prefix(value)
