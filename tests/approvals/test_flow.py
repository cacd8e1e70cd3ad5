"""End to end: requests an approval rule covers wait for a person, through a real egress.

Every test asserts on what the upstream received (tests/parts/apiserver.py records method,
path, query, headers and body) and on the audit log, not only on what the client was told.
Each test uses its own path or body, so the shared world's upstream record tells them apart.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.approvals.conftest import (
    EGRESS,
    MAIL_PLACEHOLDER,
    PLACEHOLDER,
    REAL_KEY,
    ApprovalWorld,
    Background,
)
from tests.upstream import upstream_headers


@pytest.fixture(autouse=True)
def no_open_approvals_left(aw: ApprovalWorld) -> Iterator[None]:
    """Each test starts with no open approval (the world caps them per skill)."""
    yield
    for approval in aw.pending():
        aw.api("POST", f"/api/approvals/{approval['id']}/deny", json_body={"note": "cleanup"})


def body_for(test: str, **extra: object) -> bytes:
    return json.dumps({"amount": 1200, "currency": "usd", "test": test,
                       "nonce": uuid.uuid4().hex, **extra}).encode()


def post(aw: ApprovalWorld, path: str, body: bytes, skill: str = "payer",
         headers: dict[str, str] | None = None, **kwargs: object) -> httpx.Response:
    sent = {"Content-Type": "application/json", "Authorization": f"Bearer {PLACEHOLDER}",
            **(headers or {})}
    with aw.client(skill) as c:
        return c.post(aw.url(path), content=body, headers=sent, **kwargs)  # type: ignore[arg-type]


def by_body(aw: ApprovalWorld, path: str, body: bytes) -> list[object]:
    return [r for r in aw.received(path) if r.body == body]


def test_held_request_approved_from_the_cli_reaches_upstream_once_with_the_key(
        aw: ApprovalWorld) -> None:
    body = body_for("cli-approve")
    held = Background(lambda: post(aw, "/v1/refunds", body))
    pending = aw.wait_pending(lambda a: a["skill"] == "payer" and "cli-approve" in a["body"])
    assert by_body(aw, "/v1/refunds", body) == []  # nothing reached the upstream yet

    listed = aw.cli("approvals", "list")
    assert pending["id"] in listed.stdout and "POST api.pay.test" in listed.stdout
    shown = aw.cli("approvals", "show", pending["id"])
    assert '"test": "cli-approve"' in shown.stdout
    assert PLACEHOLDER not in shown.stdout and REAL_KEY not in shown.stdout
    done = aw.cli("approvals", "approve", pending["id"], "--note", "refund for ticket 42")
    assert done.stdout.startswith(f"approved {pending['id']}: POST api.pay.test")

    resp = held.result()
    assert resp.status_code == 200, resp.text
    got = by_body(aw, "/v1/refunds", body)
    assert len(got) == 1
    assert got[0].headers["authorization"] == f"Bearer {REAL_KEY}"  # type: ignore[attr-defined]
    assert got[0].method == "POST"  # type: ignore[attr-defined]

    rid = resp.headers["x-egress-request-id"] if "x-egress-request-id" in resp.headers else None
    steps = aw.audit(approval=pending["id"])
    assert [(r["kind"], r["decision"], r["reason"]) for r in steps] == [
        ("approval", "hold", "approval_requested"),
        ("approval", "allow", "approval_granted"),
        ("http", "allow", "allowed"),
    ]
    granted = steps[1]
    assert granted["decided_by"].endswith("(cli)") and granted["note"] == "refund for ticket 42"
    assert steps[0]["id"] == steps[1]["id"] == steps[2]["id"] == pending["request_id"]
    assert steps[2]["credential"] == "stripe" and steps[2]["path"] == "/v1/refunds"
    assert rid is None  # an allowed response is the upstream's own
    assert REAL_KEY not in aw.proxy.audit_path.read_text()


def test_denied_request_gets_403_and_the_upstream_nothing(aw: ApprovalWorld) -> None:
    body = body_for("deny")
    held = Background(lambda: post(aw, "/v1/charges", body))
    pending = aw.wait_pending(lambda a: '"test": "deny"' in a["body"])
    aw.cli("approvals", "deny", pending["id"], "--note", "not this one")
    resp = held.result()
    assert resp.status_code == 403
    answer = resp.json()
    assert answer["reason"] == "approval_denied" and answer["approval_id"] == pending["id"]
    assert "refused" in answer["message"]
    # The denial stands: the identical retry is refused at once, without asking anyone.
    again = post(aw, "/v1/charges", body)
    assert again.status_code == 403 and again.json()["approval_id"] == pending["id"]
    assert not [a for a in aw.pending() if a["body_sha256"] == pending["body_sha256"]]
    assert by_body(aw, "/v1/charges", body) == []
    steps = aw.audit(approval=pending["id"])
    assert [(r["kind"], r["decision"], r["reason"]) for r in steps] == [
        ("approval", "hold", "approval_requested"),
        ("approval", "deny", "approval_denied"),
        ("http", "deny", "approval_denied"),
        ("http", "deny", "approval_denied"),
    ]
    assert steps[1]["note"] == "not this one"


def test_undecided_gets_428_then_one_retry_goes_through_then_a_new_approval(
        aw: ApprovalWorld) -> None:
    body = body_for("retry")
    first = post(aw, "/v1/refunds", body, skill="quick")
    assert first.status_code == 428
    answer = first.json()
    assert answer["reason"] == "approval_pending" and first.headers["retry-after"] == "30"
    approval = answer["approval_id"]
    assert first.headers["x-egress-approval-id"] == approval
    assert "Retry the identical request" in answer["message"] and approval in answer["message"]
    assert aw.api("POST", f"/api/approvals/{approval}/approve", json_body={}).status_code == 200

    second = post(aw, "/v1/refunds", body, skill="quick")
    assert second.status_code == 200, second.text
    assert len(by_body(aw, "/v1/refunds", body)) == 1
    third = post(aw, "/v1/refunds", body, skill="quick")
    assert third.status_code == 428 and third.json()["approval_id"] != approval
    assert len(by_body(aw, "/v1/refunds", body)) == 1  # the grant covered exactly one request
    # Deciding an approval twice is refused; the used one says so.
    again = aw.api("POST", f"/api/approvals/{approval}/approve", json_body={})
    assert again.status_code == 409 and again.json()["approval"]["state"] == "used"
    assert [r["reason"] for r in aw.audit(approval=approval)] == [
        "approval_requested", "approval_pending", "approval_granted", "allowed"]


def test_a_changed_body_path_or_query_after_approval_needs_a_new_approval(
        aw: ApprovalWorld) -> None:
    body = body_for("changed")
    first = post(aw, "/v1/charges", body, skill="quick")
    approval = first.json()["approval_id"]
    aw.api("POST", f"/api/approvals/{approval}/approve", json_body={})

    changed_body = body.replace(b"1200", b"9999")
    attempts = [
        ("/v1/charges", changed_body, {}),  # another amount
        ("/v1/charges/ch_1", body, {}),  # another path
        ("/v1/charges", body, {"params": {"expand": "all"}}),  # a query added
    ]
    ids = set()
    for path, sent, extra in attempts:
        resp = post(aw, path, sent, skill="quick", **extra)
        assert resp.status_code == 428, (path, resp.text)
        ids.add(resp.json()["approval_id"])
    assert approval not in ids and len(ids) == 3
    with aw.client("quick") as c:  # the same bytes as another content type mean another thing
        resp = c.post(aw.url("/v1/charges"), content=body,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 428 and resp.json()["approval_id"] != approval
    assert aw.received("/v1/charges/ch_1") == []
    assert [r for r in aw.received("/v1/charges") if r.body == changed_body] == []

    resp = post(aw, "/v1/charges", body, skill="quick")  # the approved one still goes, once
    assert resp.status_code == 200
    assert len(by_body(aw, "/v1/charges", body)) == 1


def test_a_header_the_person_did_not_see_needs_a_new_approval(aw: ApprovalWorld) -> None:
    """Approved for one Stripe account, the retry names another: a new approval, and the
    upstream sees nothing of it. A fresh Idempotency-Key (a retry's right) still matches."""
    body = body_for("header-swap")
    first = post(aw, "/v1/refunds", body, skill="quick",
                 headers={"Content-Type": "application/json", "Stripe-Account": "acct_ok",
                          "Idempotency-Key": "key-1"})
    approval = first.json()["approval_id"]
    shown = aw.api("GET", f"/api/approvals/{approval}").json()
    assert ["Stripe-Account", "acct_ok"] in shown["headers"]
    aw.api("POST", f"/api/approvals/{approval}/approve", json_body={})

    for swapped in ({"Stripe-Account": "acct_evil"}, {},  # another account; none at all
                    {"Stripe-Account": "acct_ok", "X-HTTP-Method-Override": "DELETE"}):
        resp = post(aw, "/v1/refunds", body, skill="quick",
                    headers={"Content-Type": "application/json", "Idempotency-Key": "key-1",
                             **swapped})
        assert resp.status_code == 428, (swapped, resp.text)
        assert resp.json()["approval_id"] != approval
    assert by_body(aw, "/v1/refunds", body) == []
    requested = [r for r in aw.audit(skill="quick", reason="approval_requested")
                 if r["approval"] != approval and r["path"] == "/v1/refunds"]
    assert len(requested) >= 3

    resp = post(aw, "/v1/refunds", body, skill="quick",
                headers={"Content-Type": "application/json", "Stripe-Account": "acct_ok",
                         "Idempotency-Key": "key-2"})
    assert resp.status_code == 200, resp.text
    [got] = by_body(aw, "/v1/refunds", body)
    assert got.headers["stripe-account"] == "acct_ok"  # type: ignore[attr-defined]
    assert got.headers["authorization"] == f"Bearer {REAL_KEY}"  # type: ignore[attr-defined]
    assert [r["reason"] for r in aw.audit(approval=approval)][-1] == "allowed"


def test_what_the_person_sees_is_masked(aw: ApprovalWorld) -> None:
    body = json.dumps({"amount": 5, "test": "masking", "api_key": "abc",
                       "echo": PLACEHOLDER, "nested": {"password": "hunter2"},
                       "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl",
                       "note": "refund \u202eevil"}).encode()
    with aw.client("quick") as c:
        resp = c.post(aw.url("/v1/refunds"), content=body,
                      params={"token": "t0ps3cr3t", "customer": "cus_1",
                              "sig": PLACEHOLDER},
                      headers={"Content-Type": "application/json",
                               "Authorization": f"Bearer {PLACEHOLDER}",
                               "X-Api-Key": "k-123", "X-Trace": "visible-value"})
    assert resp.status_code == 428
    shown = aw.api("GET", f"/api/approvals/{resp.json()['approval_id']}").json()
    text = json.dumps(shown)
    for secret in (PLACEHOLDER, REAL_KEY, "hunter2", "t0ps3cr3t", "k-123", "eyJhbGci", '"abc"'):
        assert secret not in text, secret
    assert shown["query"] == "token=[masked]&customer=cus_1&sig=[masked]"
    headers = dict((k.lower(), v) for k, v in shown["headers"])
    assert headers["authorization"] == "[masked]" and headers["x-api-key"] == "[masked]"
    assert headers["x-trace"] == "visible-value"
    preview = json.loads(shown["body"].replace("\\u202e", "U202E"))
    assert preview["amount"] == 5 and preview["api_key"] == "[masked]"
    assert preview["nested"] == {"password": "[masked]"} and preview["jwt"] == "[masked]"
    assert preview["echo"] == "[masked]" or preview["echo"].startswith("[redacted")
    assert "\u202e" not in shown["body"] and "\\u202e" in shown["body"]  # bidi made visible
    assert shown["body"].startswith('{\n  "amount": 5')  # pretty-printed
    assert shown["body_kind"] == "json" and shown["body_size"] == len(body)


def test_report_mode_never_holds_and_records_would_need_approval(aw: ApprovalWorld) -> None:
    body = body_for("report")
    started = time.monotonic()
    resp = post(aw, "/v1/refunds", body, skill="reporter")
    assert resp.status_code == 200 and time.monotonic() - started < 8  # not held for `wait`
    assert len(by_body(aw, "/v1/refunds", body)) == 1
    assert [a for a in aw.pending("reporter")] == []
    lines = aw.audit(skill="reporter", reason="would_need_approval")
    assert len(lines) == 1 and lines[0]["decision"] == "report"
    assert lines[0]["path"] == "/v1/refunds" and lines[0]["credential"] == "stripe"


def test_bodies_nobody_could_review_are_refused(aw: ApprovalWorld) -> None:
    big = b'{"pad": "' + b"x" * 5000 + b'"}'
    resp = post(aw, "/v1/refunds", big, skill="quick")
    assert resp.status_code == 413 and resp.json()["reason"] == "approval_body_too_large"
    with aw.client("quick") as c:
        gz = c.post(aw.url("/v1/refunds"), content=b"\x1f\x8b" + b"\0" * 20,
                    headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert gz.status_code == 415 and gz.json()["reason"] == "approval_body_encoded"

    def chunks(total: int) -> object:
        for _ in range(total // 1000):
            yield b"y" * 1000

    with aw.client("quick") as c:  # no Content-Length: chunked, capped while it arrives
        streamed = c.post(aw.url("/v1/refunds"), content=chunks(6000))
    assert streamed.status_code == 413
    with aw.client("quick") as c:
        small = c.post(aw.url("/v1/refunds"), content=chunks(3000))
    assert small.status_code == 428  # held and shown whole: under the cap
    shown = aw.api("GET", f"/api/approvals/{small.json()['approval_id']}").json()
    assert shown["body_size"] == 3000
    assert [r for r in aw.received("/v1/refunds") if r.body.startswith((b"y", b'{"pad'))] == []
    reasons = [r["reason"] for r in aw.audit(skill="quick")]
    assert reasons.count("approval_body_too_large") == 2 and "approval_body_encoded" in reasons


def test_a_held_body_carrying_another_credential_is_refused(aw: ApprovalWorld) -> None:
    body = body_for("exfil", smuggled=MAIL_PLACEHOLDER)
    resp = post(aw, "/v1/refunds", body)
    assert resp.status_code == 403 and resp.json()["reason"] == "credential_exfiltration"
    assert by_body(aw, "/v1/refunds", body) == []
    assert not [a for a in aw.pending() if "exfil" in a["body"]]


def test_open_approvals_per_skill_are_capped(aw: ApprovalWorld) -> None:
    answers = []
    with aw.client("flood") as c:  # settings.approvals.max_pending: 8
        for i in range(9):
            answers.append(c.post(aw.url(f"/flood/{i}"), content=b"x"))
    assert [a.status_code for a in answers] == [428] * 8 + [429]
    assert answers[8].json()["reason"] == "approval_queue_full"
    assert len(aw.pending("flood")) == 8
    assert [r for r in aw.upstream.received if r.path.startswith("/flood/")] == []


def test_a_skill_cannot_pile_up_held_requests(aw: ApprovalWorld) -> None:
    """The identical request over many connections: max_pending (8) are held, the rest get
    429 at once; one denial answers all of them; the upstream receives none."""
    body = body_for("pile-up")
    held = [Background(lambda: post(aw, "/v1/refunds", body)) for _ in range(8)]
    pending = aw.wait_pending(lambda a: '"test": "pile-up"' in a["body"] and a["asked"] == 8,
                              timeout=20)
    started = time.monotonic()
    extra = post(aw, "/v1/refunds", body)
    assert extra.status_code == 429 and extra.json()["reason"] == "approval_queue_full"
    assert time.monotonic() - started < 10  # refused at once, not held for `wait` (15s)
    aw.api("POST", f"/api/approvals/{pending['id']}/deny", json_body={"note": "pile-up"})
    answers = [h.result() for h in held]
    assert [a.status_code for a in answers] == [403] * 8
    assert by_body(aw, "/v1/refunds", body) == []
    [full] = [r for r in aw.audit(skill="payer", reason="approval_queue_full")
              if r["path"] == "/v1/refunds"]
    assert "8 requests held" in full["detail"]


def test_http2_request_is_held_and_forwarded_whole(aw: ApprovalWorld) -> None:
    body = body_for("h2")
    url = f"https://h2.pay.test:{aw.h2.port}/echo"
    with aw.client("quick", http2=True) as c:
        first = c.post(url, content=body, headers={"Content-Type": "application/json"})
        assert first.http_version == "HTTP/2" and first.status_code == 428
        approval = first.json()["approval_id"]
        shown = aw.api("GET", f"/api/approvals/{approval}").json()
        assert shown["body_size"] == len(body) and '"test": "h2"' in shown["body"]
        aw.api("POST", f"/api/approvals/{approval}/approve", json_body={})
        second = c.post(url, content=body, headers={"Content-Type": "application/json"})
        assert second.status_code == 200 and second.http_version == "HTTP/2"
        third = c.post(url, content=body, headers={"Content-Type": "application/json"})
    echoed = second.json()
    assert echoed["body_length"] == len(body) and echoed["http_version"] == "2"
    assert upstream_headers(echoed["seen"])["authorization"] == f"Bearer {REAL_KEY}"
    assert third.status_code == 428


def test_the_webhook_gets_a_well_formed_slack_message(aw: ApprovalWorld) -> None:
    aw.hooks.clear()
    resp = post(aw, "/v1/refunds", body_for("webhook"), skill="quick")
    approval = resp.json()["approval_id"]
    deadline = time.monotonic() + 10
    while not aw.hooks.requests_to("/hook") and time.monotonic() < deadline:
        time.sleep(0.05)
    [hook] = aw.hooks.requests_to("/hook")
    assert hook.headers["content-type"].startswith("application/json")
    message = json.loads(hook.body)
    link = f"<{aw.admin_url}/ui/#approval={approval}|Review approval {approval}>"
    assert link in message["text"] and "*quick*" in message["text"]
    assert f"`POST api.pay.test:{aw.upstream.port}/v1/refunds`" in message["text"]
    assert message["blocks"][0]["type"] == "section"
    assert message["blocks"][0]["text"]["type"] == "mrkdwn"
    assert message["egress"]["approval"] == approval
    assert message["egress"]["url"] == f"{aw.admin_url}/ui/#approval={approval}"
    assert "webhook" not in hook.body.decode()  # never the body (it holds "test": "webhook")


def test_a_dead_or_failing_webhook_never_delays_or_fails_the_request(aw: ApprovalWorld) -> None:
    aw.webhook_to(f"http://127.0.0.1:{aw.silent.port}/hook")  # accepts, never answers (30s)
    try:
        started = time.monotonic()
        resp = post(aw, "/v1/refunds", body_for("dead-hook"), skill="quick")
        assert resp.status_code == 428
        assert time.monotonic() - started < 10  # notify timeout is 30s: not waited for
        deadline = time.monotonic() + 10
        while not aw.silent.held and time.monotonic() < deadline:
            time.sleep(0.05)
        assert aw.silent.held  # it was called, and is still hanging
        aw.webhook_to(f"{aw.hooks.url}/hook")
        aw.hooks.fail(500)
        resp = post(aw, "/v1/refunds", body_for("failing-hook"), skill="quick")
        assert resp.status_code == 428
        deadline = time.monotonic() + 10
        while "webhook failed: HTTP 500" not in aw.proxy.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "webhook failed: HTTP 500" in aw.proxy.log()
        assert aw.hooks.url not in aw.proxy.log()  # the URL is a secret: never logged
    finally:
        aw.hooks.fail(None)
        aw.webhook_to(f"{aw.hooks.url}/hook")


def test_the_cli_speaks_json_finds_egress_by_admin_and_refuses_what_it_cannot_do(
        aw: ApprovalWorld, tmp_path: Path) -> None:
    body = body_for("cli-json")
    first = post(aw, "/v1/charges", body, skill="quick")
    approval = first.json()["approval_id"]
    admin = aw.admin_url.removeprefix("http://")
    listed = json.loads(aw.cli("approvals", "list", "--json", "--admin", admin).stdout)
    [mine] = [a for a in listed if a["id"] == approval]
    assert mine["skill"] == "quick" and mine["path"] == "/v1/charges"
    shown = json.loads(aw.cli("approvals", "show", approval, "--json").stdout)
    assert '"test": "cli-json"' in shown["body"] and shown["body_sha256"] == mine["body_sha256"]
    denied = json.loads(aw.cli("approvals", "deny", approval, "--as", "erin", "--json",
                               "--note", "wrong customer").stdout)
    assert denied["state"] == "denied" and denied["decided_by"] == "erin (cli)"
    [line] = aw.audit(approval=approval, reason="approval_denied", kind="approval")
    assert line["decided_by"] == "erin (cli)" and line["note"] == "wrong customer"

    again = aw.cli("approvals", "approve", approval, check=False)  # decided once, for good
    assert again.returncode != 0 and "HTTP 409" in again.stderr
    odd = aw.cli("approvals", "approve", "../../reload", check=False)  # never a path
    assert odd.returncode != 0 and "is not an approval id" in odd.stderr
    nowhere = subprocess.run([EGRESS, "approvals", "list", "--data-dir", str(tmp_path)],
                             capture_output=True, text=True, timeout=30,
                             env={k: v for k, v in os.environ.items()
                                  if k != "EGRESS_ADMIN_TOKEN"})
    assert nowhere.returncode != 0 and "no running egress found" in nowhere.stderr
    no_token = subprocess.run([EGRESS, "approvals", "approve", approval, "--admin", admin,
                               "--data-dir", str(tmp_path)], capture_output=True, text=True,
                              timeout=30, env={k: v for k, v in os.environ.items()
                                               if k != "EGRESS_ADMIN_TOKEN"})
    assert no_token.returncode != 0 and "HTTP 401" in no_token.stderr
    assert by_body(aw, "/v1/charges", body) == []


def test_approvals_nobody_decides_or_nobody_uses_expire_audited(aw: ApprovalWorld) -> None:
    """valid_for: 10. One approval nobody decides, one grant nobody uses: both end as
    approval_expired in the audit log on time (no request needed to notice), and the
    identical retry asks a person again; the upstream receives nothing."""
    with aw.client("brief") as c:
        undecided = c.post(aw.url("/expire/undecided"), content=b"a")
        unused = c.post(aw.url("/expire/unused"), content=b"b")
    assert undecided.status_code == unused.status_code == 428
    left, granted = undecided.json()["approval_id"], unused.json()["approval_id"]
    aw.api("POST", f"/api/approvals/{granted}/approve", json_body={"note": "then unused"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(
            aw.audit(skill="brief", reason="approval_expired")) < 2:
        time.sleep(0.2)
    expired = {r["approval"]: r for r in aw.audit(skill="brief", reason="approval_expired")}
    assert set(expired) == {left, granted}
    assert expired[left]["kind"] == "approval" and expired[left]["decision"] == "deny"
    assert "nobody decided" in expired[left]["detail"]
    assert "not used" in expired[granted]["detail"]
    assert expired[granted]["decided_by"] == "operator (api)"
    assert aw.api("GET", f"/api/approvals/{granted}").json()["state"] == "expired"
    with aw.client("brief") as c:
        retry = c.post(aw.url("/expire/unused"), content=b"b")
    assert retry.status_code == 428 and retry.json()["approval_id"] != granted
    shown = aw.api("GET", f"/api/approvals/{retry.json()['approval_id']}").json()
    assert shown["previous"] == {"expired": 1}  # the person sees how it fared before
    assert [r for r in aw.upstream.received if r.path.startswith("/expire/")] == []
