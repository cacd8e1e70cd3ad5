"""Whether each brokered credential can be produced, and how old its secrets are.

    check_credentials   every reference of every credential fetched once through the secret
                        cache: ok, stale (served from the grace window), missing, forbidden,
                        misconfigured or down. /readyz (running proxy) and `egress check
                        --resolve` (a fresh cache) report it, names only.
    secret_statuses     per reference: backend, version and last-changed time as the backend
                        reports them (KV v2 metadata, file mtime, 1Password's item), age, and
                        whether it is older than `settings.secrets.max_age`: `egress secrets
                        status` and the `egress_secret_age_seconds` metric.

Values are fetched only to see that they can be; nothing here keeps, prints or logs one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from egress.errors import SecretError, secret_error_class
from egress.policy.model import Credential, Mode, PolicySet, RefUse
from egress.secrets import SecretCache

__all__ = ["STATUS_PERIOD", "CredentialHealth", "SecretStatus", "check_credentials",
           "secret_statuses", "watch_secret_status"]

log = logging.getLogger("egress")

STATUS_PERIOD = 300.0  # seconds between the running proxy's secret status checks

_WORST = ("misconfigured", "forbidden", "missing", "down", "stale", "ok")


@dataclass(frozen=True)
class CredentialHealth:
    skill: str
    credential: str
    status: str  # ok | stale | missing | forbidden | misconfigured | down
    backends: tuple[str, ...]  # the schemes of its references
    needed: bool  # an enforce-mode rule uses it: not ready while it cannot be produced
    problems: tuple[str, ...] = ()  # "field: class (error text naming the reference)"

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "stale")

    @property
    def name(self) -> str:
        return f"{self.skill}/{self.credential}"


def _needed(policy: PolicySet, skill: str, cred: Credential) -> bool:
    sp = policy.skills[skill]
    return sp.mode is Mode.ENFORCE and any(r.credential == cred.name for r in sp.rules)


async def _ref_status(cache: SecretCache, use: RefUse) -> tuple[str, str | None]:
    try:
        got = await cache.get(use.ref)
    except SecretError as exc:
        return secret_error_class(exc), f"{use.field}: {secret_error_class(exc)} ({exc})"
    return ("stale" if got.stale else "ok"), None


async def check_credentials(policy: PolicySet, cache: SecretCache, *,
                            timeout: float = 10.0) -> list[CredentialHealth]:
    """Every credential of `policy`, each reference fetched (at most) once."""
    creds = [(s, c) for s in sorted(policy.skills)
             for c in sorted(policy.skills[s].credentials.values(), key=lambda c: c.name)]
    uses = {use.ref: use for _, c in creds for use in c.all_refs()}

    async def one(use: RefUse) -> tuple[str, str | None]:
        try:
            return await asyncio.wait_for(_ref_status(cache, use), timeout)
        except TimeoutError:
            return "down", f"{use.field}: down (no answer within {timeout:g}s)"

    results = dict(zip(uses, await asyncio.gather(*(one(u) for u in uses.values())),
                       strict=True))
    out: list[CredentialHealth] = []
    for skill, cred in creds:
        statuses, problems = [], []
        for use in cred.all_refs():
            status, problem = results[use.ref]
            statuses.append(status)
            if problem is not None:
                problems.append(problem)
        worst = min(statuses, key=_WORST.index) if statuses else "ok"
        out.append(CredentialHealth(
            skill, cred.name, worst, tuple(sorted({u.ref.scheme for u in cred.all_refs()})),
            _needed(policy, skill, cred), tuple(problems)))
    return out


@dataclass(frozen=True)
class SecretStatus:
    skill: str
    credential: str
    field: str  # secret, aws_sigv4.access_key_id, ...
    reference: str  # where it lives (a location, never a value)
    backend: str
    version: str | None = None
    changed_at: float | None = None  # Unix time
    age: float | None = None  # seconds
    too_old: bool = False
    error: str | None = None  # missing | forbidden | misconfigured | down
    note: str | None = None  # why no time is known, or the error's text


async def secret_statuses(policy: PolicySet, cache: SecretCache, *,
                          max_age: float | None = None, timeout: float = 10.0,
                          now: Callable[[], float] = time.time) -> list[SecretStatus]:
    """One line per reference of every credential, described by its backend."""
    limit = max_age if max_age is not None else (
        policy.settings.secrets.max_age if policy.settings.secrets else None)

    async def one(skill: str, cred: Credential, use: RefUse) -> SecretStatus:
        base = SecretStatus(skill, cred.name, use.field, str(use.ref), use.ref.scheme)
        try:
            info = await asyncio.wait_for(cache.describe(use.ref), timeout)
        except TimeoutError:
            return _with(base, error="down", note=f"no answer within {timeout:g}s")
        except SecretError as exc:
            return _with(base, error=secret_error_class(exc), note=str(exc))
        age = now() - info.changed_at if info.changed_at is not None else None
        return _with(base, version=info.version, changed_at=info.changed_at, age=age,
                     too_old=age is not None and limit is not None and age > limit,
                     note=info.note)

    jobs = [one(s, c, u) for s in sorted(policy.skills)
            for c in sorted(policy.skills[s].credentials.values(), key=lambda c: c.name)
            for u in c.all_refs()]
    return list(await asyncio.gather(*jobs))


def _with(base: SecretStatus, **changes: object) -> SecretStatus:
    return replace(base, **changes)  # type: ignore[arg-type]


class _HasStatus(Protocol):
    @property
    def policy(self) -> PolicySet: ...

    @property
    def secrets(self) -> SecretCache: ...

    secret_status: list[SecretStatus]


async def watch_secret_status(runtime: Callable[[], _HasStatus | None],
                              period: float = STATUS_PERIOD) -> None:
    """Keep `runtime().secret_status` current (the egress_secret_age_seconds metric); logs
    each secret older than max_age once per check. Runs until cancelled."""
    while True:
        rt = runtime()
        if rt is not None and any(s.credentials for s in rt.policy.skills.values()):
            try:
                rt.secret_status = await secret_statuses(rt.policy, rt.secrets)
                for st in rt.secret_status:
                    if st.too_old:
                        log.warning("secret %s of %s/%s (%s) last changed %.0f days ago, "
                                    "longer than settings.secrets.max_age: rotate it",
                                    st.field, st.skill, st.credential, st.reference,
                                    (st.age or 0) / 86400)
            except Exception:  # never let the watcher die
                log.exception("egress: checking secret status failed")
        await asyncio.sleep(period)
