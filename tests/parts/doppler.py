"""Doppler's secrets API (v3) for tests: one secret or a whole config, service and personal
tokens, over TLS.

    with doppler_server(test_ca) as doppler:
        doppler.set_secret("backend", "prd", "STRIPE_KEY", "sk_live_1")
        st = doppler.add_service_token("backend", "prd")   # dp.st.prd.…: this config only
        pt = doppler.add_personal_token()                  # dp.pt.…: needs project+config
        doppler.api_url                                    # https://127.0.0.2:PORT
        doppler.set_secret("backend", "prd", "STRIPE_KEY", "sk_live_2")   # rotate
        doppler.server.down() / .up() / .delay = 3 / .fail(500)

Implements, after Doppler's API reference (docs.doppler.com/reference/api) and what the
Doppler CLI (DopplerHQ/cli, pkg/http) expects of it:

- ``GET /v3/configs/config/secret?project=P&config=C&name=NAME`` ->
  ``{"name": NAME, "value": {"raw", "computed", "note", "rawVisibility",
  "computedVisibility", "rawValueType", "computedValueType"}, "success": true}``
  (``computed`` expands ``${OTHER}`` references within the config; ``raw`` does not)
- ``GET /v3/configs/config/secrets/download?format=json`` (or ``env``) -> the config as a
  flat object, including ``DOPPLER_PROJECT``, ``DOPPLER_CONFIG`` and
  ``DOPPLER_ENVIRONMENT`` as Doppler adds them; an ``ETag``, and ``If-None-Match`` with it
  answers 304 until a secret changes
- Authentication by ``Authorization: Bearer TOKEN`` or HTTP Basic with the token as the user
  name (both documented). Service tokens (``dp.st.CONFIG.…``) reach one config: project and
  config may be omitted, naming another one is 403. Personal tokens (``dp.pt.…``) reach all
  projects and must name project and config (400 otherwise).
- Errors are ``{"messages": ["..."], "success": false}`` (the shape the CLI parses):
  401 bad token, 400 missing parameter, 403 other config, 404 unknown project / config /
  secret.

Not implemented: writes through the API, config logs (so no change timestamps: the API
has none on a secret), dynamic secrets, service accounts, ``name_transformer``,
cross-project references, rate limits. The message texts are ours; the shapes are Doppler's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.parts.apiserver import ApiServer, serve_api

__all__ = ["DopplerApi", "doppler_server"]

NAMES = ["api.doppler.test"]
_REFERENCE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


@dataclass(frozen=True)
class _Token:
    kind: str  # "service" | "personal"
    project: str | None = None
    config: str | None = None


@dataclass
class _State:
    configs: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    tokens: dict[str, _Token] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"messages": [message], "success": False}, status=status)


def _computed(secrets_of_config: dict[str, str], value: str) -> str:
    return _REFERENCE.sub(lambda m: secrets_of_config.get(m[1], ""), value)


def _token_of(request: web.Request) -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
        except (ValueError, UnicodeDecodeError):
            return ""
    return ""


def _app(state: _State) -> web.Application:
    app = web.Application()

    def target(request: web.Request) -> tuple[str, str, dict[str, str]] | web.Response:
        """(project, config, its secrets) the token may read, or the error reply."""
        with state.lock:
            token = state.tokens.get(_token_of(request))
        if token is None:
            return _error(401, "Invalid Auth token")
        project = request.query.get("project") or token.project
        config = request.query.get("config") or token.config
        if not project:
            return _error(400, "You must specify a project")
        if not config:
            return _error(400, "You must specify a config")
        if token.kind == "service" and (project, config) != (token.project, token.config):
            return _error(403, "This token does not have access to requested project or config")
        with state.lock:
            known_projects = {p for p, _ in state.configs}
            held = state.configs.get((project, config))
            values = dict(held) if held is not None else None
        if project not in known_projects:
            return _error(404, "Could not find requested project")
        if values is None:
            return _error(404, "Could not find requested config")
        return project, config, values

    async def one_secret(request: web.Request) -> web.Response:
        found = target(request)
        if isinstance(found, web.Response):
            return found
        _, _, values = found
        name = request.query.get("name", "")
        if not name:
            return _error(400, "You must specify a secret name")
        if name not in values:
            return _error(404, "Could not find requested secret")
        raw = values[name]
        return web.json_response({
            "name": name,
            "value": {"raw": raw, "computed": _computed(values, raw), "note": "",
                      "rawVisibility": "masked", "computedVisibility": "masked",
                      "rawValueType": {"type": "string"},
                      "computedValueType": {"type": "string"}},
            "success": True})

    async def download(request: web.Request) -> web.Response:
        found = target(request)
        if isinstance(found, web.Response):
            return found
        project, config, values = found
        fmt = request.query.get("format", "json")
        if fmt not in ("json", "env"):
            return _error(400, "Invalid format; supported here: json, env")
        flat = {name: _computed(values, raw) for name, raw in sorted(values.items())}
        flat.update(DOPPLER_PROJECT=project, DOPPLER_CONFIG=config,
                    DOPPLER_ENVIRONMENT=config.split("_", 1)[0])
        body = (json.dumps(flat) if fmt == "json"
                else "".join(f"{k}={json.dumps(v)}\n" for k, v in flat.items()))
        etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(text=body, headers={"ETag": etag},
                            content_type="application/json" if fmt == "json" else "text/plain")

    app.router.add_get("/v3/configs/config/secret", one_secret)
    app.router.add_get("/v3/configs/config/secrets/download", download)
    return app


class DopplerApi:
    """Test-side handle: configs, secrets, tokens, and the server's controls (``server``)."""

    def __init__(self, server: ApiServer, state: _State) -> None:
        self.server = server
        self._state = state

    @property
    def api_url(self) -> str:
        return self.server.url

    def url_for(self, name: str) -> str:
        return self.server.url_for(name)

    def set_secret(self, project: str, config: str, name: str, value: str) -> None:
        """Create the project/config as needed and set (or rotate) one secret."""
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
            raise ValueError("Doppler secret names are upper-case letters, digits, underscores")
        with self._state.lock:
            self._state.configs.setdefault((project, config), {})[name] = value

    def delete_secret(self, project: str, config: str, name: str) -> None:
        with self._state.lock:
            self._state.configs[(project, config)].pop(name, None)

    def add_config(self, project: str, config: str) -> None:
        with self._state.lock:
            self._state.configs.setdefault((project, config), {})

    def add_service_token(self, project: str, config: str) -> str:
        with self._state.lock:
            token = f"dp.st.{config}.{secrets.token_urlsafe(30)}"
            self._state.tokens[token] = _Token("service", project, config)
            return token

    def add_personal_token(self) -> str:
        with self._state.lock:
            token = f"dp.pt.{secrets.token_urlsafe(30)}"
            self._state.tokens[token] = _Token("personal")
            return token

    def revoke_token(self, token: str) -> None:
        with self._state.lock:
            self._state.tokens.pop(token, None)


@contextmanager
def doppler_server(ca: Any, *, host: str = "127.0.0.2",
                   names: list[str] | None = None) -> Iterator[DopplerApi]:
    """Serve Doppler's API on host:free-port (TLS when ``ca`` — a trustme.CA or the
    conftest TestCA — is given)."""
    state = _State()
    trust = getattr(ca, "ca", ca)
    with serve_api(_app(state), ca=trust, names=names or NAMES, host=host) as server:
        yield DopplerApi(server, state)
