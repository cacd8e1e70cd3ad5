"""What runs around the proxy while `egress serve` is up: reload watcher, admin endpoint, signals.

    start:    policy watcher + SIGHUP (egress/ops/reload.py), admin endpoint (egress/ops/admin.py)
              and its address in DATA_DIR/admin.json, approval notifications
              (egress/ops/notify.py), SIGTERM/SIGINT handlers
    SIGTERM:  stop accepting connections, let open ones finish for up to `drain_seconds`,
              then stop the proxy; a second SIGTERM/SIGINT stops at once
    stop:     stop the admin endpoint and the watcher, close the audit log

Draining keeps open tunnels working (a download or an SSE stream in progress finishes)
while the listening socket is already closed, so a supervisor can start the next egress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Protocol

from egress.ops.admin import AdminServer, Operated
from egress.ops.adminfile import remove_admin_record, write_admin_record
from egress.ops.notify import Notifier
from egress.ops.reload import Reloader
from egress.policy.hosts import parse_ip_literal
from egress.policy.model import ApprovalNotify

__all__ = ["Served", "Supervisor"]

log = logging.getLogger("egress")

_DRAIN_POLL = 0.1


class Served(Operated, Protocol):
    """The running proxy as the supervisor drives it (egress/proxy/service.py: the fast path
    with mitmproxy behind it, or mitmproxy alone)."""

    async def stop_accepting(self) -> None: ...

    def connection_count(self) -> int: ...

    def shutdown(self) -> None:
        """Stop now: open connections end and the proxy's run returns."""


class Supervisor:
    def __init__(self, proxy: Served, *, admin: tuple[str, int] | None,
                 admin_token: str | None = None, drain_seconds: float = 10.0,
                 watch_interval: float = 1.0) -> None:
        """`proxy`: what runs the traffic. No I/O here."""
        self.proxy = proxy
        self.admin_address = admin
        self.drain_seconds = drain_seconds
        self.reloader = Reloader(lambda: proxy.runtime, interval=watch_interval)
        self.admin = (AdminServer(proxy, self.reloader, host=admin[0], port=admin[1],
                                  token=admin_token, draining=lambda: self.draining)
                      if admin is not None else None)
        self.draining = False
        self._drain_task: asyncio.Task[None] | None = None
        self.notifier: Notifier | None = None
        approvals = getattr(proxy, "approvals", None)
        if self.admin is not None and approvals is not None:
            admin_server = self.admin
            self.notifier = Notifier(self._notify_settings, admin_server.console_url)
            approvals.on_open = self.notifier.notify

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.reloader.start(loop)
        runtime = self.proxy.runtime
        if self.admin is None and runtime is not None and any(
                r.approval is not None for s in runtime.policy.skills.values() for r in s.rules):
            log.warning("approval rules with --admin off: nobody can approve, so those "
                        "requests are refused (503 approval_unavailable)")
        if self.admin is not None:
            await self.admin.start()
            runtime = self.proxy.runtime
            address = parse_ip_literal(self.admin_address[0]) if self.admin_address else None
            if runtime is not None and address is not None and self.admin_address:
                runtime.add_self_address(address, self.admin_address[1])  # loop protection
            if runtime is not None:  # where `egress approvals` finds this egress
                write_admin_record(runtime.data_dir, url=self.admin.url,
                                   token=self.admin.generated_token)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.on_stop_signal, sig)

    def on_stop_signal(self, sig: int = signal.SIGTERM) -> None:
        if self.draining:
            log.warning("%s again: stopping now", signal.Signals(sig).name)
            self.proxy.shutdown()
            return
        self.draining = True
        self._drain_task = asyncio.get_running_loop().create_task(self.drain(sig))

    async def drain(self, sig: int = signal.SIGTERM) -> None:
        """Stop listening, wait for open connections (at most drain_seconds), stop the proxy."""
        proxy = self.proxy
        try:
            await proxy.stop_accepting()  # closes the listening sockets only
            open_now = proxy.connection_count()
            log.info("%s: no longer accepting connections; waiting up to %gs for %d open",
                     signal.Signals(sig).name, self.drain_seconds, open_now)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.drain_seconds
            while proxy.connection_count() and loop.time() < deadline:
                await asyncio.sleep(_DRAIN_POLL)
            left = proxy.connection_count()
            if left:
                log.warning("drain timeout: closing %d connections still open", left)
            else:
                log.info("drained: every connection finished")
        except Exception:
            log.exception("error while draining; stopping now")
        finally:
            proxy.shutdown()

    async def stop(self) -> None:
        """After the proxy stopped: admin endpoint, watcher, audit log."""
        if self.admin is not None:
            with contextlib.suppress(Exception):
                await self.admin.stop()
            runtime = self.proxy.runtime
            if runtime is not None:
                remove_admin_record(runtime.data_dir)
        if self.notifier is not None:
            with contextlib.suppress(Exception):
                await self.notifier.close()
        await self.reloader.stop()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        runtime = self.proxy.runtime
        if runtime is not None:
            # Summaries of folded denials and a signed checkpoint (if `done` did not), then
            # what is left to ship; each line is already written with os.write.
            runtime.close()

    def _notify_settings(self) -> ApprovalNotify:
        runtime = self.proxy.runtime
        return runtime.policy.settings.approvals.notify if runtime is not None else ApprovalNotify()
