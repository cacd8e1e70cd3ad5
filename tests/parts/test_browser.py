"""Self-test of tests/parts/browser.py: a real headless Chromium clicks through a page on
loopback, and a failing test leaves a screenshot, the page source and the console log."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.parts.apiserver import ApiServer, serve_api

pytest_plugins = ["pytester"]

PAGE = """<!doctype html><html><head><title>approvals</title></head><body>
<ul id="pending"><li id="req-1">POST api.stripe.com/v1/refunds
  <button id="approve-1">Approve</button></li></ul>
<p id="status">pending</p>
<script>
document.getElementById("approve-1").addEventListener("click", async () => {
  const r = await fetch("/decide", {method: "POST", body: JSON.stringify({id: "req-1"}),
                                    headers: {"Content-Type": "application/json"}});
  const body = await r.json();
  document.getElementById("status").textContent = body.decision;
  document.getElementById("req-1").remove();
});
</script></body></html>"""


@pytest.fixture
def page_server() -> Iterator[ApiServer]:
    app = web.Application()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def decide(request: web.Request) -> web.Response:
        asked = await request.json()
        return web.json_response({"decision": f"approved {asked['id']}"})

    app.router.add_get("/ui/", page)
    app.router.add_post("/decide", decide)
    with serve_api(app, ca=None, host="127.0.0.1") as server:
        yield server


def test_click_changes_the_dom_through_the_server(browser: WebDriver,
                                                  page_server: ApiServer) -> None:
    browser.get(f"{page_server.url}/ui/")
    assert browser.title == "approvals"
    browser.find_element(By.ID, "approve-1").click()
    WebDriverWait(browser, 10).until(
        ec.text_to_be_present_in_element((By.ID, "status"), "approved req-1"))
    assert browser.find_elements(By.ID, "req-1") == []
    decided = page_server.requests_to("/decide")
    assert len(decided) == 1 and decided[0].body == b'{"id":"req-1"}'


def test_failing_test_leaves_screenshot_page_and_console(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("from tests.parts.browser import browser, pytest_runtest_makereport\n")
    where = pytester.path / "where"
    pytester.makepyfile(test_inner=textwrap.dedent(f"""
        from pathlib import Path

        def test_fails(browser, tmp_path):
            browser.get("data:text/html,<h1 id=h>shown</h1><script>console.error('boom')</script>")
            Path({str(where)!r}).write_text(str(tmp_path))
            assert browser.find_element("id", "h").text == "something else"
    """))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(failed=1)
    failed_dir = Path(where.read_text())
    assert (failed_dir / "browser-failure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'id="h">shown</h1>' in (failed_dir / "browser-failure.html").read_text()
    assert "boom" in (failed_dir / "browser-console.log").read_text()
