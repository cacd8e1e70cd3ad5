"""The running proxy as `egress serve`'s supervisor drives it: start, drain, stop, report.

Two shapes, one interface (egress/ops/supervisor.py, `Served`):

    FastPath       (the default) the fast path (egress/proxy/front/) listens and handles every
                   connection; mitmproxy runs behind it as the engine for what it hands over
                   (egress/proxy/engine.py), started at start-up when the policy intercepts a
                   host, else on first need (and when a reload brings an intercepting rule)
    MitmproxyOnly  (`egress serve --front off`) mitmproxy listens and handles everything, as
                   under `mitmdump -s addons/egress.py`

Both decide with one Runtime and one Deciding (gate, recorder, metrics, rate limits), write
folded-denial summaries on their interval, and report open connections of both paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from egress.ops.approvals import ApprovalBook
from egress.ops.metrics import Metrics
from egress.ops.runtime import Runtime, flush_audit_periodically
from egress.policy.model import PolicySet
from egress.proxy.deciding import Deciding
from egress.proxy.engine import Engine
from egress.proxy.front.server import FrontServer

__all__ = ["FastPath", "MitmproxyOnly", "intercepts"]

log = logging.getLogger("egress")

_POLICY_POLL = 1.0


def intercepts(policy: PolicySet) -> bool:
    """Some rule looks inside requests (methods, paths, a credential): mitmproxy is needed."""
    return any(rule.needs_interception for skill in policy.skills.values()
               for rule in skill.rules)


class FastPath:
    def __init__(self, runtime: Runtime, deciding: Deciding, build: Callable[[], Any]) -> None:
        """`build()`: the mitmproxy Master for the engine (called once, when it starts).
        No I/O here; `start` listens."""
        self.runtime: Runtime = runtime
        self.metrics: Metrics = deciding.metrics
        self.approvals: ApprovalBook = deciding.approvals
        self._deciding = deciding
        self.engine = Engine(build, deciding)
        self.front = FrontServer(lambda: self.runtime, deciding, self.engine)
        self._stop = asyncio.Event()

    async def start(self, host: str, port: int) -> None:
        if intercepts(self.runtime.policy):
            await self.engine.ready()  # the first intercepted request need not wait for it
        await self.front.start(host, port)

    async def run(self) -> None:
        # Audit lines go off the host whether or not mitmproxy ever starts.
        self.runtime.start_shipping()
        tasks = [asyncio.get_running_loop().create_task(coro) for coro in (
            flush_audit_periodically(lambda: self.runtime), self._watch_policy())]
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await self.front.stop()
            await self.engine.stop()

    async def _watch_policy(self) -> None:
        """Start mitmproxy as soon as a reloaded policy intercepts a host."""
        while not self.engine.started:
            await asyncio.sleep(_POLICY_POLL)
            with contextlib.suppress(Exception):
                if intercepts(self.runtime.policy):
                    self.engine.start_soon()

    # -- Served -------------------------------------------------------------------------
    async def stop_accepting(self) -> None:
        self.front.stop_accepting()

    def connection_count(self) -> int:
        return self.front.open_count() + self.engine.connection_count()

    def shutdown(self) -> None:
        self._stop.set()

    def open_connections(self) -> dict[str, int]:
        counts = Counter(self.front.open_by_skill())
        counts.update(self.engine.open_by_skill())
        return dict(counts)

    def unauthenticated(self) -> int:
        return self.front.unauthenticated() + self.engine.unauthenticated()

    def oauth_grants(self) -> dict[str, int]:
        return oauth_grants(self._deciding)


class MitmproxyOnly:
    def __init__(self, master: Any, runtime: Runtime, deciding: Deciding) -> None:
        self.master = master
        self.runtime: Runtime = runtime
        self.metrics: Metrics = deciding.metrics
        self.approvals: ApprovalBook = deciding.approvals
        self._deciding = deciding
        self.addon = master.addons.get("egressaddon")
        self._proxyserver = master.addons.get("proxyserver")

    async def run(self) -> None:
        flusher = asyncio.get_running_loop().create_task(
            flush_audit_periodically(lambda: self.runtime))
        try:
            await self.master.run()
        finally:
            flusher.cancel()

    async def stop_accepting(self) -> None:
        await self._proxyserver.servers.update([])  # closes the listening sockets only

    def connection_count(self) -> int:
        return len(self._proxyserver.connections)

    def shutdown(self) -> None:
        self.master.shutdown()

    def open_connections(self) -> dict[str, int]:
        return dict(self.addon.open_connections())

    def unauthenticated(self) -> int:
        return int(self.addon.guard.unauthenticated())

    def oauth_grants(self) -> dict[str, int]:
        return oauth_grants(self._deciding)


def oauth_grants(deciding: Deciding) -> dict[str, int]:
    """OAuth access tokens minted so far, by grant type, for /metrics."""
    return dict(deciding.gate.credentials.minter.grants)
