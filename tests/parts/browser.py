"""Headless Chromium driven by Selenium, for tests of pages egress serves (the console).

    def test_console(browser, ...):          # the fixture (tests/conftest.py imports it)
        browser.get("http://127.0.0.1:PORT/ui/")
        WebDriverWait(browser, 10).until(...)

    with chromium(tmp_path) as driver:       # or by hand, outside a test's fixture

What it is. Debian's ``chromium`` (``/usr/bin/chromium``) and ``chromium-driver``
(``/usr/bin/chromedriver``), both from apt (.ci/run installs them), driven by Selenium from
PyPI. Paths are given explicitly, so Selenium Manager never looks for or downloads a
browser or driver. Each session gets a fresh ``--user-data-dir`` in the test's directory and
runs ``--headless=new --no-sandbox`` (we are root) ``--disable-gpu
--disable-dev-shm-usage --disable-background-networking --disable-component-update
--disable-sync --disable-extensions --no-first-run --no-default-browser-check
--no-proxy-server`` (pages are on loopback; no environment proxy, no calls home), window
1280x900. Every wait in a test should be a ``WebDriverWait`` with a timeout; page loads and
scripts are bounded here too (``PAGE_TIMEOUT``).

On failure. ``pytest_runtest_makereport`` (imported by tests/conftest.py, so it is
registered for every test) keeps each phase's report on the test item; the ``browser``
fixture, at teardown, saves ``browser-failure.png``, ``browser-failure.html`` and
``browser-console.log`` into the test's ``tmp_path`` when the test failed, and always quits
Chromium (chromedriver is then stopped by Selenium; a driver still alive after that is
killed).

Not provided: trusting the test CA inside Chromium (the console is served on loopback; use
http, or add ``--ignore-certificate-errors-spki-list`` for a given certificate), Firefox.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

__all__ = ["browser", "chromium", "pytest_runtest_makereport", "save_artifacts"]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAGE_TIMEOUT = 20.0  # seconds for a page load or a script
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--no-first-run",
    "--no-default-browser-check", "--no-proxy-server", "--window-size=1280,900",
]
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@contextlib.contextmanager
def chromium(workdir: Path) -> Iterator[WebDriver]:
    """A headless Chromium session with a fresh profile under ``workdir``; always quit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            raise RuntimeError(f"{path} missing: apt-get install chromium chromium-driver "
                               "(.ci/run installs them)")
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(workdir / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(PAGE_TIMEOUT)
        driver.set_script_timeout(PAGE_TIMEOUT)
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            process = getattr(service, "process", None)
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(5)


def save_artifacts(driver: WebDriver, directory: Path, stem: str = "browser-failure") -> list[Path]:
    """Screenshot, page source and the browser console, as files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    with contextlib.suppress(Exception):  # a dead browser must not hide the test's failure
        shot = directory / f"{stem}.png"
        if driver.save_screenshot(str(shot)):
            saved.append(shot)
    with contextlib.suppress(Exception):
        page = directory / f"{stem}.html"
        page.write_text(f"<!-- {driver.current_url} -->\n{driver.page_source}")
        saved.append(page)
    with contextlib.suppress(Exception):
        console = directory / "browser-console.log"
        entries = driver.get_log("browser")  # type: ignore[attr-defined]  # Chrome's driver
        console.write_text("\n".join(json.dumps(e) for e in entries))
        saved.append(console)
    return saved


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[
        None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so fixtures can tell a failed test at teardown."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def failed(item: pytest.Item) -> bool:
    reports = item.stash.get(_REPORTS, {})
    return any(r.failed for r in reports.values())


@pytest.fixture
def browser(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WebDriver]:
    """A headless Chromium for one test; on failure its screenshot, page and console are
    saved into the test's tmp_path (paths printed); always quit."""
    with chromium(tmp_path) as driver:
        yield driver
        if failed(request.node):
            saved = save_artifacts(driver, tmp_path)
            request.node.user_properties.append(("browser_artifacts", [str(p) for p in saved]))
            print(f"\nbrowser artifacts: {', '.join(str(p) for p in saved)}")
