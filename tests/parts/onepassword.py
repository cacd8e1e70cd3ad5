"""A 1Password Connect server for tests: the published Connect API, read side, over TLS.

    with onepassword_server(test_ca) as op:
        vault = op.add_vault("Skills")
        op.add_item("Skills", "Stripe", {"credential": "sk_test_1"})   # CONCEALED field
        token = op.add_token()                 # Bearer token for every vault
        narrow = op.add_token(["Skills"])      # ... or only for these vaults
        op.connect_url                         # https://127.0.0.2:PORT  (settings connect_url)
        op.set_field("Skills", "Stripe", "credential", "sk_test_2")  # rotate: version + 1
        op.server.down() / .up() / .delay = 3 / .fail(500)  # outage, slowness

Implements, after 1Password's "Connect Server API reference" and its OpenAPI file
(1Password/connect, docs/openapi/spec.yaml, API 1.7):

- ``GET /v1/vaults`` with optional ``filter=name eq "NAME"`` -> ``[Vault]`` (id, name,
  description, attributeVersion, contentVersion, items, type, createdAt, updatedAt)
- ``GET /v1/vaults/{vaultUuid}`` -> Vault
- ``GET /v1/vaults/{vaultUuid}/items`` with optional ``filter=title eq "TITLE"`` (or
  ``tag eq "TAG"``) -> ``[Item]`` summaries without fields
- ``GET /v1/vaults/{vaultUuid}/items/{itemUuid}`` -> FullItem: id, title, vault {id},
  category, version, tags, favorite, createdAt, updatedAt, lastEditedBy, sections
  [{id, label}], fields [{id, type, purpose?, label, value, section? {id}}]
- ``GET /heartbeat`` (text ".") and ``GET /health`` (name, version, dependencies), no auth
- ``Authorization: Bearer TOKEN`` on every /v1 call; errors are ErrorResponse
  ``{"status": N, "message": "..."}``: 401 "Invalid token signature" (no, malformed or
  unknown token), 403 "vault VAULT is not in scope", 404 "vault VAULT not found" /
  "item ITEM not found", 400 for a filter the server does not support.

Ids are 26 characters [0-9a-z] as in the spec. Vaults are filtered by ``name`` only and
items by ``title`` or ``tag`` only, as the reference says. Items with the same title may
coexist (the list then has both: a client must notice the ambiguity).

Not implemented: writes through the API (POST/PUT/PATCH/DELETE items), files, /activity,
/metrics, SCIM operators other than ``eq``, pagination. The exact ``message`` texts of
401/400 replies beyond the spec's examples are ours.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import string
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.parts.apiserver import ApiServer, serve_api

__all__ = ["OnePasswordConnect", "onepassword_server"]

NAMES = ["op-connect.test"]
VERSION = "1.7.1"
_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID = re.compile(r"^[\da-z]{26}$")
_FILTER = re.compile(r'^\s*(\w+)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$')
EDITOR = "egresstestuser000000000000"  # a 26-character user id, as Connect returns
SECRET_LABELS = {"credential", "password", "secret", "api_key", "token", "key"}


def _new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))


def _now(after: str | None = None) -> str:
    """RFC 3339 UTC with microseconds; strictly later than ``after`` when given."""
    now = dt.datetime.now(dt.UTC)
    if after is not None:
        previous = dt.datetime.strptime(after, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
        now = max(now, previous + dt.timedelta(microseconds=1))
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Field:
    id: str
    label: str
    value: str
    type: str
    purpose: str = ""
    section: str | None = None  # section id

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type, "label": self.label,
                               "value": self.value}
        if self.purpose:
            out["purpose"] = self.purpose
        if self.section:
            out["section"] = {"id": self.section}
        return out


@dataclass
class _Item:
    id: str
    title: str
    vault_id: str
    category: str
    fields: list[_Field]
    sections: dict[str, str]  # section id -> label
    tags: list[str]
    version: int = 1
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "vault": {"id": self.vault_id},
                "category": self.category, "tags": list(self.tags), "favorite": False,
                "version": self.version, "createdAt": self.created_at,
                "updatedAt": self.updated_at, "lastEditedBy": EDITOR}

    def full(self) -> dict[str, Any]:
        out = self.summary()
        out["sections"] = [{"id": sid, "label": label} for sid, label in self.sections.items()]
        out["fields"] = [f.as_json() for f in self.fields]
        return out


@dataclass
class _Vault:
    id: str
    name: str
    items: dict[str, _Item] = field(default_factory=dict)
    content_version: int = 1
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "description": "", "attributeVersion": 1,
                "contentVersion": self.content_version, "items": len(self.items),
                "type": "USER_CREATED", "createdAt": self.created_at,
                "updatedAt": self.updated_at}


@dataclass
class _State:
    vaults: dict[str, _Vault] = field(default_factory=dict)
    tokens: dict[str, frozenset[str] | None] = field(default_factory=dict)  # None: all vaults
    lock: threading.Lock = field(default_factory=threading.Lock)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"status": status, "message": message}, status=status)


def _parse_filter(text: str | None, allowed: set[str]) -> tuple[str, str] | web.Response | None:
    if text is None:
        return None
    match = _FILTER.match(text)
    if not match or match[1] not in allowed:
        return _error(400, f"Invalid filter: {text!r}; supported: "
                           + ", ".join(f'{a} eq "..."' for a in sorted(allowed)))
    return match[1], re.sub(r"\\(.)", r"\1", match[2])


def _app(state: _State) -> web.Application:
    app = web.Application()

    def scope_of(request: web.Request) -> frozenset[str] | None | web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        with state.lock:
            if scheme.lower() != "bearer" or token not in state.tokens:
                return _error(401, "Invalid token signature")
            return state.tokens[token]

    def vault_for(request: web.Request) -> _Vault | web.Response:
        scope = scope_of(request)
        if isinstance(scope, web.Response):
            return scope
        vault_id = request.match_info["vault"]
        with state.lock:
            vault = state.vaults.get(vault_id)
        if scope is not None and vault_id not in scope:
            return _error(403, f"vault {vault_id} is not in scope")
        if vault is None or not _ID.match(vault_id):
            return _error(404, f"vault {vault_id} not found")
        return vault

    async def list_vaults(request: web.Request) -> web.Response:
        scope = scope_of(request)
        if isinstance(scope, web.Response):
            return scope
        wanted = _parse_filter(request.query.get("filter"), {"name"})
        if isinstance(wanted, web.Response):
            return wanted
        with state.lock:
            found = [v.as_json() for v in state.vaults.values()
                     if (scope is None or v.id in scope)
                     and (wanted is None or v.name == wanted[1])]
        return web.json_response(found)

    async def get_vault(request: web.Request) -> web.Response:
        vault = vault_for(request)
        return vault if isinstance(vault, web.Response) else web.json_response(vault.as_json())

    async def list_items(request: web.Request) -> web.Response:
        vault = vault_for(request)
        if isinstance(vault, web.Response):
            return vault
        wanted = _parse_filter(request.query.get("filter"), {"title", "tag"})
        if isinstance(wanted, web.Response):
            return wanted
        with state.lock:
            items = [i.summary() for i in vault.items.values()
                     if wanted is None
                     or (wanted[0] == "title" and i.title == wanted[1])
                     or (wanted[0] == "tag" and wanted[1] in i.tags)]
        return web.json_response(items)

    async def get_item(request: web.Request) -> web.Response:
        vault = vault_for(request)
        if isinstance(vault, web.Response):
            return vault
        item_id = request.match_info["item"]
        with state.lock:
            item = vault.items.get(item_id)
            body = item.full() if item is not None else None
        if body is None:
            return _error(404, f"item {item_id} not found")
        return web.json_response(body)

    async def heartbeat(request: web.Request) -> web.Response:
        return web.Response(text=".", content_type="text/plain")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"name": "1Password Connect API", "version": VERSION,
                                  "dependencies": [
                                      {"service": "sync", "status": "ACTIVE"},
                                      {"service": "sqlite", "status": "ACTIVE",
                                       "message": "Connected to./1password.sqlite"}]})

    app.router.add_get("/v1/vaults", list_vaults)
    app.router.add_get("/v1/vaults/{vault}", get_vault)
    app.router.add_get("/v1/vaults/{vault}/items", list_items)
    app.router.add_get("/v1/vaults/{vault}/items/{item}", get_item)
    app.router.add_get("/heartbeat", heartbeat)
    app.router.add_get("/health", health)
    return app


class OnePasswordConnect:
    """Test-side handle: vaults, items, tokens, and the server's controls (``server``)."""

    def __init__(self, server: ApiServer, state: _State) -> None:
        self.server = server
        self._state = state

    @property
    def connect_url(self) -> str:
        return self.server.url

    def url_for(self, name: str) -> str:
        return self.server.url_for(name)

    def _vault(self, name_or_id: str) -> _Vault:
        for vault in self._state.vaults.values():
            if name_or_id in (vault.name, vault.id):
                return vault
        raise KeyError(f"no vault {name_or_id!r}")

    def _item(self, vault: str, title: str) -> _Item:
        held = self._vault(vault)
        matches = [i for i in held.items.values() if title in (i.title, i.id)]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} items {title!r} in vault {vault!r}")
        return matches[0]

    def add_vault(self, name: str) -> str:
        with self._state.lock:
            vault = _Vault(_new_id(), name)
            self._state.vaults[vault.id] = vault
            return vault.id

    def add_token(self, vaults: list[str] | None = None) -> str:
        """A Connect access token for the named vaults (all vaults when None)."""
        with self._state.lock:
            scope = None if vaults is None else frozenset(self._vault(v).id for v in vaults)
            token = "eyJ" + secrets.token_urlsafe(32)
            self._state.tokens[token] = scope
            return token

    def revoke_token(self, token: str) -> None:
        with self._state.lock:
            self._state.tokens.pop(token, None)

    def add_item(self, vault: str, title: str, fields: dict[str, str], *,
                 category: str = "API_CREDENTIAL", tags: list[str] | None = None,
                 sections: dict[str, dict[str, str]] | None = None) -> str:
        """Add an item; ``fields`` maps label -> value (CONCEALED when the label looks like
        a secret, else STRING); ``sections`` maps a section label -> {label: value}."""
        with self._state.lock:
            held = self._vault(vault)
            item = _Item(_new_id(), title, held.id, category, [], {}, list(tags or []))
            for label, value in fields.items():
                item.fields.append(self._field(label, value, None))
            for section_label, section_fields in (sections or {}).items():
                sid = _new_id()
                item.sections[sid] = section_label
                for label, value in section_fields.items():
                    item.fields.append(self._field(label, value, sid))
            held.items[item.id] = item
            held.content_version += 1
            held.updated_at = _now(after=held.updated_at)
            return item.id

    @staticmethod
    def _field(label: str, value: str, section: str | None) -> _Field:
        kind = "CONCEALED" if label.lower() in SECRET_LABELS else "STRING"
        purpose = {"password": "PASSWORD", "username": "USERNAME"}.get(label.lower(), "")
        return _Field(_new_id(), label, value, kind, purpose, section)

    def set_field(self, vault: str, title: str, label: str, value: str) -> int:
        """Change (rotate) a field's value; returns the item's new version."""
        with self._state.lock:
            item = self._item(vault, title)
            targets = [f for f in item.fields if f.label == label]
            if not targets:
                raise KeyError(f"no field {label!r} in {title!r}")
            targets[0].value = value
            item.version += 1
            item.updated_at = _now(after=item.updated_at)
            vault_held = self._state.vaults[item.vault_id]
            vault_held.content_version += 1
            vault_held.updated_at = _now(after=vault_held.updated_at)
            return item.version

    def delete_item(self, vault: str, title: str) -> None:
        with self._state.lock:
            item = self._item(vault, title)
            held = self._vault(vault)
            del held.items[item.id]
            held.content_version += 1
            held.updated_at = _now(after=held.updated_at)

    def item_json(self, vault: str, title: str) -> dict[str, Any]:
        with self._state.lock:
            return self._item(vault, title).full()


@contextmanager
def onepassword_server(ca: Any, *, host: str = "127.0.0.2",
                       names: list[str] | None = None) -> Iterator[OnePasswordConnect]:
    """Serve the Connect API on host:free-port (TLS when ``ca`` — a trustme.CA or the
    conftest TestCA — is given, plain HTTP when None, as Connect's own default on :8080)."""
    state = _State()
    trust = getattr(ca, "ca", ca)
    with serve_api(_app(state), ca=trust, names=names or NAMES, host=host) as server:
        yield OnePasswordConnect(server, state)
