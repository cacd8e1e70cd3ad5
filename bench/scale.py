"""egress with a very large policy: how long `egress serve` takes to start, and what a reload
does to traffic in flight.

A second policy file holds 100,000 generated rules (another skill). One client sends
keep-alive requests (hey -c 1) through egress while the admin endpoint's POST /reload makes it
load the directory again; hey's slowest request shows how long traffic stood still.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.contenders import LISTEN, egress_policy, issue_token
from bench.micro import generate_policy
from bench.procs import Supervisor, free_port
from bench.upstream import Upstream

__all__ = ["ScaleResult", "policy_at_scale"]

_SLOWEST = "Slowest:"


@dataclass(frozen=True)
class ScaleResult:
    rules: int
    startup_s: float  # `egress serve` start until it accepts connections
    reload_status: int  # HTTP status of POST /reload
    reload_s: float  # how long POST /reload took to answer
    slowest_ms: float  # hey's slowest request while the reload ran
    p99_ms: float
    problem: str | None = None


def policy_at_scale(sup: Supervisor, work: Path, up: Upstream, egress: str, rules: int,
                    load_seconds: int = 20) -> ScaleResult:
    root = work / "scale"
    policies = root / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "bench.yaml").write_text(egress_policy(up, intercept=False, credential=False))
    big = generate_policy(rules).replace("  bench:\n", "  bulk:\n", 1).replace(
        "  other:\n", "  bulk-other:\n", 1)
    (policies / "bulk.yaml").write_text(big)
    data = root / "data"
    token = issue_token(egress, data)
    port, admin = free_port(LISTEN), free_port(LISTEN)
    started = time.monotonic()
    service = sup.start("egress-scale", [
        egress, "serve", "--policies", str(policies), "--data-dir", str(data),
        "--listen", f"{LISTEN}:{port}", "--admin", f"{LISTEN}:{admin}"],
        ready=(LISTEN, port), timeout=300)
    startup = time.monotonic() - started
    try:
        hey = subprocess.Popen(
            ["hey", "-z", f"{load_seconds}s", "-c", "1", "-x",
             f"http://bench:{token}@{LISTEN}:{port}", up.url("/small")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(load_seconds / 4)
            t0 = time.monotonic()
            request = urllib.request.Request(f"http://{LISTEN}:{admin}/reload", method="POST")
            try:
                with urllib.request.urlopen(request, timeout=300) as reply:
                    status = reply.status
            except OSError as exc:
                status = getattr(exc, "code", 0) or 0
            reload_s = time.monotonic() - t0
            out, _ = hey.communicate(timeout=load_seconds + 300)
        finally:
            if hey.poll() is None:
                hey.kill()
                hey.wait()
    finally:
        sup.stop(service)
    slowest = _seconds_after(out, _SLOWEST)
    p99 = _seconds_after(out, "99% in")
    problem = None if slowest is not None and status == 200 else (
        f"reload answered {status}" if status != 200 else "hey printed no summary")
    return ScaleResult(rules, startup, status, reload_s, (slowest or 0.0) * 1000,
                       (p99 or 0.0) * 1000, problem)


def _seconds_after(text: str, label: str) -> float | None:
    for line in text.splitlines():
        if label in line:
            try:
                return float(line.split(label, 1)[1].split()[0])
            except (IndexError, ValueError):
                return None
    return None
