"""Brokering a skill's credentials: refuse stray ones, fetch and inject the bound one.

`CredentialBroker.prepare` runs after the policy allowed a request and before it leaves egress
(the gate calls it). Outcomes:
  * Problem(CREDENTIAL_EXFILTRATION)  a placeholder or real key of the skill is in a request
                                      to a destination that credential is not bound to
  * Problem(TLS_REQUIRED)             a credential would travel without verified TLS
  * Problem(CREDENTIAL_UNAVAILABLE)   the secret manager cannot produce it (fail closed)
  * Injected(headers, ...)            headers with the key in them
  * nothing to do                     (None)
`unbound` says what a request body must not carry, `stray_in_message` what a WebSocket message
must not. Every search goes through the one detector (egress/credentials/detect.py): headers,
targets, bodies and messages are searched for the same raw and encoded forms.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from egress.credentials.detect import content_carries, text_carries
from egress.errors import SecretError
from egress.policy.decide import Destination
from egress.policy.match import path_matches, path_spelling_problem
from egress.policy.model import Credential, Rule, SkillPolicy
from egress.reasons import Problem, Reason
from egress.secrets import Secret, SecretCache

__all__ = ["REDACTED", "CredentialBroker", "Injected", "bound_to", "carried_credentials",
           "inject", "redact"]

REDACTED = "[redacted-by-egress]"


def carried_credentials(
    skill: SkillPolicy, texts: Iterable[str], known: Mapping[str, Secret]
) -> set[str]:
    """Names of the skill's credentials whose placeholder or real value appears in `texts`.

    `texts` are header values and the request target; `known` maps credential names to values
    egress has fetched (a skill that somehow learnt a real key is caught too). Found raw,
    percent-, base64- or hex-encoded, or split across the texts in order (egress/credentials/detect.py).
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


@dataclass(frozen=True)
class Injected:
    fields: list[tuple[str, str]]
    credential: str
    secret: Secret
    stale: bool


class CredentialBroker:
    def __init__(self) -> None:
        # Real values fetched per (skill, credential): lets egress spot a skill that sends a
        # real key where it does not belong. Only ever compared, never logged.
        self._known: dict[str, dict[str, Secret]] = {}

    def known(self, skill: str) -> Mapping[str, Secret]:
        """The real values fetched for `skill`'s credentials so far (to spot them elsewhere)."""
        return self._known.get(skill, {})

    async def prepare(
        self, secrets: SecretCache, skill: SkillPolicy, rule: Rule | None, dest: Destination,
        fields: list[tuple[str, str]], target: str, *, verified_tls: bool,
    ) -> Injected | Problem | None:
        known = self._known.get(skill.name, {})
        carried = carried_credentials(skill, [v for _, v in fields] + [target], known) \
            if skill.credentials else set()
        wanted = rule.credential if rule is not None else None
        stray = sorted(c for c in carried if c != wanted
                       and not bound_to(skill, c, dest.host, dest.port, dest.path))
        if stray:
            return Problem(Reason.CREDENTIAL_EXFILTRATION,
                           f"carries credential {', '.join(stray)} bound to other hosts")
        if wanted is None:
            return None
        if not verified_tls:
            return Problem(Reason.TLS_REQUIRED, f"credential {wanted} is only sent over verified TLS")
        cred = skill.credentials[wanted]
        try:
            cached = await secrets.get(cred.secret)
        except SecretError as exc:
            # The exception text names the reference, never a value.
            return Problem(Reason.CREDENTIAL_UNAVAILABLE, f"credential {wanted}: {type(exc).__name__}")
        try:
            new_fields = inject(fields, cred, cached.secret.reveal())
        except ValueError as exc:
            return Problem(Reason.CREDENTIAL_UNAVAILABLE, f"credential {wanted}: {exc}")
        self._known.setdefault(skill.name, {})[wanted] = cached.secret
        # The response is redacted while it streams; a compressed one could not be read.
        new_fields = [(k, v) for k, v in new_fields if k.lower() != "accept-encoding"]
        new_fields.append(("Accept-Encoding", "identity"))
        return Injected(new_fields, wanted, cached.secret, cached.stale)

    def unbound(self, skill: SkillPolicy, dest: Destination, wanted: str | None
                ) -> dict[str, tuple[str, ...]]:
        """What a request body to `dest` must not carry: for each credential of `skill` not
        bound there (other than `wanted`, the one injected), its placeholder and, once egress
        has fetched it, its real value."""
        out: dict[str, tuple[str, ...]] = {}
        for name in skill.credentials:
            if name == wanted or bound_to(skill, name, dest.host, dest.port, dest.path):
                continue
            values = self._needles(skill, name)
            if values:
                out[name] = values
        return out

    def stray_in_message(self, skill: SkillPolicy, content: bytes, dest: Destination, *,
                         verified_tls: bool) -> list[str]:
        """Credentials of `skill` a client WebSocket message to `dest` must not carry and does
        (any credential outside verified TLS; else those not bound to `dest`)."""
        return sorted(
            name for name in skill.credentials
            if (not verified_tls or not bound_to(skill, name, dest.host, dest.port, dest.path))
            and any(content_carries(v, content) for v in self._needles(skill, name)))

    def _needles(self, skill: SkillPolicy, name: str) -> tuple[str, ...]:
        """The placeholder of credential `name` and, once egress has fetched it, its value."""
        cred = skill.credentials[name]
        values = [cred.placeholder] if cred.placeholder else []
        known = self._known.get(skill.name, {}).get(name)
        if known is not None:
            values.append(known.reveal())
        return tuple(values)
