"""The dashboard in headless Chromium against the demo started by the README's first command:
login, every page, live values changing, keyboard use, a control-room and a tablet screen, and a
screenshot of each page kept with the test run's output (``build/screenshots``, or
``$SHOPFLOOR_ARTIFACTS``)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tests.e2e.test_demo import ROOT, Demo

pytestmark = pytest.mark.e2e
CHROMIUM = os.environ.get("SHOPFLOOR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("SHOPFLOOR_ARTIFACTS", ROOT / "build")) / "screenshots"
CONTROL_ROOM = {"width": 1366, "height": 768}
TABLET = {"width": 768, "height": 1024}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    if sys.platform == "win32":
        pytest.skip("POSIX only")
    d = Demo(tmp_path_factory.mktemp("dashboard") / "data")
    try:
        d.wait_token(timeout=600)
        with d.client() as c:  # every machine has published once
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                machines = c.get("/overview").json()["machines"]
                if machines and all(m["live"]["state"] for m in machines):
                    break
                time.sleep(0.5)
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "playwright (pip install playwright)")
        raise
    need(Path(CHROMIUM).exists(), f"Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, demo: Demo) -> Iterator[Any]:
    context = browser.new_context(viewport=CONTROL_ROOM, base_url=f"http://127.0.0.1:{demo.http_port}")
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.goto("/login")
    pg.fill("#token", demo.token or "")
    pg.click("button[type=submit]")
    pg.wait_for_url("**/")
    yield pg
    context.close()
    assert errors == [], errors


def _shot(pg: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def _fits(pg: Any) -> bool:
    return bool(pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def test_login_refuses_a_wrong_token_with_its_reason(browser: Any, demo: Demo) -> None:
    context = browser.new_context(viewport=CONTROL_ROOM, base_url=f"http://127.0.0.1:{demo.http_port}")
    pg = context.new_page()
    pg.goto("/")
    assert pg.url.endswith("/login")
    pg.fill("#token", "sft_wrong")
    pg.click("button[type=submit]")
    assert "unknown or revoked API token" in pg.inner_text(".error")
    assert not any(c["name"] == "shopfloor_session" for c in context.cookies())
    _shot(pg, "login")
    context.close()


def test_overview_shows_every_machine_and_updates_live(page: Any, demo: Demo) -> None:
    with demo.client() as c:
        machines = c.get("/assets", params={"level": "machine"}).json()
    page.wait_for_selector(".tile")
    assert page.locator(".tile").count() == len(machines)
    first = page.locator(".tile").first
    assert "OEE" in first.inner_text() and "parts today" in first.inner_text()
    # the state stream keeps the page live: the status line is stamped on every push
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('live')", timeout=10_000)
    stamped = page.inner_text("#status")
    page.wait_for_function(f"document.querySelector('#status').textContent !== {stamped!r}", timeout=15_000)
    cookie = next(c for c in page.context.cookies() if c["name"] == "shopfloor_session")
    assert cookie["httpOnly"] is True
    assert page.evaluate("document.cookie").find("shopfloor_session") == -1, "the token is out of the scripts' reach"
    assert _fits(page)
    _shot(page, "overview")
    page.set_viewport_size(TABLET)
    assert _fits(page)
    _shot(page, "overview-tablet")


def test_machine_page_charts_and_live_values(page: Any) -> None:
    page.wait_for_selector(".tile")
    page.locator(".tile").first.click()
    page.wait_for_url("**/machines/*")
    page.wait_for_selector("#latest td[data-measurement]")
    page.wait_for_selector("#chart canvas")
    cells = "[...document.querySelectorAll('#latest td[data-measurement]')].map(td => td.textContent).join('|')"
    before = page.evaluate(cells)
    page.wait_for_function(f"{cells} !== {before!r}", timeout=15_000)
    assert page.locator("#states tr").count() >= 1
    page.select_option("#window", "86400")
    page.wait_for_selector("#chart canvas")
    _shot(page, "machine")


def test_kpi_page_shows_the_line_and_the_comparison(page: Any) -> None:
    page.goto("/kpis")
    page.wait_for_selector("#kpi-totals .kpi")
    labels = page.inner_text("#kpi-totals")
    for label in ("OEE", "Availability", "Performance", "Quality", "Good units / kWh", "Good units / labour h"):
        assert label in labels
    assert page.locator("#kpi-shifts tr").count() >= 1
    page.click("#compare-form button")
    page.wait_for_selector("#compare .bar-row, #compare p")
    _shot(page, "kpis")


def test_devices_page_lists_devices_online(page: Any) -> None:
    page.goto("/devices")
    page.wait_for_selector("#devices tr")
    assert "online" in page.inner_text("#devices")
    assert "messages/s" in page.inner_text("#ingest-rate")
    _shot(page, "devices")


def test_the_dashboard_is_usable_from_the_keyboard(page: Any) -> None:
    page.wait_for_selector(".tile")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    # tab through the navigation to the first machine tile and open it with Enter
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('tile')"):
            break
    assert page.evaluate("document.activeElement.classList.contains('tile')")
    page.keyboard.press("Enter")
    page.wait_for_url("**/machines/*")


def test_alarm_appears_live_and_is_acknowledged_from_the_console(page: Any, demo: Demo) -> None:
    with demo.client() as c:
        press = next(m for m in c.get("/assets", params={"level": "machine"}).json() if m["name"] == "press-1")
        r = c.post("/rules", json={"name": "browser test: oil above zero", "kind": "threshold", "asset": press["id"],
                                   "measurement": "temperature", "high": 0, "priority": "critical"})
        assert r.status_code == 201, r.text
    page.goto("/alarms")
    page.wait_for_selector("#alarms")
    row = page.locator("tr.alarm", has_text="browser test: oil above zero")
    row.wait_for(timeout=20_000)  # raised by the next temperature sample, shown via the live stream
    assert "active unacknowledged" in row.inner_text()
    _shot(page, "alarms")
    page.once("dialog", lambda d: d.accept("seen in the browser test"))
    row.locator("button[data-act=acknowledge]").click()
    page.wait_for_function(
        "[...document.querySelectorAll('tr.alarm')].some(r => r.textContent.includes('browser test: oil above zero')"
        " && r.textContent.includes('active acknowledged'))", timeout=10_000)
    journal = page.locator("#journal")
    journal.locator("tr", has_text="seen in the browser test").wait_for(timeout=10_000)
    assert "acknowledge" in journal.inner_text()
    page.goto("/")
    page.wait_for_selector(f"#tile-{press['id']} [data-field=alarms]:not([hidden])", timeout=15_000)
    assert "alarm" in page.inner_text(f"#tile-{press['id']} [data-field=alarms]")
