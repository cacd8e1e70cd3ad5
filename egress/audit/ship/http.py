"""Batched HTTP POSTs of audit lines: JSON Lines, Loki's push API, or OCSF events.

    jsonl   Content-Type: application/x-ndjson, the audit lines as written, one per line
    loki    Content-Type: application/json, {"streams": [{"stream": LABELS, "values":
            [["<unix ns>", "<line>"], ...]}]}: labels app="egress", instance (this host),
            skill ("-" when unauthenticated), decision and reason (event for audit lines)
    ocsf    Content-Type: application/x-ndjson, one OCSF 1.5 event per line (ocsf.py), the
            audit line in its raw_data

A batch counts as delivered when the receiver answers 2xx; anything else (or no answer) is
retried, from the same line, with backoff. A 413 halves the batch. `token` (a secret
reference) is fetched through the secret cache for each batch and sent as
`Authorization: Bearer`; it appears in no log line or error.
"""

from __future__ import annotations

import json
import socket
import ssl
from datetime import datetime
from typing import Any

from egress.audit.ship.lane import ShipError
from egress.audit.ship.ocsf import to_ocsf
from egress.errors import SecretError
from egress.policy.ship_settings import HttpDestination
from egress.secrets.cache import SecretCache

__all__ = ["HttpSender", "jsonl_body", "loki_body", "ocsf_body"]

TIMEOUT = 30.0
_TYPES = {"jsonl": "application/x-ndjson", "loki": "application/json",
          "ocsf": "application/x-ndjson"}


def jsonl_body(lines: list[bytes]) -> bytes:
    return b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines)


def ocsf_body(lines: list[bytes]) -> bytes:
    return b"".join(json.dumps(to_ocsf(line.rstrip(b"\n").decode("utf-8"))).encode() + b"\n"
                    for line in lines)


def loki_body(lines: list[bytes], *, instance: str, last_ns: int = 0) -> tuple[bytes, int]:
    """The push body, and the last timestamp used: timestamps are the lines' `ts` in
    nanoseconds, made strictly increasing so that sorting by them gives the written order."""
    streams: dict[tuple[tuple[str, str], ...], list[list[str]]] = {}
    for raw in lines:
        text = raw.rstrip(b"\n").decode("utf-8")
        try:
            record = json.loads(text)
        except ValueError:
            record = {}
        if not isinstance(record, dict):
            record = {}
        labels = (("app", "egress"), ("instance", instance),
                  ("skill", str(record.get("skill") or "-")),
                  ("decision", str(record.get("decision") or "-")),
                  ("reason", str(record.get("reason") or record.get("event") or "-")))
        ns = max(_ns(record.get("ts")), last_ns + 1)
        last_ns = ns
        streams.setdefault(labels, []).append([str(ns), text])
    body = {"streams": [{"stream": dict(labels), "values": values}
                        for labels, values in streams.items()]}
    return json.dumps(body, separators=(",", ":")).encode(), last_ns


def _ns(ts: Any) -> int:
    try:
        when = datetime.fromisoformat(str(ts))
    except ValueError:
        return 0
    return int(when.timestamp() * 1000) * 1_000_000


class HttpSender:
    confirms_on_send = True

    def __init__(self, dest: HttpDestination, secrets: SecretCache | None) -> None:
        self.dest = dest
        self.batch = dest.batch
        self._secrets = secrets
        self._session: Any = None
        self._last_ns = 0
        self._instance = "".join(c for c in socket.gethostname() if c.isprintable()) or "-"

    async def _open(self) -> Any:
        if self._session is None:
            import aiohttp

            context = ssl.create_default_context(cafile=self.dest.ca)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=TIMEOUT),
                connector=aiohttp.TCPConnector(ssl=context, limit=1),
                trust_env=False)  # never through HTTP(S)_PROXY: maybe egress itself
        return self._session

    async def send(self, lines: list[bytes]) -> None:
        import aiohttp

        fmt = self.dest.format
        last_ns = self._last_ns
        if fmt == "loki":
            body, last_ns = loki_body(lines, instance=self._instance, last_ns=self._last_ns)
        elif fmt == "ocsf":
            body = ocsf_body(lines)
        else:
            body = jsonl_body(lines)
        headers = {**dict(self.dest.headers), "Content-Type": _TYPES[fmt]}
        if self.dest.token is not None:
            if self._secrets is None:
                raise ShipError("token: no secret backend configured")
            try:
                cached = await self._secrets.get(self.dest.token)
            except SecretError as exc:
                raise ShipError(f"token {self.dest.token}: {type(exc).__name__}") from None
            headers["Authorization"] = f"Bearer {cached.secret.reveal()}"
        session = await self._open()
        try:
            async with session.post(self.dest.url, data=body, headers=headers,
                                    allow_redirects=False) as response:
                status = response.status
                text = "" if status < 300 else (await response.text(errors="replace"))[:200]
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ShipError(f"POST failed: {type(exc).__name__}") from None
        if status == 413 and len(lines) > 1:
            self.batch = max(1, len(lines) // 2)
            raise ShipError(f"413 for {len(lines)} lines: sending {self.batch} at a time")
        if not 200 <= status < 300:
            shown = "".join(c if c.isprintable() else " " for c in text).strip()
            raise ShipError(f"HTTP {status}" + (f": {shown}" if shown else ""))
        self._last_ns = last_ns

    async def confirmed(self) -> int:
        return 0

    def pending(self) -> int:
        return 0

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
