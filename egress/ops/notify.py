"""Telling people an approval waits: a webhook (Slack-compatible JSON) and/or a command.

`Notifier.notify` is called on the request path when an approval opens; it only schedules
the work and returns. Each notification runs as its own task, bounded by
`settings.approvals.notify.timeout`; at most `max_in_flight` run at once (more are dropped
and logged). A failing or slow notifier is logged and never delays or fails the request.

The webhook gets `{"text": ..., "blocks": [...], "egress": {...}}`: `text` and `blocks` are
what Slack (and Mattermost, Rocket.Chat, Teams' Slack-compatible hooks) show, with a link
to the approval in the console; `egress` has the same facts as fields for other receivers.
Text a skill controls (the path) is escaped for Slack's markup (`<`, `>`, `&`), so a path
cannot make a link or mention anyone. Bodies and query strings are never sent.

The command (argv, no shell) gets the `egress` fields as JSON on stdin and
EGRESS_APPROVAL_ID / EGRESS_APPROVAL_URL in its environment. The webhook URL may be kept
out of the policy file: `env:NAME` or `file:/PATH` (it is a secret; it is never logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from egress.ops.approvals import ApprovalEntry
from egress.policy.model import ApprovalNotify

__all__ = ["Notifier", "approval_message", "slack_escape"]

log = logging.getLogger("egress")

_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ", "HOME")


def slack_escape(text: str) -> str:
    """Text for Slack mrkdwn: `&`, `<` and `>` escaped (no links, no mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def approval_fields(entry: ApprovalEntry, url: str) -> dict[str, Any]:
    r = entry.request
    return {"approval": entry.id, "skill": r.skill, "method": r.method, "host": r.host,
            "port": r.port, "path": r.view.path, "rule": r.rule, "credential": r.credential,
            "asked_at": entry.asked_at, "expires_at": entry.expires_at,
            "previous": dict(entry.previous), "url": url}


def approval_message(entry: ApprovalEntry, url: str) -> dict[str, Any]:
    """The webhook's JSON body."""
    r = entry.request
    where = f"{r.host}{'' if r.port in (443, 80) else f':{r.port}'}{r.view.path}"
    line = (f"egress: skill *{slack_escape(r.skill)}* asks to "
            f"`{slack_escape(r.method)} {slack_escape(where)}`")
    link = f"<{slack_escape(url)}|Review approval {entry.id}>"
    context = (f"rule {slack_escape(r.rule)} · asked {entry.asked_at} · open until "
               f"{entry.expires_at}")
    return {
        "text": f"{line}: {link}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{line}\n{link}"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
        "egress": approval_fields(entry, url),
    }


class Notifier:
    def __init__(self, settings: Callable[[], ApprovalNotify],
                 console_url: Callable[[], str], *, max_in_flight: int = 20) -> None:
        """`console_url()`: the console's /ui/ address as people reach it. No I/O here."""
        self._settings, self._console_url = settings, console_url
        self._max = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: Any = None  # aiohttp.ClientSession, made on first use

    def notify(self, entry: ApprovalEntry) -> None:
        """Schedule the notifications for a new approval; returns at once."""
        settings = self._settings()
        if settings.webhook is None and settings.command is None:
            return
        if len(self._tasks) >= self._max:
            log.warning("approval %s: %d notifications still running; this one is dropped",
                        entry.id, len(self._tasks))
            return
        url = f"{self._console_url()}#approval={entry.id}"
        task = asyncio.get_running_loop().create_task(self._send(entry, url, settings))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _send(self, entry: ApprovalEntry, url: str, settings: ApprovalNotify) -> None:
        if settings.webhook is not None:
            try:
                await asyncio.wait_for(self._webhook(settings.webhook,
                                                     approval_message(entry, url)),
                                       settings.timeout)
            except TimeoutError:
                log.warning("approval %s: webhook did not answer within %gs", entry.id,
                            settings.timeout)
            except Exception as exc:  # never raise into the event loop; never log the URL
                log.warning("approval %s: webhook failed: %s", entry.id, _describe(exc))
        if settings.command is not None:
            try:
                await self._command(settings.command, approval_fields(entry, url), url,
                                    entry.id, settings.timeout)
            except Exception as exc:
                log.warning("approval %s: notify command failed: %s", entry.id, _describe(exc))

    async def _webhook(self, where: str, message: dict[str, Any]) -> None:
        import aiohttp

        url = _webhook_url(where)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.post(url, json=message, allow_redirects=False) as response:
            if response.status >= 300:
                raise RuntimeError(f"HTTP {response.status}")

    @staticmethod
    async def _command(argv: tuple[str, ...], fields: dict[str, Any], url: str,
                       approval_id: str, timeout: float) -> None:
        env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP}
        env.update(EGRESS_APPROVAL_ID=approval_id, EGRESS_APPROVAL_URL=url)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True)
        try:
            _, err = await asyncio.wait_for(proc.communicate(json.dumps(fields).encode()),
                                            timeout)
        except TimeoutError:
            raise RuntimeError(f"{argv[0]} did not finish within {timeout:g}s; killed") from None
        finally:
            # Timed out, or cancelled (egress stops): the command and whatever it started
            # (its own session, so its own process group) end with it; none is left behind.
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if proc.returncode != 0:
            tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {tail[0][:200]!r}")


def _webhook_url(where: str) -> str:
    if where.startswith("env:"):
        value = os.environ.get(where[4:], "").strip()
        if not value:
            raise RuntimeError(f"environment variable {where[4:]} is not set")
        return value
    if where.startswith("file:"):
        try:
            return Path(where[5:]).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise RuntimeError(f"cannot read {where[5:]}: {type(exc).__name__}") from None
    return where


def _describe(exc: BaseException) -> str:
    """An exception, without text that could quote the webhook URL."""
    if isinstance(exc, RuntimeError):
        return str(exc)
    return type(exc).__name__
