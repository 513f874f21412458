"""Accessibility in the real headless Chromium: axe-core on every page, and the keyboard alone.

axe-core comes from npm (package.json, installed by `make test` with `npm ci`). Its source is
evaluated in the page through Playwright (the DevTools protocol), so the app's CSP stays exactly
as it is: nothing is served from the app's origin or anywhere else for it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from PIL import Image
from playwright.sync_api import Page, expect
from skimage import data as samples

from tests import images
from tests.browser import ConsoleLog
from tests.conftest import AppFactory, LiveServer
from tests.test_browser import jpeg_bytes, upload_via_api
from tests.test_browser_gallery import TabbyLabeler

pytestmark = pytest.mark.browser

AXE = Path(__file__).resolve().parent.parent / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")


@pytest.fixture(scope="session")
def axe_source() -> str:
    if not AXE.is_file():
        pytest.fail(f"axe-core not found at {AXE}: run `npm ci` (`make test` does).", pytrace=False)
    return AXE.read_text()


def blocking_violations(page: Page, axe_source: str) -> list[str]:
    """Run axe on the page once it settles; the serious and critical findings, readable."""
    # Colours measured mid-transition (a button just clicked fading to its hover colour) are
    # neither the before nor the after a person sees: wait for every CSS transition to end.
    page.wait_for_function("() => document.getAnimations().every((a) => a.playState !== 'running')")
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source)
    found: list[dict[str, Any]] = page.evaluate("() => axe.run(document).then((r) => r.violations)")
    return [
        f"{v['impact']} {v['id']}: {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in found
        if v["impact"] in BLOCKING
    ]


def seed(server: LiveServer) -> list[dict[str, Any]]:
    """Two photos, newest first; the newest has camera EXIF, so its detail page lists it."""
    coffee = images.camera_photo(image=Image.fromarray(samples.coffee()), gps=False)
    created = [
        upload_via_api(server.app, jpeg_bytes(samples.chelsea()), "chelsea.jpg", "webp,jpeg"),
        upload_via_api(server.app, coffee, "coffee.jpg", formats="webp,jpeg"),
    ]
    assert created[1]["camera"] == images.CAMERA_FACTS
    return created[::-1]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_has_no_serious_or_critical_axe_violation(
    page: Page,
    console: ConsoleLog,
    make_app: AppFactory,
    serve: Callable[[Flask], LiveServer],
    axe_source: str,
    scheme: str,
) -> None:
    page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
    server = serve(make_app(labeler_impl=TabbyLabeler()))
    found: dict[str, list[str]] = {}

    page.goto(server.url)
    expect(page.get_by_test_id("empty-state")).to_be_visible()
    found["empty gallery"] = blocking_violations(page, axe_source)

    created = seed(server)
    page.goto(server.url)
    expect(page.get_by_test_id("gallery-card")).to_have_count(2)
    found["gallery"] = blocking_violations(page, axe_source)

    page.get_by_test_id("gallery-card").first.click()
    expect(page.get_by_test_id("lightbox")).to_be_visible()
    page.keyboard.press("i")
    expect(page.get_by_test_id("lightbox-info")).to_be_visible()
    found["lightbox"] = blocking_violations(page, axe_source)

    page.goto(f"{server.url}/images/{created[0]['id']}")
    found["detail"] = blocking_violations(page, axe_source)

    page.goto(f"{server.url}/upload")
    page.get_by_test_id("file-input").set_input_files(
        {"name": "a.jpg", "mimeType": "image/jpeg", "buffer": jpeg_bytes(samples.coffee())}
    )
    page.get_by_test_id("curl-button").click()
    found["upload"] = blocking_violations(page, axe_source)

    page.goto(f"{server.url}/images/no-such-image")
    expect(page.get_by_test_id("error-page")).to_be_visible()
    found["error page"] = blocking_violations(page, axe_source)

    locked = serve(make_app(upload_tokens=("s3cret",)))
    page.goto(f"{locked.url}/upload")
    expect(page).to_have_url(f"{locked.url}/unlock")
    found["unlock"] = blocking_violations(page, axe_source)

    blocked = [f"{name}: {v}" for name, violations in found.items() for v in violations]
    assert blocked == [], "\n".join(blocked)
    assert console.csp_violations() == []


#: Marks every visible control a keyboard user must be able to reach; returns how many.
MARK_ACTIONS = """
  () => {
    const controls = [...document.querySelectorAll('a[href], button:not(:disabled), '
      + 'input:not([type="hidden"]):not(:disabled), select, textarea')]
      .filter((el) => el.getClientRects().length > 0 || el.id === 'file-input')
      .filter((el) => !el.closest('dialog:not([open])'));
    controls.forEach((el, i) => { el.dataset.action = String(i); });
    return controls.length;
  }
"""
FOCUSED_ACTION = "() => document.activeElement ? document.activeElement.dataset.action : null"


def tab_through(page: Page) -> tuple[int, set[str]]:
    total: int = page.evaluate(MARK_ACTIONS)
    reached: set[str] = set()
    for _ in range(total + 5):
        page.keyboard.press("Tab")
        action = page.evaluate(FOCUSED_ACTION)
        if action is not None:
            reached.add(action)
    return total, reached


def test_the_keyboard_alone_reaches_every_action_of_the_upload_page(
    page: Page, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    server = serve(make_app())
    page.goto(f"{server.url}/upload")
    page.get_by_test_id("file-input").set_input_files(
        {"name": "a.jpg", "mimeType": "image/jpeg", "buffer": jpeg_bytes(samples.coffee())}
    )
    expect(page.get_by_test_id("upload-item")).to_have_count(1)

    total, reached = tab_through(page)

    assert total >= 12  # nav, theme, picker, 5 formats, sizes, fit, quality, buttons, remove
    assert reached == {str(i) for i in range(total)}


def test_the_keyboard_alone_reaches_every_action_of_the_gallery_and_its_lightbox(
    page: Page, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    server = serve(make_app(labeler_impl=TabbyLabeler()))
    seed(server)
    page.goto(server.url)

    total, reached = tab_through(page)
    assert reached == {str(i) for i in range(total)}

    page.get_by_test_id("card-link").first.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("lightbox")).to_be_visible()
    page.keyboard.press("i")
    total, reached = tab_through(page)
    actions = page.evaluate(
        "() => [...document.querySelectorAll('#lightbox [data-action]')].length"
    )
    assert actions >= 4  # close, info, next, details (no previous on the first image)
    lightbox_actions = set(
        page.evaluate(
            "() => [...document.querySelectorAll('#lightbox [data-action]')]"
            ".map((e) => e.dataset.action)"
        )
    )
    enabled = set(
        page.evaluate(
            "() => [...document.querySelectorAll('#lightbox [data-action]')]"
            ".filter((e) => !e.disabled).map((e) => e.dataset.action)"
        )
    )
    assert enabled <= reached
    assert reached <= lightbox_actions
