"""Credential brokering on plain data: which credentials a request carries, and injection.

A skill holds at most a *placeholder* for a key. egress puts the real key into requests to the
hosts the key is bound to (the rules that name the credential) and refuses requests that carry
a placeholder, or the raw key, anywhere else. These functions work on header lists and strings;
fetching the secret and editing the flow is the addon's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from egress.leakscan import text_carries
from egress.policy.match import path_matches, path_spelling_problem
from egress.policy.model import Credential, SkillPolicy
from egress.secrets.base import Secret

__all__ = ["bound_to", "carried_credentials", "inject", "redact", "REDACTED"]

REDACTED = "[redacted-by-egress]"


def carried_credentials(
    skill: SkillPolicy, texts: Iterable[str], known: Mapping[str, Secret]
) -> set[str]:
    """Names of the skill's credentials whose placeholder or real value appears in `texts`.

    `texts` are header values and the request target; `known` maps credential names to values
    egress has fetched (a skill that somehow learnt a real key is caught too). Found raw,
    percent-, base64- or hex-encoded, or split across the texts in order (egress/leakscan.py).
    """
    found: set[str] = set()
    items = list(texts)
    for name, cred in skill.credentials.items():
        needles = [cred.placeholder] if cred.placeholder else []
        secret = known.get(name)
        if secret is not None:
            needles.append(secret.reveal())
        if any(text_carries(n, items) for n in needles if n):
            found.add(name)
    return found


def bound_to(skill: SkillPolicy, credential: str, host: str, port: int, path: str | None) -> bool:
    """True when some rule of `skill` names `credential` and matches this destination.
    A path that is not spelt plainly matches no rule's `paths` (see path_spelling_problem)."""
    for rule in skill.index.lookup(host):
        if rule.credential != credential or port not in rule.ports:
            continue
        if rule.paths is None:
            return True
        if path is not None and path_spelling_problem(path) is None and any(
                path_matches(p, path) for p in rule.paths):
            return True
    return False


def inject(fields: list[tuple[str, str]], cred: Credential, value: str) -> list[tuple[str, str]]:
    """Headers with the credential put in.

    With a placeholder that the skill sent, every occurrence in header values is replaced.
    Otherwise the credential's header is set to its format, replacing whatever the skill sent.
    """
    if any(c in value for c in "\r\n\x00"):
        raise ValueError("secret value contains a line break or NUL; refusing to send it")
    if cred.placeholder and any(cred.placeholder in v for _, v in fields):
        return [(k, v.replace(cred.placeholder, value)) for k, v in fields]
    header = cred.header.lower()
    out = [(k, v) for k, v in fields if k.lower() != header]
    out.append((cred.header, cred.format.replace("{secret}", value)))
    return out


def redact(fields: list[tuple[str, str]], value: str) -> list[tuple[str, str]] | None:
    """Response headers with any echo of the secret replaced, or None if there was none."""
    if not value or not any(value in v for _, v in fields):
        return None
    return [(k, v.replace(value, REDACTED)) for k, v in fields]
