"""The admin endpoint: health, readiness, Prometheus metrics and reload, over aiohttp.

    GET  /healthz   200 while the process serves: policy digest, last reload, audit errors
    GET  /readyz    200 when a policy is loaded, the token store is readable, the secret
                    managers (if configured) answer, every credential an enforce-mode rule
                    needs can be produced (each credential's status, by name) and fewer than
                    90% of the file descriptor limit are in use; 503 otherwise, and while
                    draining
    GET  /metrics   Prometheus text format (see egress/ops/metrics.py)
    POST /reload    reload the policy now: 200 with the new digest, 422 with the errors
    /ui/, /api/     the operator console and its API: approvals, activity, skills
                    (egress/ops/console.py, egress/ops/console_api.py)

It listens on loopback by default. Bound to any other address it requires a bearer token
(`Authorization: Bearer TOKEN`; from $EGRESS_ADMIN_TOKEN or DATA_DIR/admin-token) and refuses
to start without one. A configured token is required on loopback too. Tokens are compared
with hmac.compare_digest and never logged or echoed. The console and its API always need
the operator: the admin token, or, without one, a token generated for this run
(`operator_token`, written to DATA_DIR/admin.json by the supervisor).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import hmac
import ipaddress
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from egress.errors import ConfigError
from egress.ops.approvals import ApprovalBook
from egress.ops.console import Console
from egress.ops.credential_health import CredentialHealth, check_credentials
from egress.ops.fdlimit import file_use
from egress.ops.metrics import Metrics, ShipStatus, Snapshot
from egress.ops.reload import Reloader
from egress.ops.runtime import Runtime

__all__ = ["ADMIN_TOKEN_ENV", "ADMIN_TOKEN_FILE", "AdminServer", "Operated", "admin_token",
           "check_admin_bind", "is_loopback", "snapshot"]

log = logging.getLogger("egress")

ADMIN_TOKEN_ENV = "EGRESS_ADMIN_TOKEN"
ADMIN_TOKEN_FILE = "admin-token"
_MIN_TOKEN = 16
_PING_TIMEOUT = 3.0
_PING_CACHE = 2.0  # seconds a secret-manager health answer is reused (probe storms)
FILES_READY_RATIO = 0.9  # /readyz fails once this share of the descriptor limit is in use

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Operated(Protocol):
    """What the admin endpoint reads from the running proxy (EgressAddon provides it)."""

    @property
    def runtime(self) -> Runtime | None: ...

    @property
    def metrics(self) -> Metrics: ...

    def open_connections(self) -> Mapping[str, int]: ...


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def admin_token(data_dir: Path, environ: Mapping[str, str] | None = None) -> str | None:
    """The admin bearer token: $EGRESS_ADMIN_TOKEN, else DATA_DIR/admin-token, else None."""
    env = os.environ if environ is None else environ
    token = env.get(ADMIN_TOKEN_ENV, "").strip()
    if not token:
        try:
            token = (data_dir / ADMIN_TOKEN_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            token = ""
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the admin token file {data_dir / ADMIN_TOKEN_FILE}: "
                              f"{type(exc).__name__}") from exc
    if token and len(token) < _MIN_TOKEN:
        raise ConfigError(f"the admin token is too short: use at least {_MIN_TOKEN} characters, "
                          f"e.g. `openssl rand -hex 32`")
    return token or None


def check_admin_bind(host: str, token: str | None) -> None:
    """Refuse an admin endpoint reachable from the network without a token."""
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"--admin {host}: not a loopback address, so the admin endpoint needs a token: "
            f"set {ADMIN_TOKEN_ENV} or write one to DATA_DIR/{ADMIN_TOKEN_FILE}")


def snapshot(target: Operated, reloader: Reloader | None = None) -> Snapshot:
    """The state /metrics reports, read from the running proxy."""
    rt = target.runtime
    if rt is None:
        return Snapshot(open_connections=target.open_connections())
    stats = getattr(getattr(rt, "secrets", None), "stats", None)
    secrets = None if stats is None else dataclasses.replace(stats)  # a copy: they keep counting
    failing = reloader.failing if reloader is not None else rt.reloads.last_error is not None
    # Every skill of the policy reports 0 rather than vanishing when its last connection closes.
    conns = {"": 0, **dict.fromkeys(rt.policy.skills, 0), **target.open_connections()}
    c = rt.policy.settings.connections
    counted = getattr(target, "unauthenticated", None)  # the fast path's and mitmproxy's
    if counted is None and (guard := getattr(target, "guard", None)) is not None:
        counted = guard.unauthenticated
    files = file_use()
    return Snapshot(
        connection_limits={
            "request_head_timeout_seconds": c.request_head_timeout,
            "idle_before_auth_seconds": c.idle_before_auth,
            "idle_timeout_seconds": c.idle_timeout,
            "clienthello_timeout_seconds": c.clienthello_timeout,
            "max_unauthenticated_per_address": c.max_unauthenticated_per_address,
        },
        unauthenticated_connections=counted() if counted is not None else None,
        open_files=files.open if files is not None else None,
        open_files_limit=files.limit if files is not None else None,
        policy_digest=rt.policy.digest, reloads_ok=rt.reloads.ok, reloads_failed=rt.reloads.failed,
        reload_failing=failing, open_connections=conns, secrets=secrets,
        audit_lines=rt.audit.lines_written, audit_write_errors=rt.audit.write_errors,
        audit_rotations=getattr(rt.audit, "rotations", 0), token_store_ok=rt.tokens.error is None,
        audit_folded=getattr(getattr(rt, "folder", None), "folded", 0),
        audit_summaries=getattr(getattr(rt, "folder", None), "summaries", 0),
        secret_ages={(st.skill, st.credential, st.field): st.age
                     for st in getattr(rt, "secret_status", ()) if st.age is not None},
        secrets_too_old={(st.skill, st.credential, st.field): st.too_old
                         for st in getattr(rt, "secret_status", ()) if st.age is not None},
        oauth_grants=grants() if callable(grants := getattr(target, "oauth_grants", None))
        else {},
        shipping=ship_status(rt),
        spool_errors=_spool_errors(rt),
    )


def _spool_errors(rt: Runtime) -> int:
    shipper = getattr(rt, "shipper", None)
    return shipper.spool.errors if shipper is not None else 0


def ship_status(rt: Runtime, now: float | None = None) -> tuple[ShipStatus, ...]:
    """Where each audit shipping destination stands (settings.audit.ship)."""
    shipper = getattr(rt, "shipper", None)
    if shipper is None:
        return ()
    now = time.time() if now is None else now
    out = []
    for d in rt.policy.settings.audit.ship:
        stats = shipper.stats.get(d.name)
        depth = shipper.spool.depth(d.name)
        oldest = stats.oldest if stats is not None else None
        out.append(ShipStatus(
            d.name, shipped=stats.shipped if stats else 0, failed=stats.failed if stats else 0,
            dropped=shipper.spool.dropped.get(d.name, 0), depth=depth,
            lag=max(0.0, now - oldest) if depth and oldest is not None else 0.0))
    return tuple(out)


@dataclass
class _Ping:
    at: float = -1e9
    ok: bool = False


class AdminServer:
    def __init__(self, target: Operated, reloader: Reloader, *, host: str = "127.0.0.1",
                 port: int = 8081, token: str | None = None,
                 draining: Callable[[], bool] = lambda: False) -> None:
        check_admin_bind(host, token)
        self.target, self.reloader = target, reloader
        self.host, self.port = host, port
        self._token = token.encode() if token else None
        self._draining = draining
        self._runner: web.AppRunner | None = None
        self._ping = _Ping()
        self._health: tuple[float, object, list[CredentialHealth]] | None = None
        # Approvals and the console never go without a token (see egress/ops/console.py).
        self.generated_token = None if token else secrets.token_urlsafe(32)
        self.operator_token = token or self.generated_token or ""
        self.approvals: ApprovalBook | None = getattr(target, "approvals", None)
        self.console = (Console(target, self.approvals, token=self.operator_token,
                                console_url=self._configured_console_url)
                        if self.approvals is not None else None)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def console_url(self) -> str:
        """The console's address as people reach it (settings.approvals.console_url, else
        this endpoint's), for links in notifications."""
        return self._configured_console_url() or f"{self.url}/ui/"

    def _configured_console_url(self) -> str | None:
        rt = self.target.runtime
        return rt.policy.settings.approvals.console_url if rt is not None else None

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        # 16 KiB: a decision's note or a login; nothing here takes more.
        app = web.Application(middlewares=[self._auth], client_max_size=16 * 1024)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/reload", self.reload)
        if self.console is not None:
            self.console.add_routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            hint = ""
            if exc.errno == errno.EADDRINUSE:
                # The first-day case: a second `./run serve`, or another program on 8081.
                hint = (f"; another program (or another egress) listens there: give another "
                        f"port with --admin {self.host}:PORT, or run without the admin "
                        f"endpoint with --admin off")
            raise ConfigError(
                f"--admin {self.host}:{self.port}: cannot listen ({exc.strerror}){hint}"
            ) from exc
        self._runner = runner
        addresses = runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        log.info("admin endpoint on %s/ (healthz, readyz, metrics, reload)%s", self.url,
                 ", bearer token required" if self._token else "")
        if self.approvals is not None:
            self.approvals.available = True  # people can decide from now on
            log.info("console on %s/ui/ (approvals: `egress approvals list`)", self.url)

    async def stop(self) -> None:
        if self.approvals is not None:
            self.approvals.available = False
        if self.console is not None:
            self.console.closing.set()  # ends the server-sent event streams
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- auth ----------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if self.console is not None and self.console.handles(request.path):
            return await self.console.guard(request, handler)  # its own rules, always a token
        if self._token is not None:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            ok = (scheme.lower() == "bearer"
                  and hmac.compare_digest(given.strip().encode(), self._token))
            if not ok:
                return _json({"error": "unauthorized",
                              "message": "send Authorization: Bearer <admin token>"}, 401,
                             {"WWW-Authenticate": 'Bearer realm="egress-admin"'})
        return await handler(request)

    # -- handlers ------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        rt = self.target.runtime
        last = self.reloader.last
        reload_info: dict[str, Any] = {"ok": last is None or last.ok}
        if last is not None:
            reload_info.update(trigger=last.trigger, errors=list(last.errors))
        body = {
            "status": "degraded" if self.reloader.failing else "ok",
            "policy": rt.policy.digest if rt else None,
            "policy_reload": reload_info,
            "audit_write_errors": rt.audit.write_errors if rt else 0,
            "open_connections": sum(self.target.open_connections().values()),
        }
        return _json(body, 200)

    async def readyz(self, request: web.Request) -> web.Response:
        rt = self.target.runtime
        checks: dict[str, dict[str, Any]] = {
            "policy": {"ok": rt is not None, "digest": rt.policy.digest if rt else None},
        }
        if rt is not None:
            checks["tokens"] = {"ok": rt.tokens.error is None}
            if rt.tokens.error:
                checks["tokens"]["error"] = rt.tokens.error
            secrets = rt.policy.settings.secrets
            if secrets is not None and any(getattr(secrets, k, None) is not None
                                           for k in ("vault", "onepassword", "doppler")):
                checks["secrets"] = {"ok": await self._secret_backend_ok(rt)}
            if any(s.credentials for s in rt.policy.skills.values()):
                checks["credentials"] = await self._credentials(rt)
        files = file_use()
        if files is not None:
            # Not ready when fewer than a tenth of the descriptors are left: new tunnels would
            # soon fail with EMFILE; a balancer should send them elsewhere.
            checks["files"] = {"ok": files.ratio < FILES_READY_RATIO, "open": files.open,
                               "limit": files.limit}
        if self.reloader.failing and self.reloader.last is not None:
            # Still ready: the running policy is valid. Shown so a bad edit is not missed.
            checks["policy"]["reload_errors"] = list(self.reloader.last.errors)
        degraded = []
        if rt is not None and rt.policy.settings.audit.ship:
            # Degraded, not unready: the proxy works; its audit lines are not leaving the host.
            limit = rt.policy.settings.audit.ship_degraded_after
            behind = {s.destination: {"lag_seconds": round(s.lag, 1), "spool_lines": s.depth}
                      for s in ship_status(rt)}
            late = sorted(name for name, s in behind.items() if s["lag_seconds"] > limit)
            checks["audit_ship"] = {"ok": not late, "destinations": behind}
            degraded += [f"audit shipping to {name} is more than {limit:g}s behind"
                         for name in late]
        draining = self._draining()
        ready = not draining and all(c["ok"] for name, c in checks.items()
                                     if name != "audit_ship")
        body: dict[str, Any] = {"ready": ready, "checks": checks}
        if degraded:
            body["degraded"] = degraded
        if draining:
            body["draining"] = True
        return _json(body, 200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        text = self.target.metrics.render(snapshot(self.target, self.reloader))
        return web.Response(body=text.encode(), headers={
            "Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def reload(self, request: web.Request) -> web.Response:
        result = await self.reloader.reload("admin")
        body: dict[str, Any] = {"ok": result.ok, "policy": result.policy}
        if not result.ok:
            body["errors"] = list(result.errors)
        return _json(body, 200 if result.ok else 422)

    async def _credentials(self, rt: Runtime) -> dict[str, Any]:
        """Each credential's status (names only); not ok while one an enforce-mode rule
        needs cannot be produced. Fetches go through the secret cache (values stay cached
        for their TTL), at most every _PING_CACHE seconds."""
        now = time.monotonic()
        cached = self._health
        if cached is None or now - cached[0] >= _PING_CACHE or cached[1] is not rt.policy:
            try:
                found = await check_credentials(rt.policy, rt.secrets, timeout=_PING_TIMEOUT)
            except Exception:  # never a crash: report not ready
                log.exception("readyz: checking credentials failed")
                found = []
            self._health = cached = (now, rt.policy, found)
        health = cached[2]
        return {
            "ok": bool(health) and all(c.ok for c in health if c.needed),
            "credentials": {c.name: {"ok": c.ok, "status": c.status, "needed": c.needed,
                                     "backends": list(c.backends)} for c in health},
        }

    async def _secret_backend_ok(self, rt: Runtime) -> bool:
        now = time.monotonic()
        if now - self._ping.at < _PING_CACHE:
            return self._ping.ok
        ok = False
        try:
            ok = await asyncio.wait_for(rt.secrets.ping(), _PING_TIMEOUT)
        except Exception:  # unreachable or timed out is "not ready", never a crash
            ok = False
        self._ping = _Ping(now, ok)
        return ok


def _json(body: Mapping[str, Any], status: int,
          headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=(json.dumps(body) + "\n").encode(),
                        headers={"Content-Type": "application/json", "Cache-Control": "no-store",
                                 **(headers or {})})
