"""The network workloads, which contenders run each, and the rounds that run them all.

A round starts every contender in turn (a fresh process each round, the order rotated from
round to round so slow drift of the machine does not favour one), checks it with a probe
request, warms it up, runs each of its workloads once and stops it. Figures are medians over
rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.contenders import DENIED_IP, PLACEHOLDER, SECRET, Contender, Tools, start
from bench.load import Sample, curl, hey, measured
from bench.probe import probe
from bench.procs import Supervisor
from bench.upstream import Upstream

__all__ = ["CONTENDERS", "Facts", "Workload", "run_rounds", "workloads"]

CONTENDERS = ("direct", "squid", "mitmdump-pass", "mitmdump-mitm", "egress-pass",
              "egress-mitm", "egress-pass-off", "egress-mitm-off", "kow")
_TLS = CONTENDERS
_PLAIN = ("direct", "squid", "mitmdump-pass", "egress-pass", "egress-pass-off")
_DENY = ("squid", "mitmdump-pass", "egress-pass", "egress-pass-off")
HEADERS = {"Authorization": f"Bearer {PLACEHOLDER}"}


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    contenders: tuple[str, ...]
    tls: bool = True
    path: str = "/small"
    keepalive: bool = True
    c: int = 1
    n: int = 0  # requests (hey); 0: one curl download
    n_mitm: int = 0  # requests for contenders that intercept TLS (0: n)
    expect: int = 200

    def count(self, intercepts: bool) -> int:
        return self.n_mitm if intercepts and self.n_mitm else self.n

    @property
    def transfer(self) -> bool:
        return self.n == 0


def workloads(scale: float = 1.0) -> list[Workload]:
    """The workloads; request counts times `scale`. Intercepting contenders get `n_mitm`
    requests (they are ~10x slower: the same count would take minutes), every pair that is
    compared gets the same count."""
    def n(count: int) -> int:
        return max(40, int(count * scale))

    return [
        Workload("https-ka-c1", "HTTPS 1 KiB, keep-alive, c=1", _TLS, c=1, n=n(5000),
                 n_mitm=n(2000)),
        Workload("https-ka-c20", "HTTPS 1 KiB, keep-alive, c=20", _TLS, c=20, n=n(20000),
                 n_mitm=n(5000)),
        Workload("https-new-c1", "HTTPS 1 KiB, new connection each, c=1", _TLS,
                 keepalive=False, c=1, n=n(1000), n_mitm=n(500)),
        Workload("https-new-c20", "HTTPS 1 KiB, new connection each, c=20", _TLS,
                 keepalive=False, c=20, n=n(2000), n_mitm=n(1000)),
        Workload("http-ka-c20", "HTTP 1 KiB, keep-alive, c=20", _PLAIN, tls=False, c=20,
                 n=n(10000)),
        Workload("http-new-c20", "HTTP 1 KiB, new connection each, c=20", _PLAIN, tls=False,
                 keepalive=False, c=20, n=n(2000)),
        Workload("deny-ka-c20", "Denied (403), HTTP keep-alive, c=20", _DENY, tls=False,
                 path="/deny", c=20, n=n(10000), expect=403),
        Workload("get-100m", "HTTPS 100 MiB download (curl)", _TLS, path="/100m"),
    ]


@dataclass
class Facts:
    """What the probes showed about a contender (and any notes worth printing)."""

    intercepted: bool | None = None
    injected: bool | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Run:
    sup: Supervisor
    work: Path
    up: Upstream
    tools: Tools
    log: Callable[[str], None]
    facts: dict[str, Facts] = field(default_factory=dict)
    credential: bool = True  # give egress-mitm a credential rule (turned off if it fails)
    noise_pct: float = 20.0  # retake a sample when other processes took more CPU than this
    retries: int = 1
    retry_until: float = float("inf")  # time.monotonic() after which no sample is retaken


def _url(run: Run, w: Workload) -> str:
    if w.expect == 403:
        return f"http://{DENIED_IP}:{run.up.http_port}{w.path}"
    return run.up.url(w.path, tls=w.tls)


def bundle(run: Run, c: Contender) -> Path:
    """CA file a client of `c` trusts: the upstream's CA, plus the proxy's when it intercepts."""
    path = run.work / f"{c.name}-trust.pem"
    parts = [run.up.ca.ca_pem.read_text()]
    if c.ca is not None and c.ca.exists():
        parts.append(c.ca.read_text())
    path.write_text("\n".join(parts))
    return path


def run_workload(run: Run, c: Contender, w: Workload) -> Sample:
    """One sample; taken again (up to `run.retries` times) while other processes on the
    machine took more than `run.noise_pct` of its CPU, keeping the quietest attempt."""
    best = _one_sample(run, c, w)
    for _ in range(run.retries):
        if (best.background_pct or 0.0) <= run.noise_pct or time.monotonic() > run.retry_until:
            break
        run.log(f"    {c.name} {w.key}: {best.background_pct:.0f}% CPU taken by other "
                "processes; measuring again")
        again = _one_sample(run, c, w)
        if (again.background_pct or 0.0) < (best.background_pct or 0.0):
            best = again
    return best


def _one_sample(run: Run, c: Contender, w: Workload) -> Sample:
    url = _url(run, w)
    if w.transfer:
        trust = str(bundle(run, c))

        def download() -> Sample:
            seconds, size, status = curl(url, proxy=c.proxy, cacert=trust, headers=HEADERS)
            ok = status == 200 and size > 0
            return Sample(mb_per_s=size / 1048576 / seconds if ok and seconds else None,
                          units=size // 1048576, failed=0 if ok else 1,
                          problem=None if ok else f"curl: status {status}, {size} bytes")

        return measured(c.service, download, [run.up.service])

    def load() -> Sample:
        r = hey(url, proxy=c.proxy, n=w.count(c.intercepts), c=w.c, keepalive=w.keepalive,
                headers=HEADERS, expect=w.expect)
        return Sample(rps=r.rps, p50_ms=r.p50_ms, p99_ms=r.p99_ms, units=r.ok,
                      failed=r.failed, problem=r.problem)

    return measured(c.service, load, [run.up.service])


def _check(run: Run, c: Contender) -> str | None:
    """Probe `c`; record what it does; return a problem that makes its figures meaningless."""
    facts = run.facts.setdefault(c.name, Facts())
    try:
        p = probe(run.up.url("/echo-auth"), c.proxy, HEADERS)
    except OSError as exc:
        return f"probe failed: {exc}"
    if p.status != 200:
        return f"probe got status {p.status}: {p.body[:200]!r}"
    facts.intercepted = p.intercepted(run.up.ca.leaf_der)
    echoed = p.body.decode(errors="replace")
    # egress redacts a brokered secret echoed back in a response (it keeps the length, so
    # "Bearer SECRET" comes back as "Bearer [redac"): that too proves the upstream received it.
    facts.injected = echoed == f"Bearer {SECRET}" or (
        echoed.startswith("Bearer [redac") and len(echoed) == len(f"Bearer {SECRET}"))
    return None


def start_checked(run: Run, name: str) -> Contender:
    c = start(name, run.sup, run.work, run.up, run.tools, credential=run.credential)
    problem = _check(run, c)
    if problem and name == "egress-mitm" and run.credential:
        # Credential injection not working here: measure interception with a methods rule.
        note = (f"with a credential rule: {problem}; measured with a methods rule instead "
                "(interception without injection)")
        run.facts.setdefault(name, Facts()).notes.append(note)
        run.log(f"  {name}: {note}")
        if c.service is not None:
            run.sup.stop(c.service)
        run.credential = False
        c = start(name, run.sup, run.work, run.up, run.tools, credential=False)
        problem = _check(run, c)
    if problem:
        if c.service is not None:
            run.sup.stop(c.service)
        raise RuntimeError(f"{name}: {problem}")
    return c


def run_rounds(run: Run, names: list[str], loads: list[Workload], rounds: int
               ) -> dict[str, dict[str, list[Sample]]]:
    """results[workload key][contender name] = one Sample per round."""
    results: dict[str, dict[str, list[Sample]]] = {w.key: {} for w in loads}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            try:
                c = start_checked(run, name)
            except RuntimeError as exc:
                run.log(f"  round {r + 1}: {exc}")
                run.facts.setdefault(name, Facts()).notes.append(str(exc).splitlines()[0])
                continue
            try:
                # Warm-up: certificate generation, first upstream connections, imports.
                hey(run.up.url("/small"), proxy=c.proxy, n=100, c=5, keepalive=True,
                    headers=HEADERS)
                for w in loads:
                    if name not in w.contenders:
                        continue
                    sample = run_workload(run, c, w)
                    results[w.key].setdefault(name, []).append(sample)
                    if sample.problem:
                        run.log(f"  round {r + 1} {name} {w.key}: {sample.problem}")
            finally:
                if c.service is not None:
                    run.sup.stop(c.service)
            run.log(f"  round {r + 1}/{rounds}: {name} done")
    return results
