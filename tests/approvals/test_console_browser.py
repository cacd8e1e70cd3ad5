"""The console in a real headless Chromium: log in, watch a held request arrive live, approve
it from the page and see the request complete; and a hostile skill's markup in a body
preview or an audited path stays text (tests/parts/browser.py saves a screenshot, the page
and the browser console when a test here fails)."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.approvals.conftest import PLACEHOLDER, REAL_KEY, ApprovalWorld, Background
from tests.clients import basic, read_response
from tests.parts.browser import chromium, failed, save_artifacts

XSS_BODY = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
XSS_PATH = "/<img/src=x/onerror=window.__xss=3>"


@pytest.fixture(scope="module")
def module_browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One Chromium for this module (starting one costs seconds on a shared machine)."""
    with chromium(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver


@pytest.fixture
def browser(module_browser: WebDriver, request: pytest.FixtureRequest,
            tmp_path: Path) -> Iterator[WebDriver]:
    """The module's Chromium, logged out (no cookies) for each test; on failure the
    screenshot, page and browser console are saved into the test's tmp_path."""
    module_browser.delete_all_cookies()
    module_browser.get("about:blank")
    module_browser.get_log("browser")  # type: ignore[attr-defined]  # start each test's log empty
    yield module_browser
    if failed(request.node):
        saved = save_artifacts(module_browser, tmp_path)
        print(f"\nbrowser artifacts: {', '.join(str(p) for p in saved)}")


def log_in(browser: WebDriver, aw: ApprovalWorld, name: str = "carol") -> None:
    browser.get(f"{aw.admin_url}/ui/")
    wait = WebDriverWait(browser, 15)
    wait.until(ec.visibility_of_element_located((By.ID, "login-form")))
    browser.find_element(By.ID, "login-name").send_keys(name)
    browser.find_element(By.ID, "login-token").send_keys(aw.token)
    browser.find_element(By.ID, "login-submit").click()
    wait.until(ec.visibility_of_element_located((By.ID, "approvals")))
    wait.until(ec.text_to_be_present_in_element((By.ID, "live-status"), "live"))


def no_script_ran(browser: WebDriver) -> None:
    assert browser.execute_script("return window.__xss === undefined")
    assert browser.find_elements(By.CSS_SELECTOR, "main img, main script") == []


def test_approving_a_held_request_from_the_page_completes_it(browser: WebDriver,
                                                             aw: ApprovalWorld) -> None:
    log_in(browser, aw)
    body = json.dumps({"amount": 700, "memo": XSS_BODY, "n": uuid.uuid4().hex}).encode()

    def send() -> object:
        with aw.client("payer") as c:
            return c.post(aw.url("/v1/refunds"), content=body,
                          headers={"Content-Type": "application/json",
                                   "Authorization": f"Bearer {PLACEHOLDER}"})

    held = Background(send)
    wait = WebDriverWait(browser, 10)
    button = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[data-approve]")))
    approval = button.get_attribute("data-approve")
    card = browser.find_element(By.ID, f"approval-{approval}")
    assert "POST api.pay.test" in card.find_element(By.CSS_SELECTOR, "h3").text
    preview = card.find_element(By.CSS_SELECTOR, "pre.body").text
    assert XSS_BODY.replace('"', '\\"') in preview  # shown as the text it is
    assert PLACEHOLDER not in card.text and REAL_KEY not in card.text
    no_script_ran(browser)
    assert browser.find_element(By.ID, "pending-count").text == "1"

    card.find_element(By.CSS_SELECTOR, "input[data-note]").send_keys("approved in browser test")
    button.click()
    resp = held.result()
    assert resp.status_code == 200  # type: ignore[attr-defined]
    [got] = [r for r in aw.received("/v1/refunds") if r.body == body]
    assert got.headers["authorization"] == f"Bearer {REAL_KEY}"
    wait.until(ec.invisibility_of_element_located((By.ID, f"approval-{approval}")))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f'tr[data-recent="{approval}"]')))
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-recent="{approval}"]').text
    assert "used" in row and "carol (console)" in row and "approved in browser test" in row
    [granted] = aw.audit(approval=approval, reason="approval_granted")
    assert granted["decided_by"] == "carol (console)"
    no_script_ran(browser)


def test_hostile_markup_in_audited_paths_stays_text(browser: WebDriver,
                                                    aw: ApprovalWorld) -> None:
    with socket.create_connection((aw.proxy.host, aw.proxy.port), timeout=10) as sock:
        sock.sendall(f"GET http://phone-home.evil.test{XSS_PATH} HTTP/1.1\r\n"
                     f"Host: phone-home.evil.test\r\n"
                     f"Proxy-Authorization: {basic('payer', aw.proxy.tokens['payer'])}\r\n"
                     f"\r\n".encode())
        assert read_response(sock).status == 403
    log_in(browser, aw, "dave")
    browser.find_element(By.ID, "tab-activity").click()
    wait = WebDriverWait(browser, 10)
    wait.until(ec.visibility_of_element_located((By.ID, "activity")))
    browser.find_element(By.ID, "filter-reason").send_keys("host_not_allowed")
    browser.find_element(By.ID, "filter-apply").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "audit-body"), XSS_PATH))
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#audit-body td.request")]
    assert f"GET phone-home.evil.test:80{XSS_PATH}" in cells
    assert browser.find_elements(By.CSS_SELECTOR, "#chart polyline[data-skill='payer']")
    assert "phone-home.evil.test" in browser.find_element(By.ID, "top-denied").text
    no_script_ran(browser)

    browser.find_element(By.ID, "tab-skills").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, 'article[data-skill="payer"]')))
    payer = browser.find_element(By.CSS_SELECTOR, 'article[data-skill="payer"]').text
    assert "stripe (Authorization)" in payer and "approval (wait 15s" in payer
    severe = [e for e in browser.get_log("browser")  # type: ignore[attr-defined]
              if e["level"] == "SEVERE" and "favicon" not in e["message"]]
    assert severe == []  # no CSP violation, no script error
