"""The operator API behind the console and `egress approvals`: approvals, activity, skills.

    GET  /api/approvals[?all=1]        pending approvals (all=1: decided ones remembered too)
    GET  /api/approvals/ID             one approval, with its whole body preview
    POST /api/approvals/ID/approve     {"note": "...", "by": "..."}   (by: bearer callers only)
    POST /api/approvals/ID/deny        the same
    GET  /api/events                   server-sent events: "approvals" on every change
    GET  /api/activity?minutes=60      requests and denials per skill per minute; top denied hosts
    GET  /api/audit?skill=&reason=&host=&decision=&since=&until=&limit=
                                       the newest matching audit records, newest first
    GET  /api/skills                   mode, rules, credential names, limits, last activity
    POST /api/login-link               {"name": "..."}: a one-time console login path (bearer)

Who may call it is settled before a handler runs (egress/ops/console.py): `request["who"]` is
the principal. Every answer is JSON with `Cache-Control: no-store` (set by the console guard).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from egress.audit.query import DENIAL_DECISIONS, Query, audit_files, parse_time
from egress.ops.activity import recent_records, skills_view, tail_records, top_denied_hosts
from egress.ops.approvals import ApprovalBook, ApprovalConflict, ApprovalNotFound, ApprovalState
from egress.ops.sessions import Sessions, clean_name

__all__ = ["Api", "ConsoleTarget", "Principal", "add_api_routes"]

_ID = r"{id:[0-9a-f]{12}}"
_KEEPALIVE = 15.0  # seconds between SSE comments, so proxies keep the stream open
_RECENT = 10  # decided approvals sent with every event
_AUDIT_LIMIT = 1000
_TAIL_BYTES = 8 * 2**20


@dataclass(frozen=True)
class Principal:
    user: str  # the person, as they named themselves ("alice"); "operator" without a name
    via: str  # "console" (a browser session) | "cli" | "api" (a bearer token)
    bearer: bool


class ConsoleTarget(Protocol):
    """What the console reads from the running proxy (EgressAddon provides it)."""

    @property
    def runtime(self) -> Any: ...

    @property
    def metrics(self) -> Any: ...

    def open_connections(self) -> Any: ...


class Api:
    def __init__(self, target: ConsoleTarget, book: ApprovalBook, sessions: Sessions,
                 closing: asyncio.Event) -> None:
        self.target, self.book, self.sessions, self.closing = target, book, sessions, closing

    # -- approvals -----------------------------------------------------------------------
    async def pending(self, request: web.Request) -> web.Response:
        everything = request.query.get("all") in ("1", "true", "yes")
        return _json({"approvals": [e.describe() for e in
                                    self.book.entries(everything=everything)]})

    async def show(self, request: web.Request) -> web.Response:
        try:
            entry = self.book.get(request.match_info["id"])
        except ApprovalNotFound:
            return _not_found(request.match_info["id"])
        return _json(entry.describe(full=True))

    async def approve(self, request: web.Request) -> web.Response:
        return await self._decide(request, grant=True)

    async def deny(self, request: web.Request) -> web.Response:
        return await self._decide(request, grant=False)

    async def _decide(self, request: web.Request, *, grant: bool) -> web.Response:
        who: Principal = request["who"]
        body = await _body(request)
        if body is None:
            return _json({"error": "bad_request", "message": "send a JSON object"}, 400)
        note = body.get("note")
        if note is not None and not isinstance(note, str):
            return _json({"error": "bad_request", "message": "note must be a string"}, 400)
        by = f"{who.user} ({who.via})"
        if who.bearer:  # the CLI says whose shell it runs in; a session knows its user
            name = clean_name(body.get("by")) or who.user
            via = "cli" if body.get("via") == "cli" else "api"
            by = f"{name} ({via})"
        approval_id = request.match_info["id"]
        try:
            entry = self.book.decide(approval_id, grant=grant, by=by, note=note)
        except ApprovalNotFound:
            return _not_found(approval_id)
        except ApprovalConflict as exc:
            current = self.book.get(approval_id)
            return _json({"error": "conflict", "message": str(exc),
                          "approval": current.describe()}, 409)
        return _json(entry.describe())

    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no"})
        await response.prepare(request)
        with self.book.subscribe() as changes:
            try:
                await response.write(self._event())
                while not self.closing.is_set():
                    waiter = asyncio.ensure_future(changes.get())
                    closing = asyncio.ensure_future(self.closing.wait())
                    try:
                        done, _ = await asyncio.wait({waiter, closing}, timeout=_KEEPALIVE,
                                                     return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waiter.cancel()
                        closing.cancel()
                    if self.closing.is_set():
                        break
                    await response.write(self._event() if waiter in done else b": keepalive\n\n")
            except (ConnectionResetError, asyncio.CancelledError):
                pass
        return response

    def _event(self) -> bytes:
        entries = self.book.entries(everything=True)
        pending = [e.describe() for e in entries if e.state is ApprovalState.PENDING]
        recent = [e.describe() for e in entries if e.state is not ApprovalState.PENDING]
        data = json.dumps({"approvals": pending, "recent": recent[-_RECENT:][::-1]})
        return f"event: approvals\ndata: {data}\n\n".encode()

    async def login_link(self, request: web.Request) -> web.Response:
        who: Principal = request["who"]
        if not who.bearer:
            return _json({"error": "forbidden", "message": "login links need the admin token"},
                         403)
        body = await _body(request) or {}
        name = clean_name(body.get("name")) or who.user
        code = self.sessions.issue_code(name)
        return _json({"path": f"/ui/#code={code}", "user": name, "expires_in": 120})

    # -- activity, audit, skills ---------------------------------------------------------
    async def activity(self, request: web.Request) -> web.Response:
        minutes = _int(request.query.get("minutes"), 60, 1, 24 * 60)
        step = max(1, minutes // 60)
        series = self.target.metrics.timeline.series(minutes, step)
        since = datetime.now(UTC) - timedelta(minutes=minutes)
        records, where = await self._records()
        top = top_denied_hosts(records, since=since)
        return _json({"timeline": series, "top_denied_hosts": top, "audit": where})

    async def audit(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            since = parse_time(q["since"]) if q.get("since") else None
            until = parse_time(q["until"]) if q.get("until") else None
        except ValueError as exc:
            return _json({"error": "bad_request", "message": str(exc)}, 400)
        decision = q.get("decision", "denials")
        decisions = {"denials": DENIAL_DECISIONS,
                     "all": frozenset({"allow", "deny", "report", "hold"})}.get(
            decision, frozenset({decision}))
        query = Query(skill=q.get("skill") or None, host=q.get("host") or None,
                      reason=q.get("reason") or None, since=since, until=until,
                      decisions=decisions)
        records, where = await self._records()
        limit = _int(q.get("limit"), 200, 1, _AUDIT_LIMIT)
        return _json({"records": recent_records(records, query, limit), "audit": where})

    async def skills(self, request: web.Request) -> web.Response:
        rt = self.target.runtime
        if rt is None:
            return _json({"skills": [], "policy": None})
        return _json({"skills": skills_view(rt.policy, self.target.metrics.timeline,
                                            self.target.open_connections()),
                      "policy": rt.policy.digest})

    async def _records(self) -> tuple[list[dict[str, Any]], str | None]:
        rt = self.target.runtime
        path = getattr(getattr(rt, "audit", None), "path", None)
        if rt is None or not path or path == "-":
            return [], None  # audit lines go to stdout: nothing to read back here
        audit = Path(path)
        files = audit_files(audit.parent, audit.name)
        return await asyncio.to_thread(tail_records, files, _TAIL_BYTES), str(audit)


def add_api_routes(app: web.Application, api: Api) -> None:
    r = app.router
    r.add_get("/api/approvals", api.pending)
    r.add_get(f"/api/approvals/{_ID}", api.show)
    r.add_post(f"/api/approvals/{_ID}/approve", api.approve)
    r.add_post(f"/api/approvals/{_ID}/deny", api.deny)
    r.add_get("/api/events", api.events)
    r.add_post("/api/login-link", api.login_link)
    r.add_get("/api/activity", api.activity)
    r.add_get("/api/audit", api.audit)
    r.add_get("/api/skills", api.skills)


async def _body(request: web.Request) -> dict[str, Any] | None:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _int(text: str | None, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(text))) if text else default
    except ValueError:
        return default


def _not_found(approval_id: str) -> web.Response:
    return _json({"error": "not_found",
                  "message": f"no approval {approval_id} (decided long ago, or egress "
                             f"restarted: open approvals live in memory)"}, 404)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=(json.dumps(body) + "\n").encode(),
                        content_type="application/json")

