"""Notifications of a new approval: a Slack-compatible message a skill cannot inject markup
into, a real command run off the request path, and failures that are logged, never raised."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

import pytest

from egress.ops.approval_view import request_view
from egress.ops.approvals import ApprovalEntry, ApprovalState, HeldRequest
from egress.ops.notify import Notifier, approval_message, slack_escape
from egress.policy.model import ApprovalNotify
from tests.upstream import free_port


def entry(path: str = "/v1/refunds") -> ApprovalEntry:
    req = HeldRequest(skill="payer", method="POST", scheme="https", host="api.pay.test",
                      port=443, path=path, key="k" * 64, body_digest="d" * 64,
                      view=request_view(path=path, query="token=secret", headers=[],
                                        body=b'{"card": "4242"}'),
                      rule="p.yaml:7 api.pay.test", request_id="r1", wait=20, valid_for=600)
    return ApprovalEntry(id="0123456789ab", request=req, state=ApprovalState.PENDING,
                         asked_at="2025-01-31T12:00:00.000Z", expires=0.0,
                         expires_at="2025-01-31T12:10:00Z")


def test_the_message_links_to_the_console_and_escapes_what_a_skill_wrote() -> None:
    hostile = "/v1/<!channel>/<https://evil.test|click here>&amp"
    message = approval_message(entry(hostile), "https://egress.example/ui/#approval=0123456789ab")
    text = message["text"]
    assert "<https://egress.example/ui/#approval=0123456789ab|Review approval 0123456789ab>" in text
    assert "<!channel>" not in text and "<https://evil.test" not in text
    assert "&lt;!channel&gt;/&lt;https://evil.test|click here&gt;&amp;amp" in text
    assert message["blocks"][0]["text"]["text"].startswith("egress: skill *payer* asks to")
    fields = message["egress"]
    assert fields["path"] == hostile and fields["approval"] == "0123456789ab"
    dumped = json.dumps(message)
    assert "4242" not in dumped and "secret" not in dumped  # never the body or the query
    assert slack_escape("a<b>&c") == "a&lt;b&gt;&amp;c"


async def test_a_command_gets_the_approval_on_stdin_without_blocking_the_caller(
        tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    script = tmp_path / "notify.py"
    script.write_text("import os, sys, time\n"
                      "data = sys.stdin.read()\n"
                      "time.sleep(0.3)\n"
                      f"open({str(out)!r}, 'w').write(os.environ['EGRESS_APPROVAL_ID'] + "
                      "'\\n' + os.environ['EGRESS_APPROVAL_URL'] + '\\n' + data)\n")
    notifier = Notifier(lambda: ApprovalNotify(command=(sys.executable, str(script)), timeout=5),
                        lambda: "http://127.0.0.1:8081/ui/")
    notifier.notify(entry())
    assert not out.exists()  # notify returned at once; the command still runs
    for _ in range(100):
        if out.exists() and out.read_text().count("\n") >= 2:
            break
        await asyncio.sleep(0.05)
    approval_id, url, data = out.read_text().split("\n", 2)
    assert approval_id == "0123456789ab" and url.endswith("/ui/#approval=0123456789ab")
    assert json.loads(data)["skill"] == "payer"
    await notifier.close()


async def test_failing_slow_and_dead_notifiers_are_logged(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "egress")
    failing = tmp_path / "fail.py"
    failing.write_text("import sys\nsys.stderr.write('boom\\n')\nsys.exit(3)\n")
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(30)\n")
    dead = f"http://127.0.0.1:{free_port()}/hook?secret=xyz"  # nothing listens
    for settings in (ApprovalNotify(command=(sys.executable, str(failing)), timeout=5),
                     ApprovalNotify(command=(sys.executable, str(slow)), timeout=0.5),
                     ApprovalNotify(webhook=dead, timeout=2)):
        notifier = Notifier(lambda s=settings: s, lambda: "http://x/ui/")  # type: ignore[misc]
        notifier.notify(entry())
        await asyncio.wait_for(asyncio.gather(*notifier._tasks, return_exceptions=True), 10)
        await notifier.close()
    logged = caplog.text
    assert "exited 3: 'boom'" in logged
    assert "did not finish within 0.5s; killed" in logged
    assert "webhook failed: ClientConnectorError" in logged
    assert "xyz" not in logged and "/hook" not in logged  # the webhook URL is never logged


async def test_notifications_beyond_the_limit_are_dropped_not_queued(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    slow = tmp_path / "slow.py"
    pids = tmp_path / "pids"
    slow.write_text(f"import os, time\nopen({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
                    f"time.sleep(30)\n")
    notifier = Notifier(lambda: ApprovalNotify(command=(sys.executable, str(slow)), timeout=30),
                        lambda: "http://x/ui/", max_in_flight=2)
    for _ in range(3):
        notifier.notify(entry())
    assert len(notifier._tasks) == 2 and "this one is dropped" in caplog.text
    for _ in range(500):  # both commands started (bounded: 10 s)
        if pids.exists() and len(pids.read_text().split()) == 2:
            break
        await asyncio.sleep(0.02)
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2
    await notifier.close()
    for pid in started:  # closing (egress stops) ends the commands, none is left running
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
