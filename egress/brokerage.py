"""The credential step of a request: refuse stray credentials, fetch and inject the bound one.

Runs after the policy allowed a request and before it leaves egress. Outcomes:
  * Refused(CREDENTIAL_EXFILTRATION)  a placeholder or real key of the skill is in a request
                                      to a destination that credential is not bound to
  * Refused(TLS_REQUIRED)             a credential would travel without verified TLS
  * Refused(CREDENTIAL_UNAVAILABLE)   the secret manager cannot produce it (fail closed)
  * Injected(headers, ...)            headers with the key in them
  * nothing to do                     (None)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from egress.errors import SecretError
from egress.inject import bound_to, carried_credentials, inject
from egress.policy.decide import Destination
from egress.policy.model import Rule, SkillPolicy
from egress.reasons import Reason
from egress.secrets import Secret, SecretBroker, SecretRef, parse_secret_ref

__all__ = ["Brokerage", "Injected", "Refused"]


@dataclass(frozen=True)
class Refused:
    reason: Reason
    detail: str


@dataclass(frozen=True)
class Injected:
    fields: list[tuple[str, str]]
    credential: str
    secret: Secret
    stale: bool


@functools.lru_cache(maxsize=4096)
def _ref(text: str) -> SecretRef:
    return parse_secret_ref(text)  # validated at load time; cached so it is parsed once


class Brokerage:
    def __init__(self) -> None:
        # Real values fetched per (skill, credential): lets egress spot a skill that sends a
        # real key where it does not belong. Only ever compared, never logged.
        self._known: dict[str, dict[str, Secret]] = {}

    def known(self, skill: str) -> Mapping[str, Secret]:
        """The real values fetched for `skill`'s credentials so far (to spot them elsewhere)."""
        return self._known.get(skill, {})

    async def prepare(
        self, broker: SecretBroker, skill: SkillPolicy, rule: Rule | None, dest: Destination,
        fields: list[tuple[str, str]], target: str, *, verified_tls: bool,
    ) -> Injected | Refused | None:
        known = self._known.get(skill.name, {})
        carried = carried_credentials(skill, [v for _, v in fields] + [target], known) \
            if skill.credentials else set()
        wanted = rule.credential if rule is not None else None
        stray = sorted(c for c in carried if c != wanted
                       and not bound_to(skill, c, dest.host, dest.port, dest.path))
        if stray:
            return Refused(Reason.CREDENTIAL_EXFILTRATION,
                           f"carries credential {', '.join(stray)} bound to other hosts")
        if wanted is None:
            return None
        if not verified_tls:
            return Refused(Reason.TLS_REQUIRED, f"credential {wanted} is only sent over verified TLS")
        cred = skill.credentials[wanted]
        try:
            cached = await broker.get(_ref(cred.secret))
        except SecretError as exc:
            # The exception text names the reference, never a value.
            return Refused(Reason.CREDENTIAL_UNAVAILABLE, f"credential {wanted}: {type(exc).__name__}")
        try:
            new_fields = inject(fields, cred, cached.secret.reveal())
        except ValueError as exc:
            return Refused(Reason.CREDENTIAL_UNAVAILABLE, f"credential {wanted}: {exc}")
        self._known.setdefault(skill.name, {})[wanted] = cached.secret
        # The response is redacted while it streams; a compressed one could not be read.
        new_fields = [(k, v) for k, v in new_fields if k.lower() != "accept-encoding"]
        new_fields.append(("Accept-Encoding", "identity"))
        return Injected(new_fields, wanted, cached.secret, cached.stale)

    def unbound(self, skill: SkillPolicy, dest: Destination, wanted: str | None
                ) -> dict[str, list[str]]:
        """What a request body to `dest` must not carry: for each credential of `skill` not
        bound there (other than `wanted`, the one injected), its placeholder and, once egress
        has fetched it, its real value."""
        known = self._known.get(skill.name, {})
        out: dict[str, list[str]] = {}
        for name, cred in skill.credentials.items():
            if name == wanted or bound_to(skill, name, dest.host, dest.port, dest.path):
                continue
            values = [cred.placeholder] if cred.placeholder else []
            if name in known:
                values.append(known[name].reveal())
            if values:
                out[name] = values
        return out
