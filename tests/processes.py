"""Stopping a server process a test started: bounded, whatever state it is in."""

from __future__ import annotations

import signal
import subprocess

__all__ = ["kill_now", "stop_gently"]


def kill_now(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGKILL, as a crash would: nothing it had not written yet survives."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout)


def stop_gently(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM (the server flushes and exits), then SIGKILL if it lingers; `timeout` each."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
