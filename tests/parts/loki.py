"""Loki's push endpoint for tests: ``POST /loki/api/v1/push`` (JSON), recording every entry.

    with loki_server(ca=None) as loki:            # plain HTTP, as Loki listens by default
        loki.push_url                              # http://127.0.0.2:PORT/loki/api/v1/push
        ... ship ...
        loki.entries()                             # [Entry(labels, ns, line, metadata)], in order
        loki.lines({"skill": "alpha"})             # lines of streams with those labels
        loki.server.fail(503) / .down() / .up()    # outage; nothing is recorded meanwhile

Implements Loki's HTTP API "Ingest logs" (grafana.com/docs/loki/latest/reference/loki-http-api):
the JSON body ``{"streams": [{"stream": {LABELS}, "values": [["<unix ns>", "<line>"],
["<unix ns>", "<line>", {STRUCTURED METADATA}]]}]}``, optionally ``Content-Encoding: gzip``;
204 No Content on success. Refused with 400 and a plain-text reason, as Loki does: a body
that is not that JSON, a stream without labels or with a label name outside
``[a-zA-Z_][a-zA-Z0-9_]*``, a timestamp that is not a string of nanoseconds, an entry older
than ``reject_older_than`` (Loki's reject_old_samples_max_age, 168 h) or a line over
``max_line_size`` (256 KiB). With ``tenant`` set, ``X-Scope-OrgID`` must carry it (401
otherwise); with ``token`` set, ``Authorization: Bearer TOKEN`` is required (as a gateway in
front of Loki would ask).

Not implemented: snappy-compressed protobuf pushes (415 here), queries (``/loki/api/v1/query*``),
rate limits and per-stream limits, out-of-order rejection (Loki accepts unordered writes by
default since 2.4, so this does too).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.parts.apiserver import ApiServer, serve_api

__all__ = ["Entry", "LokiServer", "loki_server"]

NAMES = ["loki.logs.test"]
PUSH_PATH = "/loki/api/v1/push"
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAX_BODY = 16 * 2**20


@dataclass(frozen=True)
class Entry:
    labels: dict[str, str]
    ns: int  # unix time in nanoseconds, as pushed
    line: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class _State:
    tenant: str | None
    token: str | None
    max_line_size: int
    reject_older_than: float  # seconds
    entries: list[Entry] = field(default_factory=list)
    pushes: int = 0  # accepted push requests
    lock: threading.Lock = field(default_factory=threading.Lock)


class _BadPush(ValueError):
    pass


def _parse(body: dict[str, Any], state: _State) -> list[Entry]:
    streams = body.get("streams") if isinstance(body, dict) else None
    if not isinstance(streams, list):
        raise _BadPush('body must be {"streams": [...]}')
    oldest_ns = (time.time() - state.reject_older_than) * 1e9
    out: list[Entry] = []
    for stream in streams:
        if not isinstance(stream, dict):
            raise _BadPush("each stream must be an object")
        labels, values = stream.get("stream"), stream.get("values")
        if not isinstance(labels, dict) or not labels:
            raise _BadPush("error at least one label pair is required per stream")
        for name, value in labels.items():
            if not _LABEL.match(name) or not isinstance(value, str):
                raise _BadPush(f"error parsing labels: invalid label name or value {name!r}")
        if not isinstance(values, list):
            raise _BadPush("stream values must be a list")
        for value in values:
            if not isinstance(value, list) or len(value) not in (2, 3):
                raise _BadPush("each value must be [timestamp, line] or [timestamp, line, {}]")
            stamp, line = value[0], value[1]
            if not isinstance(stamp, str) or not stamp.isdigit():
                raise _BadPush(f"timestamp must be a string of unix nanoseconds: {stamp!r}")
            if not isinstance(line, str):
                raise _BadPush("log line must be a string")
            if len(line.encode()) > state.max_line_size:
                raise _BadPush(f"max entry size '{state.max_line_size}' bytes exceeded")
            if int(stamp) < oldest_ns:
                raise _BadPush(f"entry for stream '{labels}' has timestamp too old: {stamp}")
            metadata = value[2] if len(value) == 3 else {}
            if not isinstance(metadata, dict):
                raise _BadPush("structured metadata must be an object")
            out.append(Entry(dict(labels), int(stamp), line, dict(metadata)))
    return out


def _app(state: _State) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)

    async def push(request: web.Request) -> web.Response:
        if state.token is not None and request.headers.get(
                "Authorization") != f"Bearer {state.token}":
            return web.Response(status=401, text="unauthorized\n")
        if state.tenant is not None and request.headers.get("X-Scope-OrgID") != state.tenant:
            return web.Response(status=401, text="no org id\n")
        if request.content_type == "application/x-protobuf":
            return web.Response(status=415, text="protobuf pushes are not implemented here\n")
        if request.content_type != "application/json":
            return web.Response(status=415, text="Content-Type must be application/json\n")
        raw = await request.read()  # aiohttp has already undone Content-Encoding: gzip
        try:
            entries = _parse(json.loads(raw), state)
        except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, _BadPush
            return web.Response(status=400, text=f"{err}\n")
        with state.lock:
            state.entries.extend(entries)
            state.pushes += 1
        return web.Response(status=204)

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ready\n")

    app.router.add_post(PUSH_PATH, push)
    app.router.add_get("/ready", ready)
    return app


class LokiServer:
    """Test-side handle: what arrived, and the server's controls (``server``)."""

    def __init__(self, server: ApiServer, state: _State) -> None:
        self.server = server
        self._state = state

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def push_url(self) -> str:
        return f"{self.server.url}{PUSH_PATH}"

    @property
    def pushes(self) -> int:
        with self._state.lock:
            return self._state.pushes

    def entries(self) -> list[Entry]:
        """Every accepted entry, in the order the pushes arrived (and within a push)."""
        with self._state.lock:
            return list(self._state.entries)

    def lines(self, labels: dict[str, str] | None = None) -> list[str]:
        """Lines of entries whose stream carries all of ``labels``."""
        wanted = (labels or {}).items()
        return [e.line for e in self.entries() if wanted <= e.labels.items()]

    def clear(self) -> None:
        with self._state.lock:
            self._state.entries.clear()
            self._state.pushes = 0


@contextmanager
def loki_server(ca: Any = None, *, host: str = "127.0.0.2", tenant: str | None = None,
                token: str | None = None, max_line_size: int = 256 * 1024,
                reject_older_than: float = 168 * 3600,
                names: list[str] | None = None) -> Iterator[LokiServer]:
    """Serve the push endpoint on host:free-port (plain HTTP unless ``ca`` — a trustme.CA
    or the conftest TestCA — is given)."""
    state = _State(tenant, token, max_line_size, reject_older_than)
    trust = getattr(ca, "ca", ca)
    with serve_api(_app(state), ca=trust, names=names or NAMES, host=host) as server:
        yield LokiServer(server, state)
