"""``op://VAULT/ITEM[/SECTION]/FIELD`` from a 1Password Connect server (its REST API).

1Password's reference syntax names vaults, items, sections and fields by name (or id). The
Connect API finds them in three calls, after its API reference:

    GET /v1/vaults?filter=name eq "VAULT"                  -> [Vault]  (a 26-character id)
    GET /v1/vaults/{vault}/items?filter=title eq "ITEM"    -> [Item]
    GET /v1/vaults/{vault}/items/{item}                    -> FullItem with fields

A name that matches nothing but is a 26-character id is used as the id. Two items with the
same title are an error (the reference would be ambiguous), as with 1Password's own CLI. A
field matches by label or id, within the section (label or id) when the reference names one.

Outcomes: 401 (token refused) and 403 (vault not in the token's scope) -> SecretForbidden;
no such vault, item, section or field, or an empty value -> SecretNotFound; connection
errors, timeouts and 5xx -> SecretUnavailable. ``describe`` returns the item's version and
``updatedAt``. Tokens and values never appear in a message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from egress.errors import SecretForbidden, SecretNotFound, SecretUnavailable
from egress.policy.secret_refs import SecretRef
from egress.policy.secret_settings import OnePasswordSettings
from egress.secrets.base import Secret, SecretInfo, parse_rfc3339
from egress.secrets.http import JsonClient, read_token

__all__ = ["OnePasswordBackend"]

_ID = re.compile(r"[0-9a-z]{26}")


def _quoted(name: str) -> str:
    """A SCIM filter string literal: backslash and double quote escaped."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class OnePasswordBackend:
    """SecretBackend for ``op://`` references. Constructing it does no I/O."""

    def __init__(self, settings: OnePasswordSettings, *,
                 environ: Mapping[str, str] | None = None) -> None:
        self._settings = settings
        self._environ = environ
        self._http = JsonClient(settings.connect_url, name="1Password Connect",
                                timeout=settings.timeout, ca_file=settings.ca_file)

    async def fetch(self, ref: SecretRef) -> Secret:
        item = await self._item(ref)
        value = self._field(ref, item).get("value")
        if not isinstance(value, str) or not value:
            raise SecretNotFound(f"{ref}: the field is empty")
        return Secret(value)

    async def describe(self, ref: SecretRef) -> SecretInfo:
        item = await self._item(ref)
        self._field(ref, item)  # the same errors as a fetch
        version = item.get("version")
        return SecretInfo(version=str(version) if version is not None else None,
                          changed_at=parse_rfc3339(item.get("updatedAt")))

    async def ping(self) -> bool:
        """True when the Connect server answers its heartbeat. Never raises."""
        try:
            status, _ = await self._http.get("/heartbeat", token=None,
                                             what="1Password Connect heartbeat")
        except SecretUnavailable:
            return False
        return status == 200

    async def close(self) -> None:
        await self._http.close()

    # -- lookups -------------------------------------------------------------------------

    async def _item(self, ref: SecretRef) -> dict[str, Any]:
        if ref.scheme != "op":
            raise SecretUnavailable(f"{ref}: the 1Password backend cannot read "
                                    f"{ref.scheme}: references")
        token = read_token(self._settings.token_env, self._settings.token_file,
                           self._environ, "settings.secrets.onepassword")
        parts = ref.parts
        vault_id = await self._find(ref, token, "/v1/vaults", "name", parts[0], "vault")
        item_id = await self._find(ref, token, f"/v1/vaults/{vault_id}/items", "title",
                                   parts[1], "item")
        status, body = await self._http.get(f"/v1/vaults/{vault_id}/items/{item_id}",
                                            token=token, what=str(ref))
        self._check(ref, status, "item")
        if not isinstance(body, dict) or not isinstance(body.get("fields"), list):
            raise SecretUnavailable(f"{ref}: 1Password Connect sent no item fields")
        return body

    async def _find(self, ref: SecretRef, token: Secret, path: str, attribute: str,
                    name: str, kind: str) -> str:
        """The id of the vault or item called `name` (or with that id)."""
        status, body = await self._http.get(path, token=token, what=str(ref),
                                            query={"filter": f"{attribute} eq {_quoted(name)}"})
        self._check(ref, status, kind)
        if not isinstance(body, list):
            raise SecretUnavailable(f"{ref}: 1Password Connect sent no {kind} list")
        ids = [e.get("id") for e in body if isinstance(e, dict) and isinstance(e.get("id"), str)]
        if len(ids) > 1:
            raise SecretNotFound(f"{ref}: {len(ids)} {kind}s are called that; name the "
                                 f"{kind} by its id to choose one")
        if ids:
            return str(ids[0])
        if _ID.fullmatch(name):
            return name  # a 26-character id given instead of a name
        scope = " (or the token may not see it)" if kind == "vault" else ""
        raise SecretNotFound(f"{ref}: no {kind} of that name{scope}")

    @staticmethod
    def _check(ref: SecretRef, status: int, kind: str) -> None:
        if status == 200:
            return
        if status == 401:
            raise SecretForbidden(f"{ref}: 1Password Connect refused the token (401)")
        if status == 403:
            raise SecretForbidden(f"{ref}: the token may not read this vault (403)")
        if status == 404:
            raise SecretNotFound(f"{ref}: no such {kind}")
        raise SecretUnavailable(f"{ref}: 1Password Connect answered HTTP {status}")

    @staticmethod
    def _field(ref: SecretRef, item: dict[str, Any]) -> dict[str, Any]:
        parts = ref.parts
        section_ids: set[object] | None = None
        if len(parts) == 3:
            section_ids = {s.get("id") for s in item.get("sections") or []
                           if isinstance(s, dict) and parts[2] in (s.get("label"), s.get("id"))}
            if not section_ids:
                raise SecretNotFound(f"{ref}: the item has no such section")
        found = []
        for f in item["fields"]:
            if not isinstance(f, dict) or ref.field not in (f.get("label"), f.get("id")):
                continue
            section = f.get("section")
            sid = section.get("id") if isinstance(section, dict) else None
            if section_ids is None or sid in section_ids:
                found.append(f)
        if not found:
            raise SecretNotFound(f"{ref}: the item has no such field")
        if len(found) > 1:
            raise SecretNotFound(f"{ref}: {len(found)} fields have that label; name its "
                                 f"section (op://VAULT/ITEM/SECTION/FIELD) or use its id")
        field: dict[str, Any] = found[0]
        return field
