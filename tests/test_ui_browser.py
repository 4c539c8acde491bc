"""The dashboard in a real browser: Debian's headless Chromium, driven by Selenium, over a
real `flowz ui` process and a real `flowz worker`, on both stores.

Without Chromium this is skipped, unless FLOWZ_REQUIRE_BROWSER=1 (CI sets it after
installing the browser), where a missing browser fails. FLOWZ_UI_SCREENSHOTS=DIR keeps
the screenshots of each page (docs/images/ holds the ones the docs show).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import flowz
from flowz import Client, Settings
from tests import ui_app

ROOT = Path(__file__).parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("FLOWZ_REQUIRE_BROWSER") == "1":
        raise RuntimeError(
            "FLOWZ_REQUIRE_BROWSER=1 but chromium or chromedriver is missing: "
            "apt-get install -y chromium chromium-driver"
        )
    pytest.skip(
        "no chromium + chromedriver (apt-get install -y chromium chromium-driver)",
        allow_module_level=True,
    )


@flowz.workflow
async def unknown() -> None:
    """Known to this test only: no worker imports it, so its run stays pending."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(args: list[str], url: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flowz", *args],
            cwd=ROOT,
            env={**os.environ, "FLOWZ_DATABASE_URL": url, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_until_served(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"flowz ui exited: {log.read_text()}"
        try:
            with urllib.request.urlopen(base + "/runs", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)  # a process's port: nothing to wait on but the port itself
    raise AssertionError(f"flowz ui did not serve within 30 s: {log.read_text()}")


async def runs_in_every_state(url: str) -> None:
    """Succeeded, failed (the XSS probe), waiting, running (a slow gather), pending."""
    async with Client(settings=Settings(database_url=url, progress=False)) as client:
        tidy = await client.start(ui_app.tidy.options(id="tidy-1"), 5)
        broken = await client.start(ui_app.breaks.options(id="breaks-1"), ui_app.XSS)
        await client.start(ui_app.waits.options(id="waits-1"), "go")
        await client.start(unknown.options(id="parked-1"))
        await tidy.result(timeout=60)
        with pytest.raises(ValueError, match="refused"):
            await broken.result(timeout=60)
        while (await client.get_run("waits-1")).status != flowz.Status.WAITING:
            mark = client.store.change_mark()
            await client.store.wait_for_change(0.5, mark)
        await client.start(ui_app.crawl.options(id="crawl-1"), 60, 0.4)


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_the_dashboard_in_a_browser(database_url: str, tmp_path: Path, browser: Any) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Path(os.environ.get("FLOWZ_UI_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    store_name = "postgres" if database_url.startswith("postgresql") else "sqlite"
    wait = WebDriverWait(browser, 30)

    def shoot(name: str) -> None:  # the page's content, not the empty window below it
        browser.find_element(By.TAG_NAME, "body").screenshot(str(shots / name))

    # Live parts are replaced whenever they change (times move on every refresh), so the
    # test reads them in one script call and retries a click that raced a replacement.
    def text_of(css: str) -> str:
        found = browser.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null",
            css,
        )
        assert found is not None, f"nothing matches {css!r}"
        return str(found)

    def click(css: str) -> None:
        for _ in range(20):
            try:
                browser.find_element(By.CSS_SELECTOR, css).click()
                return
            except StaleElementReferenceException:
                continue
        raise AssertionError(f"{css!r} kept being replaced")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # One worker, four at a time.
    worker = start(
        ["worker", "tests.ui_app"],
        database_url,
        tmp_path / "worker.log",
        FLOWZ_CONCURRENCY="4",
        FLOWZ_SHUTDOWN_GRACE_SECONDS="1",
    )
    ui = start(["ui", "--port", str(port)], database_url, tmp_path / "ui.log")
    try:
        anyio.run(runs_in_every_state, database_url)
        wait_until_served(base, ui, tmp_path / "ui.log")

        # The runs page: every state, with counts; the probe shows as text.
        browser.get(base + "/runs")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-run="crawl-1"]'))
        statuses = browser.execute_script(  # in one go: live updates replace the rows
            "const s = {}; document.querySelectorAll('tr[data-run]').forEach(r => "
            "{ s[r.dataset.run] = r.querySelector('.status').textContent; }); return s;"
        )
        assert statuses["tidy-1"] == "succeeded"
        assert statuses["breaks-1"] == "failed"
        assert statuses["waits-1"] == "waiting"
        assert statuses["parked-1"] == "pending"
        assert statuses["crawl-1"] in ("pending", "running", "waiting")
        error_text = browser.execute_script(
            "return document.querySelector('tr[data-run=\"breaks-1\"] .error-text').textContent"
        )
        assert "<script>window.__xss = 1</script>" in error_text
        assert browser.execute_script("return window.__xss") is None
        shoot(f"ui-runs-{store_name}.png")

        # A running gather's bar advances without a reload.
        browser.get(base + "/runs/crawl-1")
        browser.execute_script("window.__same_page = true")

        def ended() -> int:
            text = browser.execute_script(
                "const d = document.querySelector('[data-gather=\"0\"] .done');"
                "return d ? d.textContent : '-1'"
            )
            return int(text)

        def status_shown() -> str:
            return str(
                browser.execute_script("return document.getElementById('run-status').textContent")
            )

        first = ended()
        wait.until(lambda d: first < ended() < 60)
        shoot(f"ui-run-{store_name}.png")
        wait.until(lambda d: ended() == 60)
        wait.until(lambda d: status_shown() == "succeeded")
        assert browser.execute_script("return window.__same_page") is True
        assert browser.execute_script("return document.getElementById('live-state').className") == (
            "live-state on"
        )

        # Cancel, behind a confirmation.
        browser.get(base + "/runs/waits-1")
        click("#action-cancel")
        wait.until(expected_conditions.alert_is_present())
        assert "Cancel waits-1" in browser.switch_to.alert.text
        browser.switch_to.alert.accept()
        wait.until(lambda d: status_shown() == "cancelled")
        assert "cancelled: 1 execution(s)" in text_of("p.notice")

        # The failed run, its failed child and the probe in arguments and errors.
        browser.get(base + "/runs/breaks-1")
        assert "ValueError" in text_of("#run-error")
        browser.get(base + "/failed/breaks-1")
        table = text_of("table.failures")
        assert "breaks-1/1/0" in table and 'onerror="window.__xss = 2"' in table
        assert browser.execute_script("return window.__xss") is None
        shoot(f"ui-failed-{store_name}.png")

        browser.get(base + "/workers")
        assert "live" in text_of("table.workers")
        shoot(f"ui-workers-{store_name}.png")
        browser.get(base + "/queues")
        assert "ui-api" in text_of("table.queues")
        assert "0 3 * * *" in text_of("table.schedules")
        shoot(f"ui-queues-{store_name}.png")
        assert browser.execute_script("return window.__xss") is None
    finally:
        for proc in (ui, worker):
            proc.terminate()
        for proc in (ui, worker):
            proc.wait(timeout=30)
    ui_log = (tmp_path / "ui.log").read_text()
    assert "Traceback" not in ui_log, ui_log
