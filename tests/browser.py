"""Pytest plugin: the real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

Fixtures: ``browser`` (one per session), ``console`` (what the page logged), ``page`` (a fresh
1280x800 context per test, its console wired into ``console``). Playwright's own browser
downloads are never used: the system Chromium is the one `make test` installs, and a machine
without it fails loudly instead of silently skipping the browser tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Error,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",  # containers and CI runners have no user namespaces for the sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Nothing but the page under test may touch the network.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

VIEWPORT: ViewportSize = {"width": 1280, "height": 800}


@dataclass
class ConsoleLog:
    """Everything a page said on its console, and the script errors it threw."""

    messages: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def record(self, message: ConsoleMessage) -> None:
        self.messages.append(f"{message.type}: {message.text}")

    def csp_violations(self) -> list[str]:
        """Chromium reports each Content-Security-Policy refusal as a console error."""
        return [m for m in self.messages if "Content Security Policy" in m or "Refused to" in m]


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    """The system's headless Chromium, shared by every browser test of the run."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: the browser tests need it. Install it with "
            "`sudo apt-get install chromium` (`make test` runs scripts/install-system-deps, "
            "which does), or point CHROMIUM_PATH at a Chromium binary.",
            pytrace=False,
        )
    try:
        instance = playwright_driver.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
    except Error as exc:
        pytest.fail(f"Chromium at {CHROMIUM} would not start: {exc}", pytrace=False)
    # A loaded CI machine can be slow to paint; a real failure still ends in seconds, not minutes.
    expect.set_options(timeout=10_000)
    yield instance
    instance.close()


@pytest.fixture
def console() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
def page(browser: Browser, console: ConsoleLog) -> Iterator[Page]:
    """A fresh browser context and tab; its console and page errors land in ``console``."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    tab.on("console", console.record)
    tab.on("pageerror", lambda exc: console.page_errors.append(str(exc)))
    yield tab
    context.close()
