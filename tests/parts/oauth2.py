"""An OAuth 2.0 authorization server (token endpoint) and a protected resource, over TLS.

    with oauth2_server(test_ca, rotate_refresh_tokens=True, expires_in=2) as auth:
        auth.add_client("skill-app", "s3cr3t", scope="read write")
        refresh = auth.issue_refresh_token("skill-app", scope="read")  # as after a login
        auth.token_url                       # https://127.0.0.2:PORT/oauth/token
        auth.url_for("auth.oauth.test")      # same server by name (certificate names it)
        auth.resource_url                    # https://127.0.0.2:PORT/api/... (any path)
        auth.grants["client_credentials"]    # how many tokens each grant type minted
        auth.valid_refresh_tokens("skill-app")  # after rotation: the one that still works
        auth.expire_access_tokens()          # every access token issued so far stops working

Token endpoint (RFC 6749): ``POST /oauth/token``, form-encoded, ``grant_type`` =
``client_credentials`` (§4.4) or ``refresh_token`` (§6). Client authentication (§2.3.1) by
HTTP Basic (client id and secret form-urlencoded, then base64) or by ``client_id`` and
``client_secret`` in the body; both at once is ``invalid_request``. Success (§5.1):
``{"access_token", "token_type": "Bearer", "expires_in", "scope"}`` with ``Cache-Control:
no-store``; the refresh grant also returns a ``refresh_token`` when rotation is on (and the
old one stops working: reuse is ``invalid_grant``). Errors (§5.2): 400 JSON ``{"error",
"error_description"}`` with the RFC's codes; ``invalid_client`` is 401 with
``WWW-Authenticate: Basic`` when the client tried Basic. A requested ``scope`` wider than
the client's (or the refresh token's) is ``invalid_scope``; omitted, the whole grant is
given. Parameters may not repeat. Only POST (405 otherwise).

Protected resource (RFC 6750): any path under ``/api/``; ``Authorization: Bearer TOKEN``
with a token this server issued and that has not expired answers 200 JSON (client_id,
scope, method, path); otherwise 401 with ``WWW-Authenticate: Bearer ... error=
"invalid_token"`` (no credentials: no error code, per §3.1). ``require_scope`` on a path
prefix gives 403 ``insufficient_scope``.

Not implemented: authorization code / PKCE / device flows, JWT access tokens or
introspection, client assertion auth (private_key_jwt), token revocation endpoint.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import trustme
from aiohttp import web

from tests.parts.apiserver import ApiServer, serve_api

__all__ = ["OAuth2Server", "oauth2_server"]

NAMES = ["auth.oauth.test", "api.oauth.test"]
MAX_FORM = 64 * 1024


@dataclass
class _Client:
    secret: str
    scope: frozenset[str]


@dataclass
class _Token:
    client_id: str
    scope: frozenset[str]
    expires_at: float  # time.monotonic(); inf for refresh tokens


class _OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400,
                 basic_challenge: bool = False) -> None:
        super().__init__(description)
        self.error, self.description = error, description
        self.status, self.basic_challenge = status, basic_challenge


def _scope_text(scope: frozenset[str]) -> str:
    return " ".join(sorted(scope))


@dataclass
class OAuth2State:
    """Clients, tokens and counters; shared by the handlers and the test (under a lock)."""

    expires_in: int = 3600
    rotate_refresh_tokens: bool = False
    clients: dict[str, _Client] = field(default_factory=dict)
    access: dict[str, _Token] = field(default_factory=dict)
    refresh: dict[str, _Token] = field(default_factory=dict)
    grants: Counter[str] = field(default_factory=Counter)  # grant type -> tokens minted
    errors: Counter[str] = field(default_factory=Counter)  # OAuth error code -> count
    scope_rules: dict[str, frozenset[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mint(self, client_id: str, scope: frozenset[str], grant: str) -> dict[str, Any]:
        token = "at-" + secrets.token_urlsafe(24)
        self.access[token] = _Token(client_id, scope, time.monotonic() + self.expires_in)
        self.grants[grant] += 1
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer",
                                  "expires_in": self.expires_in}
        if scope:
            answer["scope"] = _scope_text(scope)
        return answer


def _client_auth(request: web.Request, form: dict[str, str]) -> tuple[str, str, bool]:
    """(client_id, secret, used_basic) from exactly one of Basic and the body (§2.3.1)."""
    header = request.headers.get("Authorization", "")
    in_body = "client_secret" in form
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            raise _OAuthError("invalid_client", "only HTTP Basic client authentication",
                              401, True)
        if in_body:
            raise _OAuthError("invalid_request", "more than one client authentication method")
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode(
                "utf-8").partition(":")
        except (ValueError, UnicodeDecodeError) as exc:
            raise _OAuthError("invalid_client", "malformed Basic credentials", 401,
                              True) from exc
        return unquote_plus(user), unquote_plus(password), True
    if in_body:
        return form.get("client_id", ""), form["client_secret"], False
    raise _OAuthError("invalid_client", "client authentication required", 401, True)


def _requested_scope(form: dict[str, str], allowed: frozenset[str]) -> frozenset[str]:
    if "scope" not in form:
        return allowed
    wanted = frozenset(form["scope"].split())
    if not wanted <= allowed:
        raise _OAuthError("invalid_scope", f"scope not granted: {_scope_text(wanted - allowed)}")
    return wanted


def _token_app(state: OAuth2State) -> web.Application:
    app = web.Application(client_max_size=MAX_FORM)

    async def token(request: web.Request) -> web.Response:
        try:
            answer = await _grant(request)
        except _OAuthError as err:
            with state.lock:
                state.errors[err.error] += 1
            headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
            if err.basic_challenge and err.status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="egress-test"'
            return web.json_response({"error": err.error, "error_description": err.description},
                                     status=err.status, headers=headers)
        return web.json_response(answer, headers={"Cache-Control": "no-store",
                                                  "Pragma": "no-cache"})

    async def _grant(request: web.Request) -> dict[str, Any]:
        if request.content_type != "application/x-www-form-urlencoded":
            raise _OAuthError("invalid_request", "body must be application/x-www-form-urlencoded")
        pairs = parse_qsl((await request.read()).decode("utf-8", "replace"),
                          keep_blank_values=True)
        form = dict(pairs)
        if len(form) != len(pairs):
            raise _OAuthError("invalid_request", "a parameter is repeated")
        client_id, secret, basic = _client_auth(request, form)
        grant = form.get("grant_type", "")
        with state.lock:
            client = state.clients.get(client_id)
            if client is None or not secrets.compare_digest(client.secret, secret):
                raise _OAuthError("invalid_client", "unknown client or wrong secret",
                                  401 if basic else 400, basic)
            if grant == "client_credentials":
                return state.mint(client_id, _requested_scope(form, client.scope), grant)
            if grant == "refresh_token":
                return _refresh(client_id, form)
            if not grant:
                raise _OAuthError("invalid_request", "grant_type is missing")
            raise _OAuthError("unsupported_grant_type", f"grant_type {grant!r}")

    def _refresh(client_id: str, form: dict[str, str]) -> dict[str, Any]:
        presented = form.get("refresh_token")
        if not presented:
            raise _OAuthError("invalid_request", "refresh_token is missing")
        held = state.refresh.get(presented)
        if held is None or held.client_id != client_id:
            raise _OAuthError("invalid_grant", "refresh token is invalid, used or revoked")
        scope = _requested_scope(form, held.scope)
        answer = state.mint(client_id, scope, "refresh_token")
        if state.rotate_refresh_tokens:
            del state.refresh[presented]
            rotated = "rt-" + secrets.token_urlsafe(24)
            state.refresh[rotated] = _Token(client_id, held.scope, float("inf"))
            answer["refresh_token"] = rotated
        return answer

    async def not_post(request: web.Request) -> web.Response:
        return web.json_response({"error": "invalid_request",
                                  "error_description": "use POST"}, status=405,
                                 headers={"Allow": "POST"})

    async def resource(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return web.json_response({"error": "unauthorized"}, status=401, headers={
                "WWW-Authenticate": 'Bearer realm="egress-test"'})
        with state.lock:
            held = state.access.get(value.strip())
            valid = held is not None and held.expires_at > time.monotonic()
            needed = next((scope for prefix, scope in state.scope_rules.items()
                           if request.path.startswith(prefix)), frozenset())
        if not valid or held is None:
            return web.json_response({"error": "invalid_token"}, status=401, headers={
                "WWW-Authenticate": 'Bearer realm="egress-test", error="invalid_token", '
                                    'error_description="unknown or expired access token"'})
        if not needed <= held.scope:
            return web.json_response({"error": "insufficient_scope"}, status=403, headers={
                "WWW-Authenticate": f'Bearer realm="egress-test", error="insufficient_scope", '
                                    f'scope="{_scope_text(needed)}"'})
        return web.json_response({"client_id": held.client_id, "scope": _scope_text(held.scope),
                                  "method": request.method, "path": request.path})

    app.router.add_post("/oauth/token", token)
    app.router.add_route("*", "/oauth/token", not_post)
    app.router.add_route("*", "/api/{tail:.*}", resource)
    return app


class OAuth2Server:
    """Test-side handle: set-up, counters and the server's controls (``server``)."""

    def __init__(self, server: ApiServer, state: OAuth2State) -> None:
        self.server = server
        self.state = state

    @property
    def url(self) -> str:
        return self.server.url

    def url_for(self, name: str) -> str:
        return self.server.url_for(name)

    @property
    def token_url(self) -> str:
        return f"{self.server.url}/oauth/token"

    @property
    def resource_url(self) -> str:
        return f"{self.server.url}/api/resource"

    @property
    def grants(self) -> Counter[str]:
        with self.state.lock:
            return Counter(self.state.grants)

    @property
    def errors(self) -> Counter[str]:
        with self.state.lock:
            return Counter(self.state.errors)

    def add_client(self, client_id: str, secret: str, scope: str = "") -> None:
        with self.state.lock:
            self.state.clients[client_id] = _Client(secret, frozenset(scope.split()))

    def issue_refresh_token(self, client_id: str, scope: str | None = None) -> str:
        """A refresh token for the client, as an earlier authorization would have left."""
        with self.state.lock:
            client = self.state.clients[client_id]
            token = "rt-" + secrets.token_urlsafe(24)
            granted = client.scope if scope is None else frozenset(scope.split())
            self.state.refresh[token] = _Token(client_id, granted, float("inf"))
            return token

    def valid_refresh_tokens(self, client_id: str) -> list[str]:
        with self.state.lock:
            return [t for t, held in self.state.refresh.items() if held.client_id == client_id]

    def revoke_refresh_token(self, token: str) -> None:
        with self.state.lock:
            self.state.refresh.pop(token, None)

    def set_expires_in(self, seconds: int) -> None:
        """Lifetime of the access tokens minted from now on."""
        with self.state.lock:
            self.state.expires_in = seconds

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is expired from now on."""
        with self.state.lock:
            for held in self.state.access.values():
                held.expires_at = 0.0

    def is_valid(self, access_token: str) -> bool:
        with self.state.lock:
            held = self.state.access.get(access_token)
            return held is not None and held.expires_at > time.monotonic()

    def require_scope(self, path_prefix: str, scope: str) -> None:
        """The resource under ``path_prefix`` needs every scope in ``scope``."""
        with self.state.lock:
            self.state.scope_rules[path_prefix] = frozenset(scope.split())


@contextmanager
def oauth2_server(ca: trustme.CA | Any | None, *, expires_in: int = 3600,
                  rotate_refresh_tokens: bool = False, host: str = "127.0.0.2",
                  names: list[str] | None = None) -> Iterator[OAuth2Server]:
    """Serve the token endpoint and resource on host:free-port (TLS when ``ca`` — a
    trustme.CA or the conftest TestCA — is given); stopped on the way out."""
    state = OAuth2State(expires_in=expires_in, rotate_refresh_tokens=rotate_refresh_tokens)
    trust = getattr(ca, "ca", ca)
    with serve_api(_token_app(state), ca=trust, names=names or NAMES, host=host) as server:
        yield OAuth2Server(server, state)
