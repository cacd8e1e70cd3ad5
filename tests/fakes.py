"""The fakes every unit test shares: one clock, one resolver, one secret backend.

Real parts run wherever they can (tests/dnsserver.py, tests/openbao.py); these stand in only
for what a real part cannot show on demand: time that moves when the test says, DNS answers
that raise what a buggy resolver would, a secret fetch held open until the test lets it go,
and a secret backend that is down or breaks its contract.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from egress.errors import ResolveError, SecretNotFound, SecretUnavailable
from egress.policy.hosts import IPAddress
from egress.policy.secret_refs import SecretRef
from egress.secrets import Secret


class FakeClock:
    """A monotonic (or wall) clock that moves only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Answer = tuple[IPAddress, ...] | BaseException


class FakeResolver:
    """A `Resolver` answering from a table (a name not in it: NXDOMAIN), or one answer (or
    exception) for every name. `asked` lists the names it was asked for, in order."""

    def __init__(self, answers: Mapping[str, Answer] | Answer = ()) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(self, host: str) -> tuple[IPAddress, ...]:
        self.asked.append(host)
        answer: Answer
        if isinstance(self.answers, Mapping):
            found = self.answers.get(host)
            answer = found if found is not None else ResolveError(host, "NXDOMAIN")
        else:
            answer = self.answers
        if isinstance(answer, BaseException):
            raise answer
        return answer


class FakeSecretBackend:
    """A `SecretBackend` over `values` (reference location -> value).

    gated:  every fetch waits until the test sets `gate` (`started` says one is waiting)
    broken: "down" raises SecretUnavailable; "contract" raises a plain exception whose text
            holds a secret (what a backend must never do)
    Counts `calls` and `closes`.
    """

    def __init__(self, values: Mapping[str, str] | None = None, *, gated: bool = False,
                 broken: str | None = None) -> None:
        self.values = dict(values or {})
        self.gated = gated
        self.broken = broken
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.calls = 0
        self.closes = 0

    async def fetch(self, ref: SecretRef) -> Secret:
        self.calls += 1
        self.started.set()
        if self.gated:
            await asyncio.wait_for(self.gate.wait(), timeout=10)
        if self.broken == "down":
            raise SecretUnavailable(f"{ref}: the test backend is down")
        if self.broken == "contract":
            raise KeyError("sk_live_leaked_in_exception_text")
        if ref.location not in self.values:
            raise SecretNotFound(f"{ref}: not in the test backend")
        return Secret(self.values[ref.location])

    async def close(self) -> None:
        self.closes += 1
        if self.broken == "contract":
            raise RuntimeError("close failed")
