"""Managing in the real headless Chromium: select images, delete them, download them as one ZIP,
and the admin's stats page (axe-core on each new page, the keyboard alone, no CSP violation)."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from playwright.sync_api import Browser, Dialog, Page, expect
from skimage import data as samples

from imaging.storage.local import LocalStore
from tests.browser import ConsoleLog
from tests.conftest import AppFactory, LiveServer
from tests.test_browser import jpeg_bytes, upload_via_api
from tests.test_browser_a11y import axe_source, blocking_violations
from tests.test_browser_gallery import TabbyLabeler

pytestmark = pytest.mark.browser
__all__ = ["axe_source"]  # the fixture, used by name

DELETE_KEYS = "cloud-image-app:delete-keys"
ADMIN_TOKEN = "admin-secret"
PHOTOS = (
    ("chelsea.jpg", samples.chelsea),
    ("coffee.jpg", samples.coffee),
    ("rocket.jpg", samples.rocket),
)

Seeder = Callable[..., tuple[LiveServer, list[dict[str, Any]]]]


@pytest.fixture
def gallery(make_app: AppFactory, serve: Callable[[Flask], LiveServer]) -> Seeder:
    """Serve an app holding three photos; their records (delete keys too), newest first."""

    def seed(count: int = 3, **kw: Any) -> tuple[LiveServer, list[dict[str, Any]]]:
        server = serve(make_app(labeler_impl=TabbyLabeler(), admin_token=ADMIN_TOKEN, **kw))
        created = [
            upload_via_api(server.app, jpeg_bytes(pixels()), name, formats="webp,jpeg")
            for name, pixels in PHOTOS[:count]
        ]
        return server, created[::-1]

    return seed


def hold_keys(page: Page, server: LiveServer, records: list[dict[str, Any]]) -> None:
    """This browser holds the delete keys of ``records``, as if it had uploaded them."""
    page.goto(server.url)
    keys = {r["id"]: r["delete_key"] for r in records}
    page.evaluate(
        "([name, keys]) => localStorage.setItem(name, keys)", [DELETE_KEYS, json.dumps(keys)]
    )
    page.reload()


def card(page: Page, record: dict[str, Any]) -> Any:
    return page.locator(f'[data-testid="gallery-card"][data-image-id="{record["id"]}"]')


def ids_shown(page: Page) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        '[data-testid="gallery-card"]', "cards => cards.map((c) => c.dataset.imageId)"
    )
    return ids


def accept_and_keep(page: Page) -> list[str]:
    """Accept the next confirm() and keep its text."""
    said: list[str] = []

    def answer(dialog: Dialog) -> None:
        said.append(dialog.message)
        dialog.accept()

    page.once("dialog", answer)
    return said


def test_the_keyboard_selects_the_images_this_browser_uploaded_and_deletes_them(
    page: Page, console: ConsoleLog, gallery: Seeder
) -> None:
    server, images = gallery()
    hold_keys(page, server, images[:2])

    # Tab to the first card's checkbox, Space to tick it; "Select mine" for the rest.
    box = card(page, images[0]).get_by_test_id("card-select")
    expect(box).to_have_attribute("aria-label", f"Select {images[0]['name']}")
    box.focus()
    page.keyboard.press("Space")
    expect(box).to_be_checked()
    expect(page.get_by_test_id("selection-count")).to_have_text("1 image selected")
    page.get_by_test_id("select-mine").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("selection-count")).to_have_text("2 images selected")
    delete = page.get_by_test_id("delete-selected")
    expect(delete).to_have_text("Delete 2")

    said = accept_and_keep(page)
    delete.focus()
    page.keyboard.press("Enter")

    expect(page.get_by_test_id("selection-status")).to_have_text("Deleted 2 images.")
    assert ids_shown(page) == [images[2]["id"]]
    assert said == ["Delete 2 images? This cannot be undone."]
    assert page.evaluate(f"localStorage.getItem('{DELETE_KEYS}')") == "{}"
    assert server.app.test_client().get(f"/api/images/{images[0]['id']}").status_code == 404
    assert console.csp_violations() == []
    assert console.page_errors == []


def test_deleting_a_mixed_selection_deletes_only_the_images_this_browser_may(
    page: Page, gallery: Seeder
) -> None:
    server, images = gallery()
    hold_keys(page, server, images[1:2])

    page.get_by_test_id("select-all").click()
    expect(page.get_by_test_id("delete-selected")).to_have_text("Delete 1")
    said = accept_and_keep(page)
    page.get_by_test_id("delete-selected").click()

    expect(page.get_by_test_id("selection-status")).to_contain_text("Deleted 1 image.")
    expect(page.get_by_test_id("selection-status")).to_contain_text("2 others stayed (not yours).")
    assert ids_shown(page) == [images[0]["id"], images[2]["id"]]
    assert "2 selected images will stay" in said[0]


def test_without_keys_nothing_selected_can_be_deleted(page: Page, gallery: Seeder) -> None:
    server, _ = gallery()
    page.goto(server.url)

    page.get_by_test_id("select-all").click()

    expect(page.get_by_test_id("selection-count")).to_have_text("3 images selected")
    expect(page.get_by_test_id("delete-selected")).to_be_disabled()
    expect(page.get_by_test_id("select-mine")).to_be_hidden()
    expect(page.get_by_test_id("download-selected")).to_be_enabled()


def test_the_selected_images_download_as_one_zip(
    page: Page, gallery: Seeder, tmp_path: Path
) -> None:
    server, images = gallery()
    page.goto(server.url)
    card(page, images[0]).get_by_test_id("card-select").check()
    card(page, images[2]).get_by_test_id("card-select").check()
    expect(card(page, images[0])).to_have_class(re.compile(r"\bis-selected\b"))
    expect(card(page, images[1])).not_to_have_class(re.compile(r"\bis-selected\b"))

    with page.expect_download() as caught:
        page.get_by_test_id("download-selected").click()
    download = caught.value
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)

    assert download.suggested_filename == "images-2.zip"
    archive = zipfile.ZipFile(io.BytesIO(saved.read_bytes()))
    assert archive.namelist() == ["rocket.webp", "chelsea.webp"]  # the order selected
    client = server.app.test_client()
    for name, record in zip(archive.namelist(), (images[0], images[2]), strict=True):
        assert archive.read(name) == client.get(urlsplit(record["variants"][0]["url"]).path).data
    expect(page.get_by_test_id("selection-status")).to_have_text("Downloading 2 images as one ZIP.")


def unlock_admin(page: Page, server: LiveServer) -> None:
    page.goto(f"{server.url}/admin/stats")
    expect(page.get_by_test_id("unlock-form")).to_be_visible()
    page.get_by_test_id("unlock-token").fill(ADMIN_TOKEN)
    page.get_by_test_id("unlock-token").press("Enter")
    expect(page).to_have_url(f"{server.url}/admin/stats")


def test_an_admin_session_deletes_every_selected_image(
    page: Page, console: ConsoleLog, gallery: Seeder
) -> None:
    server, _images = gallery()
    unlock_admin(page, server)
    page.goto(server.url)

    page.get_by_test_id("select-all").click()
    expect(page.get_by_test_id("delete-selected")).to_have_text("Delete 3")
    accept_and_keep(page)
    page.get_by_test_id("delete-selected").click()

    expect(page.get_by_test_id("empty-state")).to_be_visible()
    assert server.app.test_client().get("/api/images").get_json()["images"] == []
    assert console.csp_violations() == []


def test_the_admin_sees_the_stats_as_charts_with_tables(
    page: Page, console: ConsoleLog, gallery: Seeder
) -> None:
    server, _images = gallery()
    unlock_admin(page, server)

    uploads = page.get_by_role("img", name="Uploads per day, the last 30 days")
    expect(uploads).to_be_visible()
    assert (
        uploads.locator("rect[height]").evaluate_all(
            "bars => bars.filter((b) => parseFloat(b.getAttribute('height')) > 0).length"
        )
        == 1
    )
    expect(page.get_by_role("img", name="Variants per output format")).to_be_visible()
    expect(page.get_by_test_id("formats-table")).to_contain_text("webp")
    expect(page.get_by_test_id("sources-table")).to_contain_text("fixed")
    expect(page.get_by_test_id("images-count")).to_have_text("3")
    # Coloured by the theme's CSS, not by inline styles the CSP would refuse.
    fill = page.locator(".chart-bar").first.evaluate("b => getComputedStyle(b).fill")
    assert fill not in ("", "none", "rgb(0, 0, 0)")

    page.get_by_test_id("admin-lock").click()
    page.goto(f"{server.url}/admin/stats")
    expect(page.get_by_test_id("unlock-form")).to_be_visible()
    assert console.csp_violations() == []
    assert console.page_errors == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_new_pages_have_no_serious_or_critical_axe_violation(
    page: Page,
    console: ConsoleLog,
    gallery: Seeder,
    axe_source: str,
    scheme: str,
    tmp_path: Path,
) -> None:
    page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
    server, images = gallery()
    found: dict[str, list[str]] = {}

    hold_keys(page, server, images[:1])
    page.get_by_test_id("select-all").click()
    found["gallery, selecting"] = blocking_violations(page, axe_source)

    page.goto(f"{server.url}/admin/stats")
    found["admin unlock"] = blocking_violations(page, axe_source)
    unlock_admin(page, server)
    page.locator("details").evaluate_all("all => all.forEach((d) => { d.open = true; })")
    found["stats"] = blocking_violations(page, axe_source)

    page.get_by_test_id("admin-lock").click()  # cookies ignore ports: the next server sees it
    empty = gallery(count=0, storage=LocalStore(tmp_path / "empty"))[0]
    unlock_admin(page, empty)
    expect(page.get_by_test_id("images-count")).to_have_text("0")
    found["stats, empty catalog"] = blocking_violations(page, axe_source)

    blocked = [f"{name}: {v}" for name, violations in found.items() for v in violations]
    assert blocked == [], "\n".join(blocked)
    assert console.csp_violations() == []


def test_on_a_phone_the_checkboxes_show_without_hover_and_a_tap_selects(
    browser: Browser, gallery: Seeder
) -> None:
    server, images = gallery()
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    try:
        phone = context.new_page()
        phone.goto(server.url)
        box = card(phone, images[1]).get_by_test_id("card-select")
        # A touch screen has no hover to reveal them: they are always shown there.
        assert box.evaluate("b => getComputedStyle(b).opacity") == "1"

        box.tap()

        expect(box).to_be_checked()
        expect(phone.get_by_test_id("selection-count")).to_have_text("1 image selected")
        expect(phone.get_by_test_id("lightbox")).to_be_hidden()  # the tap did not open it
    finally:
        context.close()
