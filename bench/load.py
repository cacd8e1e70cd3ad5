"""Load generators (hey for request rates, curl for large transfers) and what one run costs.

A `Sample` is one run of one workload against one contender: the client's figures (requests
per second, latency percentiles, bytes per second) and the proxy's, read from /proc around
the run (CPU seconds of the whole process group; peak RSS after resetting the peak).
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.procs import Service, cpu_seconds, peak_rss_kb, reset_peak, system_busy_seconds

__all__ = ["HeyRun", "Sample", "curl", "hey", "measured"]


@dataclass(frozen=True)
class HeyRun:
    rps: float  # responses with the expected status per second
    p50_ms: float
    p99_ms: float
    ok: int
    failed: int  # errors plus responses with another status
    seconds: float
    problem: str | None = None  # the most common error or unexpected status


@dataclass
class Sample:
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    mb_per_s: float | None = None
    cpu_s: float | None = None  # proxy CPU seconds during the run
    units: int = 0  # requests (or MiB) the CPU was spent on
    peak_rss_mb: float | None = None
    failed: int = 0
    problem: str | None = None
    background_pct: float | None = None  # machine CPU used by processes not in the benchmark
    extra: dict[str, float] = field(default_factory=dict)


_HEY_FIELDS = {
    "total": re.compile(r"^\s*Total:\s+([\d.]+) secs", re.MULTILINE),
    "p50": re.compile(r"^\s*50%+ in ([\d.]+) secs", re.MULTILINE),
    "p99": re.compile(r"^\s*99%+ in ([\d.]+) secs", re.MULTILINE),
}
_HEY_STATUS = re.compile(r"^\s*\[(\d+)\]\s+(\d+) responses", re.MULTILINE)
_HEY_ERROR = re.compile(r"^\s*\[(\d+)\]\s+(.+)$", re.MULTILINE)


def hey(url: str, *, proxy: str | None, n: int, c: int, keepalive: bool,
        headers: dict[str, str], expect: int = 200, timeout: float = 300.0) -> HeyRun:
    cmd = ["hey", "-n", str(n), "-c", str(c), "-t", "30", "-disable-compression"]
    if proxy is not None:
        cmd += ["-x", proxy]
    if not keepalive:
        cmd.append("-disable-keepalive")
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=timeout,
                         check=False)
    return parse_hey(out.stdout + out.stderr, expect)


def parse_hey(text: str, expect: int) -> HeyRun:
    found = {k: float(m.group(1)) for k, r in _HEY_FIELDS.items() if (m := r.search(text))}
    statuses = {int(s): int(count) for s, count in _HEY_STATUS.findall(text)}
    ok = statuses.get(expect, 0)
    failed = sum(v for s, v in statuses.items() if s != expect)
    problem = None
    errors_part = text.split("Error distribution:", 1)
    if len(errors_part) == 2:
        errors = [(int(k), msg.strip()) for k, msg in _HEY_ERROR.findall(errors_part[1])]
        failed += sum(k for k, _ in errors)
        if errors:
            problem = max(errors)[1][:160]
    if problem is None and failed:
        other = [s for s in statuses if s != expect]
        problem = f"status {other[0]}" if other else None
    seconds = found.get("total", 0.0)
    if "total" not in found:
        problem = problem or ("hey printed no summary: " + text.strip()[-200:])
    return HeyRun(
        rps=ok / seconds if seconds else 0.0,
        p50_ms=found.get("p50", 0.0) * 1000, p99_ms=found.get("p99", 0.0) * 1000,
        ok=ok, failed=failed, seconds=seconds, problem=problem,
    )


def curl(url: str, *, proxy: str | None, cacert: str | None, headers: dict[str, str],
         timeout: float = 600.0) -> tuple[float, int, int]:
    """Download `url`, discard it; (seconds, bytes, HTTP status)."""
    cmd = ["curl", "-sS", "-o", "/dev/null", "--max-time", str(int(timeout)),
           "-w", "%{time_total} %{size_download} %{http_code}"]
    if proxy is not None:
        cmd += ["--proxy", proxy]
    if cacert is not None:
        cmd += ["--cacert", cacert]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True,
                         timeout=timeout + 30, check=False)
    try:
        seconds, size, status = out.stdout.split()
        return float(seconds), int(size), int(status)
    except ValueError:
        return 0.0, 0, 0


def _own_cpu(services: list[Service]) -> float:
    """CPU seconds of the harness, its finished children (hey, curl) and `services`."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return total + sum(cpu_seconds(s.pgid) for s in services if s.alive())


def measured(service: Service | None, run: Callable[[], Sample],
             others: list[Service] | None = None) -> Sample:
    """Run `run()`; add the proxy's CPU seconds and peak RSS over that run, and how much CPU
    processes outside the benchmark took meanwhile (`others`: servers of ours, e.g. nginx)."""
    ours = [s for s in [service, *(others or [])] if s is not None]
    reset_ok = service is not None and reset_peak(service.pgid)
    cpu0 = cpu_seconds(service.pgid) if service is not None else 0.0
    own0, busy0 = _own_cpu(ours), system_busy_seconds()
    started = time.monotonic()
    sample = run()
    wall = time.monotonic() - started
    own, busy = _own_cpu(ours) - own0, system_busy_seconds() - busy0
    sample.background_pct = max(0.0, busy - own) / (wall * (os.cpu_count() or 1)) * 100
    sample.extra["wall_s"] = wall
    if service is None:
        return sample
    sample.cpu_s = cpu_seconds(service.pgid) - cpu0
    if reset_ok:
        sample.peak_rss_mb = peak_rss_kb(service.pgid) / 1024
    if not service.alive():
        sample.problem = f"{service.name} exited ({service.proc.returncode})"
    return sample
