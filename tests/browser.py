"""Debian's Chromium driven through chromedriver, headless and offline, for the browser test and
.ci/production_e2e.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


# Every real-browser test module: `pytestmark = [*BROWSER_TEST, ...]`.
BROWSER_TEST = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="Debian's chromium and chromium-driver are not installed (make browser-deps)",
    ),
]


def chromium() -> Any:
    """A new browser that keeps its console log (for CSP violations); quit() it when done."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or "/usr/bin/chromium"
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(service=service, options=options)
    driver.implicitly_wait(10)
    return driver


def fresh_browser(implicit_wait: float = 5) -> Iterator[Any]:
    """A test's own Chromium (the `browser` fixture of tests/conftest.py), quit after it."""
    driver = chromium()
    driver.implicitly_wait(implicit_wait)
    yield driver
    driver.quit()
