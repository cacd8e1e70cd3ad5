"""Start the processes a benchmark needs, read their cost from /proc, and always stop them.

Every server runs in its own session (so a terminal's Ctrl-C reaches only the harness, which
then stops them in order) and is stopped by its process-group id: SIGTERM, then SIGKILL.
CPU time and memory are read from /proc for the whole process group, so a server that forks
workers (nginx, squid) is measured as one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "Service",
    "Supervisor",
    "cpu_seconds",
    "free_port",
    "peak_rss_kb",
    "reset_peak",
    "rss_kb",
    "system_busy_seconds",
    "wait_port",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Service:
    """A running server started by a Supervisor; `pgid` names its process group."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pgid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Supervisor:
    """Owns every server process of a run; `close()` (or leaving the `with`) stops them all."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self._services: list[Service] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self, name: str, cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
              ready: tuple[str, int] | None = None, timeout: float = 30.0) -> Service:
        """Start `cmd`; with `ready`, wait until something accepts on that (host, port)."""
        log = self.logdir / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})}, start_new_session=True,
            )
        service = Service(name, proc, log)
        self._services.append(service)
        if ready is not None:
            try:
                wait_port(*ready, proc=proc, timeout=timeout)
            except RuntimeError as exc:
                tail = service.log_tail()
                self.stop(service)
                raise RuntimeError(f"{name}: {exc}\n{tail}") from None
        return service

    def stop(self, service: Service, timeout: float = 10.0) -> None:
        """SIGTERM the service's process group, SIGKILL it after `timeout` seconds."""
        if service in self._services:
            self._services.remove(service)
        proc = service.proc
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Workers outlive a leader now and then (nginx, squid): the group goes down with it.
        _signal_group(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(timeout)

    def close(self) -> None:
        for service in reversed(list(self._services)):
            self.stop(service)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, *, proc: subprocess.Popen[bytes] | None = None,
              timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


# -- /proc ------------------------------------------------------------------------------


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat_fields(int(entry))
        if stat is not None and int(stat[2]) == pgid:
            pids.append(int(entry))
    return pids


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold spaces)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds used so far by every live process of the group."""
    total = 0
    for pid in _group_pids(pgid):
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _CLK_TCK


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def peak_rss_kb(pgid: int) -> int:
    """Sum of VmHWM (peak resident set) over the group, in KiB."""
    return sum(_status_kb(pid, "VmHWM") for pid in _group_pids(pgid))


def rss_kb(pgid: int) -> int:
    """Sum of VmRSS (current resident set) over the group, in KiB."""
    return sum(_status_kb(pid, "VmRSS") for pid in _group_pids(pgid))


def reset_peak(pgid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, needs ptrace rights over the process)."""
    ok = True
    for pid in _group_pids(pgid):
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def system_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs; steal counts as busy)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK
