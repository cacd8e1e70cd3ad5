"""The operator console at /ui/ and the guard in front of it and of /api/ (egress/ops/console_api.py).

The page, its script and its style ship in the package (egress/ops/console/: no build step,
no CDN, nothing fetched from elsewhere) and hold no data; they are served to anyone who can
reach the admin endpoint. Everything else needs the operator:

* `Authorization: Bearer TOKEN` (the CLI, scripts): the admin token, or, when none is
  configured, the token `egress serve` generated for this run and wrote to DATA_DIR/admin.json
  (mode 0600). Approvals never go without a token, even on loopback: a skill on the same host
  must not be able to approve its own requests.
* a console session (browsers): the login form trades the token, or a one-time code from
  `egress console`, for an HttpOnly SameSite=Strict cookie (Secure when the console is
  reached over https) plus a CSRF token the page keeps in memory. A change (POST) from a
  session must carry `X-Egress-CSRF` and an `Origin` naming this console.

Every answer under /ui/ and /api/ carries a Content-Security-Policy that allows only this
origin's script and style (no inline script, no eval, no framing: `frame-ancestors 'none'`,
`X-Frame-Options: DENY`), `Cache-Control: no-store`, `nosniff`, `Referrer-Policy: no-referrer`
and same-origin opener/resource policies. The Host header must be an IP address, localhost or
the host of `settings.approvals.console_url` (a page on another name reaching the console
through DNS rebinding is refused).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from egress.ops.approvals import ApprovalBook
from egress.ops.console_api import Api, ConsoleTarget, Principal, add_api_routes
from egress.ops.sessions import SESSION_TTL, Sessions, clean_name

__all__ = ["COOKIE", "CSP", "Console"]

COOKIE = "egress_console"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
_ASSETS = {"index.html": "text/html", "console.js": "text/javascript",
           "console.css": "text/css"}
# Open to anyone who reaches the endpoint: the page (no data), logging in, and asking
# whether this browser is logged in (the page's first question; no answer holds data).
_PUBLIC = frozenset({"/ui", "/ui/", "/ui/console.js", "/ui/console.css", "/ui/login",
                     "/ui/session"})
_LOGIN_FAILURES = 10  # per minute, for everyone together; then 429 for the rest of it

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Console:
    def __init__(self, target: ConsoleTarget, book: ApprovalBook, *, token: str,
                 console_url: Callable[[], str | None] = lambda: None) -> None:
        """`token`: the operator's bearer token. No I/O here but reading the packaged page."""
        self.sessions = Sessions()
        self.closing = asyncio.Event()
        self.api = Api(target, book, self.sessions, self.closing)
        self._token = token.encode()
        self._console_url = console_url
        self._failures: deque[float] = deque(maxlen=_LOGIN_FAILURES)
        folder = resources.files("egress.ops").joinpath("console")
        self._assets = {name: folder.joinpath(name).read_bytes() for name in _ASSETS}

    @staticmethod
    def handles(path: str) -> bool:
        return path == "/ui" or path.startswith(("/ui/", "/api/"))

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/ui", self.redirect)
        r.add_get("/ui/", self.asset)
        r.add_get("/ui/console.js", self.asset)
        r.add_get("/ui/console.css", self.asset)
        r.add_post("/ui/login", self.login)
        r.add_post("/ui/logout", self.logout)
        r.add_get("/ui/session", self.session)
        add_api_routes(app, self.api)
        app.on_response_prepare.append(self._headers)

    # -- the guard -----------------------------------------------------------------------
    async def guard(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if not self._host_ok(request):
            return _json({"error": "misdirected",
                          "message": "open the console by the admin endpoint's address (or "
                                     "set settings.approvals.console_url to the name you "
                                     "use)"}, 421)
        if request.path not in _PUBLIC:
            who = self._authenticate(request)
            if isinstance(who, web.Response):
                return who
            request["who"] = who
        try:
            return await handler(request)
        except web.HTTPException as exc:  # unknown path or method under /ui/ or /api/
            return _json({"error": "not_found" if exc.status == 404 else "bad_request",
                          "message": exc.reason}, exc.status)

    def _authenticate(self, request: web.Request) -> Principal | web.Response:
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, given = header.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                  self._token):
                return Principal("operator", "api", bearer=True)
            return _unauthorized()
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return _unauthorized()
        if request.method not in ("GET", "HEAD"):
            if not self._same_origin(request):
                return _json({"error": "forbidden", "message": "cross-origin request refused"},
                             403)
            if not self.sessions.csrf_ok(session, request.headers.get("X-Egress-CSRF")):
                return _json({"error": "forbidden", "message": "missing or wrong CSRF token; "
                                                               "reload the console"}, 403)
        return Principal(session.user, "console", bearer=False)

    def _host_ok(self, request: web.Request) -> bool:
        host = urlsplit(f"//{request.host}").hostname or ""
        if host == "localhost":
            return True
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            pass
        url = self._console_url()
        return url is not None and host == (urlsplit(url).hostname or "").lower()

    def _same_origin(self, request: web.Request) -> bool:
        """A browser's POST names its page's origin: it must be this console."""
        origin = request.headers.get("Origin")
        if not origin or origin == "null":
            return False
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site != "same-origin":
            return False
        netloc = urlsplit(origin).netloc.lower()
        url = self._console_url()
        return netloc == request.host.lower() or (
            url is not None and netloc == urlsplit(url).netloc.lower())

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        if self.handles(request.path):
            for name, value in SECURITY_HEADERS.items():
                response.headers[name] = value

    # -- pages and sessions --------------------------------------------------------------
    async def redirect(self, request: web.Request) -> web.Response:
        return web.Response(status=308, headers={"Location": "/ui/"})

    async def asset(self, request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[1] or "index.html"
        return web.Response(body=self._assets[name], content_type=_ASSETS[name],
                            charset="utf-8")

    async def login(self, request: web.Request) -> web.Response:
        """{"token": ..., "name": ...} or {"code": ...}: a session cookie and a CSRF token."""
        if not self._same_origin(request):
            return _json({"error": "forbidden", "message": "cross-origin login refused"}, 403)
        now = time.monotonic()
        if len(self._failures) == _LOGIN_FAILURES and now - self._failures[0] < 60:
            return _json({"error": "rate_limited", "message": "too many failed logins; wait a "
                                                              "minute"}, 429)
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return _json({"error": "bad_request", "message": "send a JSON object"}, 400)
        user: str | None
        if isinstance(body.get("code"), str):
            user = self.sessions.redeem(body["code"])
        elif isinstance(body.get("token"), str) and hmac.compare_digest(
                body["token"].strip().encode(), self._token):
            user = clean_name(body.get("name"))
            if user is None:
                return _json({"error": "bad_request", "message": "give your name: it is "
                                                                 "recorded with every decision"},
                             400)
        else:
            user = None
        if user is None:
            self._failures.append(now)
            return _json({"error": "unauthorized",
                          "message": "wrong token, or the login link was used or expired"}, 401)
        sid, session = self.sessions.login(user)
        response = _json({"user": session.user, "csrf": session.csrf})
        response.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", path="/",
                            max_age=int(SESSION_TTL), secure=self._https(request))
        return response

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.logout(request.cookies.get(COOKIE))
        response = _json({"ok": True})
        response.del_cookie(COOKIE, path="/")
        return response

    async def session(self, request: web.Request) -> web.Response:
        """This browser's session: its user and CSRF token, or nulls when not logged in."""
        session = self.sessions.get(request.cookies.get(COOKIE))
        return _json({"user": session.user if session else None,
                      "csrf": session.csrf if session else None})

    def _https(self, request: web.Request) -> bool:
        url = self._console_url()
        return request.secure or (url is not None and url.startswith("https:"))


def _unauthorized() -> web.Response:
    return _json({"error": "unauthorized",
                  "message": "log in at /ui/, or send Authorization: Bearer <admin token>"},
                 401, {"WWW-Authenticate": 'Bearer realm="egress-admin"'})


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=(json.dumps(body) + "\n").encode(),
                        content_type="application/json", headers=headers)
