"""The pages in the real headless Chromium: upload, progress, results, gallery, detail, copy."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from flask import Flask
from PIL import Image
from playwright.sync_api import Browser, Page, Request, expect
from skimage import data as samples

from imaging.formats import accepted_inputs_sentence
from tests.browser import ConsoleLog
from tests.conftest import AppFactory, LiveServer
from tests.uploads import upload_ok

pytestmark = pytest.mark.browser

#: The local labeler converts its bundled model on first use; every later call is quick.
UPLOAD_TIMEOUT_MS = 60_000

ALL_THUMBNAILS_LOADED = """
  (count) => {
    const thumbs = [...document.querySelectorAll('[data-testid="thumb"]')];
    return thumbs.length === count && thumbs.every((img) => img.complete && img.naturalWidth > 0);
  }
"""


def jpeg_bytes(pixels: np.ndarray[Any, Any]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def photo_file(tmp_path: Path, name: str, pixels: np.ndarray[Any, Any]) -> Path:
    path = tmp_path / name
    path.write_bytes(jpeg_bytes(pixels))
    return path


def upload_via_api(app: Flask, data: bytes, name: str, formats: str = "webp") -> dict[str, Any]:
    """Seed the gallery through the JSON API of the very app the browser is looking at."""
    body: dict[str, Any] = upload_ok(app.test_client(), data, name, format=formats)
    return body


def record_posts(page: Page) -> list[str]:
    posts: list[str] = []

    def seen(request: Request) -> None:
        if request.method == "POST":
            posts.append(request.url)

    page.on("request", seen)
    return posts


def test_two_photos_upload_with_progress_and_appear_labelled_in_the_gallery(
    page: Page, console: ConsoleLog, live_server: LiveServer, tmp_path: Path
) -> None:
    cat = photo_file(tmp_path, "chelsea.jpg", samples.chelsea())
    coffee = photo_file(tmp_path, "coffee.jpg", samples.coffee())
    page.goto(f"{live_server.url}/upload")

    page.get_by_test_id("file-input").set_input_files([cat, coffee])
    expect(page.get_by_test_id("upload-item")).to_have_count(2)
    page.get_by_test_id("upload-button").click()

    items = page.get_by_test_id("upload-item")
    for index in range(2):
        item = items.nth(index)
        bar = item.get_by_test_id("progress")
        expect(bar).to_have_attribute("data-state", "done", timeout=UPLOAD_TIMEOUT_MS)
        expect(bar).to_have_attribute("aria-valuenow", "100")
        expect(bar).to_have_text("done")
        expect(item.get_by_test_id("result-label").first).to_be_visible()
        # A chip reads "<label> <score>%" and links to the gallery filtered by that label.
        expect(item.get_by_test_id("result-label").first).to_have_text(re.compile(r"^\S.* \d+%$"))
        expect(item.get_by_test_id("result-label").first).to_have_attribute(
            "href", re.compile(r"^/\?label=[a-z0-9-]+$")
        )
        expect(item.get_by_test_id("result-url").first).to_have_text(
            re.compile(rf"^{re.escape(live_server.url)}/media/.+\.webp$")
        )

    page.get_by_test_id("to-gallery").click()
    expect(page).to_have_url(f"{live_server.url}/")
    cards = page.get_by_test_id("gallery-card")
    expect(cards).to_have_count(2)
    page.wait_for_function(ALL_THUMBNAILS_LOADED, arg=2, timeout=15_000)
    cat_chips = cards.filter(has_text="chelsea.jpg").get_by_test_id("label-chip")
    expect(cat_chips.filter(has_text=re.compile("cat", re.IGNORECASE)).first).to_be_visible()
    expect(cards.filter(has_text="coffee.jpg").get_by_test_id("label-chip").first).to_be_visible()
    page.screenshot(path=tmp_path / "gallery.png", full_page=True)

    assert console.csp_violations() == []
    assert console.page_errors == []


def test_a_file_that_is_not_an_image_is_refused_in_the_page_and_never_sent(
    page: Page, console: ConsoleLog, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    server: LiveServer = serve(make_app())
    posts = record_posts(page)
    page.goto(f"{server.url}/upload")

    page.get_by_test_id("file-input").set_input_files(
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"shopping list"}
    )
    item = page.get_by_test_id("upload-item")
    expect(item).to_have_attribute("data-state", "invalid")
    expect(item.get_by_test_id("upload-status")).to_contain_text("Not an image")
    # The formats it names come from the server's registry, not from the script.
    expect(item.get_by_test_id("upload-status")).to_contain_text(accepted_inputs_sentence())
    page.get_by_test_id("upload-button").click()

    expect(page.get_by_test_id("form-message")).to_contain_text("None of the chosen files")
    assert posts == []
    page.goto(server.url)
    expect(page.get_by_test_id("empty-state")).to_be_visible()
    assert console.csp_violations() == []


def test_a_file_over_the_size_limit_is_refused_in_the_page_and_never_sent(
    page: Page, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    # Direct uploads raise the page's limit to DIRECT_UPLOAD_MAX_MB: cap both at 1 MB here.
    server: LiveServer = serve(make_app(max_upload_mb=1, direct_upload_max_mb=1))
    posts = record_posts(page)
    page.goto(f"{server.url}/upload")

    page.get_by_test_id("file-input").set_input_files(
        {"name": "huge.jpg", "mimeType": "image/jpeg", "buffer": b"\xff" * (1024 * 1024 + 1)}
    )
    item = page.get_by_test_id("upload-item")
    expect(item).to_have_attribute("data-state", "invalid")
    expect(item.get_by_test_id("upload-status")).to_contain_text("the limit is 1.0 MiB")
    page.get_by_test_id("upload-button").click()

    expect(page.get_by_test_id("form-message")).to_be_visible()
    assert posts == []


def test_the_servers_refusal_is_shown_on_that_files_row(
    page: Page, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    app = make_app()
    server: LiveServer = serve(app)
    fake = b"this is text wearing a .jpg name"
    refusal = app.test_client().post(
        "/api/images",
        data={"image": (io.BytesIO(fake), "fake.jpg")},
        content_type="multipart/form-data",
    )
    assert refusal.status_code == 415
    page.goto(f"{server.url}/upload")

    page.get_by_test_id("file-input").set_input_files(
        {"name": "fake.jpg", "mimeType": "image/jpeg", "buffer": fake}
    )
    page.get_by_test_id("upload-button").click()

    item = page.get_by_test_id("upload-item")
    expect(item.get_by_test_id("progress")).to_have_attribute("data-state", "error")
    expect(item.get_by_test_id("upload-status")).to_have_text(refusal.get_json()["message"])
    expect(page.get_by_test_id("upload-summary")).to_have_text("0 images uploaded, 1 failed.")


def test_a_card_opens_the_detail_page_whose_copy_button_copies_the_full_url(
    page: Page, console: ConsoleLog, live_server: LiveServer
) -> None:
    created = upload_via_api(
        live_server.app, jpeg_bytes(samples.chelsea()), "chelsea.jpg", formats="webp,jpeg"
    )
    # Seeded through the test client (host "localhost"): only the paths carry over to the page.
    paths = [urlsplit(variant["url"]).path for variant in created["variants"]]
    expected = [f"{live_server.url}{path}" for path in paths]
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page.goto(live_server.url)

    page.get_by_test_id("gallery-card").click()
    # A card opens the lightbox in place; its info panel (`i`) links to the detail page.
    expect(page.get_by_test_id("lightbox")).to_be_visible()
    page.keyboard.press("i")
    page.get_by_test_id("lightbox-details").click()
    expect(page).to_have_url(f"{live_server.url}/images/{created['id']}")
    urls = page.get_by_test_id("variant-url")
    expect(urls).to_have_count(2)
    for index, url in enumerate(expected):
        expect(urls.nth(index)).to_have_value(url)
    copy = page.get_by_test_id("copy").nth(1)
    copy.click()

    expect(copy).to_have_text("Copied!")
    assert page.evaluate("navigator.clipboard.readText()") == expected[1]
    assert console.csp_violations() == []
    assert console.page_errors == []


def test_every_url_on_the_detail_page_serves_its_format(
    page: Page, live_server: LiveServer
) -> None:
    created = upload_via_api(
        live_server.app, jpeg_bytes(samples.coffee()), "coffee.jpg", formats="webp,jpeg,png"
    )
    page.goto(f"{live_server.url}/images/{created['id']}")

    urls = page.get_by_test_id("variant-url")
    expect(urls).to_have_count(3)
    served = []
    for index in range(3):
        response = page.request.get(urls.nth(index).input_value())
        assert response.ok
        served.append(response.headers["content-type"])
    assert served == ["image/webp", "image/jpeg", "image/png"]


def test_a_label_chip_filters_the_gallery_and_the_filter_clears(
    page: Page, live_server: LiveServer
) -> None:
    upload_via_api(live_server.app, jpeg_bytes(samples.chelsea()), "chelsea.jpg")
    upload_via_api(live_server.app, jpeg_bytes(samples.coffee()), "coffee.jpg")
    page.goto(live_server.url)
    cards = page.get_by_test_id("gallery-card")
    expect(cards).to_have_count(2)

    cards.filter(has_text="coffee.jpg").get_by_test_id("label-chip").first.click()
    expect(cards).to_have_count(1)
    expect(cards).to_contain_text("coffee.jpg")
    expect(page.get_by_test_id("active-filter")).to_be_visible()

    page.get_by_test_id("clear-filter").click()
    expect(cards).to_have_count(2)


def test_files_dropped_on_the_zone_join_the_queue(
    page: Page, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    server = serve(make_app())
    page.goto(f"{server.url}/upload")
    dropped = page.evaluate_handle(
        """() => {
          const transfer = new DataTransfer();
          transfer.items.add(new File(['x'], 'dropped.png', { type: 'image/png' }));
          return transfer;
        }"""
    )
    zone = page.get_by_test_id("drop-zone")

    zone.dispatch_event("dragover", {"dataTransfer": dropped})
    expect(zone).to_have_class(re.compile(r"\bis-dragover\b"))
    zone.dispatch_event("drop", {"dataTransfer": dropped})

    expect(zone).not_to_have_class(re.compile(r"\bis-dragover\b"))
    item = page.get_by_test_id("upload-item")
    expect(item).to_have_attribute("data-state", "queued")
    expect(item.get_by_test_id("upload-name")).to_have_text("dropped.png")


def test_the_upload_form_works_without_javascript(
    browser: Browser, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    server = serve(make_app())
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(f"{server.url}/upload")
        page.get_by_test_id("file-input").set_input_files(
            {"name": "plain.jpg", "mimeType": "image/jpeg", "buffer": jpeg_bytes(samples.coffee())}
        )
        page.get_by_label("JPEG").check()
        page.get_by_test_id("upload-button").click()

        expect(page).to_have_url(re.compile(rf"^{re.escape(server.url)}/images/\w+$"))
        expect(page.get_by_test_id("image-name")).to_have_text("plain.jpg")
        expect(page.get_by_test_id("variant")).to_have_count(2)
    finally:
        context.close()
