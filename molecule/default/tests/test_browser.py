"""Flower's pages in a real browser (Debian's chromium, headless, driven by
playwright), logged in through nginx as admin: each page shows its data and
the console stays free of errors (a blocked script or style, e.g. by the
Content-Security-Policy, is a console error). Screenshots are kept as test
artifacts in .artifacts/screenshots/<instance>/."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from conftest import DOMAIN, PROJECT_DIR, login_context, prefix
from playwright.sync_api import Browser, Page

# Also on the platform with flower_url_prefix /flower: the same pages under the prefix.
EVERY_PLATFORM = True
ARTIFACTS = Path(os.environ.get("FLOWEROPS_ARTIFACTS", PROJECT_DIR / ".artifacts"))


def open_page(browser: Browser, host: Any, path: str, wait_text: str, name: str, exact: bool = False) -> list[str]:
    """Open a page as admin, wait until it shows wait_text (an element's whole text if exact), screenshot it;
    returns the console errors."""
    context = login_context(browser)
    page: Page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        response = page.goto(f"https://{DOMAIN}{prefix(host)}{path}", wait_until="networkidle", timeout=30000)
        assert response is not None and response.status == 200, f"{path}: {response and response.status}"
        page.get_by_text(wait_text, exact=exact).first.wait_for(timeout=15000)
        page.wait_for_timeout(1500)  # one polling round of the UI, whose errors count too
        shots = ARTIFACTS / "screenshots" / host.backend.get_hostname()
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    finally:
        context.close()
    return errors


def test_dashboard_shows_the_worker(browser: Browser, host: Any, sample: dict[str, str]) -> None:
    assert open_page(browser, host, "/", sample["worker"], "dashboard") == []


def test_tasks_list_shows_the_task(browser: Browser, host: Any, sample: dict[str, str]) -> None:
    assert open_page(browser, host, "/tasks", sample["task"], "tasks") == []


def test_task_page_shows_its_result(browser: Browser, host: Any, sample: dict[str, str]) -> None:
    assert open_page(browser, host, f"/task/{sample['task']}", "SUCCESS", "task") == []


def test_worker_page_shows_its_pool(browser: Browser, host: Any, sample: dict[str, str]) -> None:
    assert open_page(browser, host, f"/worker/{sample['worker']}", sample["worker"], "worker") == []


def test_broker_page_shows_the_workers_queue(browser: Browser, host: Any, sample: dict[str, str]) -> None:
    """Redis on the first platform, RabbitMQ on the prefix one (through its management API): the queue the
    sample worker consumes is a row of the Broker page, not "No queue data is available"."""
    assert open_page(browser, host, "/broker", "celery", "broker", exact=True) == []
