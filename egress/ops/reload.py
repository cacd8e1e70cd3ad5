"""Hot reload: pick up policy and token changes without a restart or a dropped connection.

Three triggers, one path (`Reloader.reload`):
- a watcher task polls the policy directory's `*.yaml`/`*.yml` files and DATA_DIR/tokens.json
  every second (mtime, size and inode: no new dependency, works on every filesystem);
- SIGHUP;
- `POST /reload` on the admin endpoint.

A policy reload goes through `Runtime.reload_policy_async()`, which validates the whole directory
first and keeps the running policy when the new one is invalid (each error is logged as
`file:line: field: message`, and shows in /healthz and the metrics). The addon reads
`runtime.policy` on every decision, so open tunnels carry on and new requests see the new
policy. Tokens are re-read by TokenStore itself when tokens.json changes; the watcher only
makes the change visible in the log (and a corrupt store in /readyz) straight away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from egress.ops.runtime import Runtime

__all__ = ["ReloadResult", "Reloader", "fingerprint"]

log = logging.getLogger("egress")

Stamp = tuple[tuple[str, int, int, int], ...]


def fingerprint(directory: Path) -> Stamp:
    """What changes when a policy file is written, added or removed."""
    stamps: list[tuple[str, int, int, int]] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith((".yaml", ".yml")):
                    stamps.append(_stamp(entry.path, entry.name))
    except OSError:
        stamps.append((str(directory), -1, -1, -1))
    return tuple(sorted(stamps))


def _stamp(path: str, name: str) -> tuple[str, int, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (name, -1, -1, -1)
    return (name, st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    policy: str | None  # digest in force after the attempt
    trigger: str
    errors: tuple[str, ...] = ()  # `file:line: field: message`, when rejected


@dataclass
class Reloader:
    """Reloads `get_runtime()`'s policy on change, on SIGHUP and on request."""

    get_runtime: Callable[[], Runtime | None]
    interval: float = 1.0
    last: ReloadResult | None = None
    _task: asyncio.Task[None] | None = field(default=None, repr=False)
    _policy_stamp: Stamp | None = field(default=None, repr=False)
    _token_stamp: Stamp | None = field(default=None, repr=False)
    _tasks: set[asyncio.Task[ReloadResult]] = field(default_factory=set, repr=False)

    async def reload(self, trigger: str) -> ReloadResult:
        """Reload the policy now (and re-read tokens). Never raises."""
        runtime = self.get_runtime()
        if runtime is None:
            result = ReloadResult(False, None, trigger, ("egress has no policy directory loaded",))
        else:
            self._policy_stamp = fingerprint(runtime.policy_dir)
            try:
                ok = await runtime.reload_policy_async()
            except Exception:  # a bug while reloading must not take the proxy down
                log.exception("policy reload (%s) failed unexpectedly; keeping the policy", trigger)
                ok = False
            last_error = runtime.reloads.last_error or "reload failed"
            errors = () if ok else tuple(last_error.splitlines())
            result = ReloadResult(ok, runtime.policy.digest, trigger, errors)
            self._refresh_tokens(runtime)
            if ok:
                log.info("policy reload (%s): ok, policy %s", trigger, runtime.policy.digest)
            else:
                log.error("policy reload (%s) rejected: keeping policy %s (%d problems)",
                          trigger, runtime.policy.digest, len(errors))
        self.last = result
        return result

    @property
    def failing(self) -> bool:
        return self.last is not None and not self.last.ok

    # -- watching ------------------------------------------------------------------------
    async def poll(self) -> ReloadResult | None:
        """One watcher step: reload if a policy file changed; notice token changes."""
        return await self.reload("watch") if self._changed() else None

    def _changed(self) -> bool:
        """Take fresh fingerprints; True when a policy file changed since the last look."""
        runtime = self.get_runtime()
        if runtime is None:
            return False
        tokens: Stamp = (_stamp(str(runtime.tokens.path), "tokens"),)
        if self._token_stamp is None:
            self._token_stamp = tokens
        elif tokens != self._token_stamp:
            self._token_stamp = tokens
            self._refresh_tokens(runtime)
            log.info("tokens changed: %s re-read", runtime.tokens.path.name)
        stamp = fingerprint(runtime.policy_dir)
        if self._policy_stamp is None:
            self._policy_stamp = stamp
            return False
        return stamp != self._policy_stamp

    async def run(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception:  # keep watching whatever happens
                log.exception("policy watcher error")
            await asyncio.sleep(self.interval)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start the watcher task and the SIGHUP handler (call inside the running loop)."""
        loop = loop or asyncio.get_running_loop()
        self._changed()  # take the first fingerprints now, so an edit right after start counts
        self._task = loop.create_task(self.run(), name="egress policy watcher")
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup, loop)

    def _on_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        task = loop.create_task(self.reload("sighup"))
        self._tasks.add(task)  # keep a reference until it finishes
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    @staticmethod
    def _refresh_tokens(runtime: Runtime) -> None:
        # TokenStore re-reads tokens.json on its next check anyway; refreshing now makes a
        # corrupt store visible in /readyz before any skill trips over it.
        runtime.tokens.refresh()
        if runtime.tokens.error:
            log.error("token store: %s", runtime.tokens.error)
