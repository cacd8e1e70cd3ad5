"""Brokering a skill's credentials: refuse stray ones, fetch and inject the bound one.

`CredentialBroker.prepare` runs after the policy allowed a request and before it leaves egress
(the gate calls it). Outcomes:
  * Problem(CREDENTIAL_EXFILTRATION)  a placeholder or real key of the skill is in a request
                                      to a destination that credential is not bound to
  * Problem(TLS_REQUIRED)             a credential would travel without verified TLS
  * Problem(CREDENTIAL_UNAVAILABLE)   the secret manager (or the OAuth token endpoint) cannot
                                      produce it (fail closed); logged with the error class
  * Problem(SIGNING_UNSUPPORTED)      an AWS request egress cannot re-sign (aws-chunked)
  * Injected(headers, target, ...)    the request with the key in it, in the credential's
                                      shape (egress/credentials/inject.py, sigv4.py, oauth2.py)
  * nothing to do                     (None)
`unbound` says what a request body must not carry, `stray_in_message` what a WebSocket message
must not. Every search goes through the one detector (egress/credentials/detect.py): headers,
targets, bodies and messages are searched for the same raw and encoded forms.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from egress.credentials.detect import content_carries, text_carries
from egress.credentials.inject import inject_basic, inject_bearer, inject_header, inject_query
from egress.credentials.oauth2 import TokenMinter
from egress.credentials.sigv4 import (
    EMPTY_SHA256,
    AwsKeys,
    SigningRequest,
    declared_payload_hash,
    payload_hash_problem,
    sign,
)
from egress.errors import SecretError, secret_error_class
from egress.policy.decide import Destination
from egress.policy.match import path_matches, path_spelling_problem
from egress.policy.model import Credential, Rule, SkillPolicy
from egress.policy.secret_refs import SecretRef
from egress.reasons import Problem, Reason
from egress.secrets import Secret, SecretCache

if TYPE_CHECKING:
    from egress.credentials.oauth2 import TokenEndpoint

__all__ = ["REDACTED", "CredentialBroker", "Injected", "bound_to", "carried_credentials",
           "inject", "redact"]

log = logging.getLogger("egress.credentials")

REDACTED = "[redacted-by-egress]"
MAX_SIGNED_BODY = 16 * 2**20  # an AWS request egress must hash to sign: held in memory

BodySigner = Callable[[bytes], tuple[list[tuple[str, str]], str]]


def carried_credentials(
    skill: SkillPolicy, texts: Iterable[str], known: Mapping[str, tuple[Secret, ...]]
) -> set[str]:
    """Names of the skill's credentials whose placeholder or real value appears in `texts`.

    `texts` are header values and the request target; `known` maps credential names to values
    egress has fetched or minted (a skill that somehow learnt a real key is caught too). Found
    raw, percent-, base64- or hex-encoded, or split across the texts in order
    (egress/credentials/detect.py).
    """
    found: set[str] = set()
    items = list(texts)
    for name, cred in skill.credentials.items():
        needles = [cred.placeholder] if cred.placeholder else []
        needles += [s.reveal() for s in known.get(name, ())]
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


inject = inject_header  # the header shape (kept under its old name)


def redact(fields: list[tuple[str, str]], value: str) -> list[tuple[str, str]] | None:
    """Response headers with any echo of the secret replaced, or None if there was none."""
    if not value or not any(value in v for _, v in fields):
        return None
    return [(k, v.replace(value, REDACTED)) for k, v in fields]


@dataclass(frozen=True)
class Injected:
    """The request with the credential in it. `fields` are the headers to send; `target` the
    request target when the shape changed it (query, aws_sigv4); `echoes` every value the
    response must not hand back (the key, an AWS key id and session token, a minted token);
    `sign_body`, for an AWS request whose payload egress must hash, gives the headers and
    target once the whole body is known."""

    fields: list[tuple[str, str]]
    credential: str
    secret: Secret
    stale: bool
    target: str | None = None
    echoes: tuple[Secret, ...] = ()
    sign_body: BodySigner | None = None
    shape: str = "header"
    refused: Callable[[], None] | None = None  # the upstream answered 401: forget the token


class _Failed(Exception):
    """A secret failure and where it came from (a backend scheme, or "oauth2")."""

    def __init__(self, source: str, error: SecretError) -> None:
        super().__init__(source)
        self.source, self.error = source, error


class CredentialBroker:
    def __init__(self, *, now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
                 ) -> None:
        # Real values fetched per (skill, credential): lets egress spot a skill that sends a
        # real key where it does not belong. Only ever compared, never logged.
        self._known: dict[str, dict[str, tuple[Secret, ...]]] = {}
        self.minter = TokenMinter()
        self._now = now  # wall clock for AWS signature dates

    def known(self, skill: str) -> Mapping[str, tuple[Secret, ...]]:
        """The real values fetched for `skill`'s credentials so far (to spot them elsewhere)."""
        return self._known.get(skill, {})

    async def prepare(
        self, secrets: SecretCache, skill: SkillPolicy, rule: Rule | None, dest: Destination,
        fields: list[tuple[str, str]], target: str, *, verified_tls: bool,
        authority: str | None = None, http2: bool = False,
        endpoint: TokenEndpoint | None = None,
    ) -> Injected | Problem | None:
        """`authority`: the Host (or :authority) the upstream sees (AWS signs it); `http2`:
        the request came as HTTP/2 (a body without Content-Length); `endpoint`: the OAuth
        token endpoint client."""
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
        # The response is redacted while it streams; a compressed one could not be read.
        fields = [(k, v) for k, v in fields if k.lower() != "accept-encoding"]
        fields.append(("Accept-Encoding", "identity"))
        host = authority or (dest.host if dest.port == 443 else f"{dest.host}:{dest.port}")
        try:
            outcome = await self._inject(secrets, cred, fields, target, dest, host, http2,
                                         endpoint)
        except _Failed as failed:
            cls = secret_error_class(failed.error)
            # The exception names the reference, never a value.
            log.warning("credential %s of skill %s unavailable (%s, %s): %s", wanted,
                        skill.name, failed.source, cls, failed.error)
            return Problem(Reason.CREDENTIAL_UNAVAILABLE,
                           f"credential {wanted}: {failed.source} {cls} "
                           f"({type(failed.error).__name__})")
        except ValueError as exc:
            log.warning("credential %s of skill %s unusable: %s", wanted, skill.name, exc)
            return Problem(Reason.CREDENTIAL_UNAVAILABLE, f"credential {wanted}: {exc}")
        if isinstance(outcome, Injected):
            self._known.setdefault(skill.name, {})[wanted] = outcome.echoes
        return outcome

    async def _get(self, secrets: SecretCache, ref: SecretRef) -> tuple[Secret, bool]:
        try:
            got = await secrets.get(ref)
        except SecretError as exc:
            raise _Failed(ref.scheme, exc) from exc
        return got.secret, got.stale

    async def _inject(self, secrets: SecretCache, cred: Credential,
                      fields: list[tuple[str, str]], target: str, dest: Destination, host: str,
                      http2: bool, endpoint: TokenEndpoint | None) -> Injected | Problem:
        name = cred.name
        if cred.oauth2 is not None:
            try:
                minted = await self.minter.token(cred.oauth2, secrets, endpoint)
            except SecretError as exc:
                raise _Failed("oauth2", exc) from exc
            extra = [s for s in (secrets.peek(cred.oauth2.client_secret),
                                 secrets.peek(cred.oauth2.refresh_token)
                                 if cred.oauth2.refresh_token else None) if s is not None]
            cfg = cred.oauth2
            return Injected(inject_bearer(fields, minted.token.reveal()), name, minted.token,
                            False, echoes=(minted.token, *extra), shape="oauth2",
                            refused=lambda: self.minter.invalidate(cfg, minted.token))
        if cred.aws is not None:
            problem = payload_hash_problem(fields)
            if problem is not None:
                return Problem(Reason.SIGNING_UNSUPPORTED, f"credential {name}: {problem}")
        secret, stale = await self._get(secrets, cred.secret)
        if cred.aws is not None:
            return await self._sign(secrets, cred, secret, stale, fields, target, dest, host,
                                    http2)
        value = secret.reveal()
        if cred.query is not None:
            return Injected(fields, name, secret, stale, target=inject_query(
                target, cred.query, value), echoes=(secret,), shape="query")
        if cred.basic is not None:
            return Injected(inject_basic(fields, cred.basic.username, value), name, secret,
                            stale, echoes=(secret,), shape="basic")
        return Injected(inject_header(fields, cred, value), name, secret, stale,
                        echoes=(secret,))

    async def _sign(self, secrets: SecretCache, cred: Credential, secret: Secret, stale: bool,
                    fields: list[tuple[str, str]], target: str, dest: Destination, host: str,
                    http2: bool) -> Injected | Problem:
        aws = cred.aws
        assert aws is not None
        key_id, stale_id = await self._get(secrets, aws.access_key_id)
        token, stale_token = (await self._get(secrets, aws.session_token)
                              if aws.session_token is not None else (None, False))
        keys = AwsKeys(key_id, secret, token)
        echoes = tuple(s for s in (secret, key_id, token) if s is not None)
        method = dest.method or "GET"

        def signed(payload_hash: str) -> tuple[list[tuple[str, str]], str]:
            return sign(SigningRequest(method, target, fields, host), keys, region=aws.region,
                        service=aws.service, payload_hash=payload_hash, now=self._now())

        stale = stale or stale_id or stale_token
        declared = declared_payload_hash(fields)
        body = _body(fields, http2, method) if declared is None else "none"
        if body not in ("none", "known"):
            return Problem(Reason.SIGNING_UNSUPPORTED, f"credential {cred.name}: {body}")
        if body == "known":
            def sign_body(body: bytes) -> tuple[list[tuple[str, str]], str]:
                return signed(hashlib.sha256(body).hexdigest())

            return Injected(fields, cred.name, secret, stale, echoes=echoes,
                            sign_body=sign_body, shape="aws_sigv4")
        new_fields, new_target = signed(declared or EMPTY_SHA256)
        return Injected(new_fields, cred.name, secret, stale, target=new_target, echoes=echoes,
                        shape="aws_sigv4")

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
        """The placeholder of credential `name` and, once egress has fetched them, its
        values."""
        cred = skill.credentials[name]
        values = [cred.placeholder] if cred.placeholder else []
        values += [s.reveal() for s in self._known.get(skill.name, {}).get(name, ())]
        return tuple(values)


_BODILESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


def _body(fields: list[tuple[str, str]], http2: bool, method: str) -> str:
    """For an AWS request without x-amz-content-sha256 (egress hashes the body to sign it):
    "none" (no body), "known" (a Content-Length egress will buffer), or why it cannot be
    signed (no length, or too large to hold)."""
    length = None
    for k, v in fields:
        lower = k.lower()
        if lower == "transfer-encoding":
            length = None
            break
        if lower == "content-length":
            length = v.strip()
    else:
        if length is None and (not http2 or method in _BODILESS):
            return "none"
    if length is None:
        return ("a body of unknown length without x-amz-content-sha256 cannot be signed; "
                "send Content-Length, or x-amz-content-sha256 (a SHA-256 or UNSIGNED-PAYLOAD)")
    if not length.isdigit():
        return "Content-Length is not a number"
    if int(length) == 0:
        return "none"
    if int(length) > MAX_SIGNED_BODY:
        return (f"a body over {MAX_SIGNED_BODY // 2**20} MiB without x-amz-content-sha256 "
                f"cannot be signed; send x-amz-content-sha256 (a SHA-256 or UNSIGNED-PAYLOAD)")
    return "known"
