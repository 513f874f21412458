"""The pages' security in the real headless Chromium: CSP, hostile names, delete from the browser.

Every page must render under the Content-Security-Policy without a single refusal (a refusal
means a feature silently broken or an injection attempt); names are data, never markup; and the
Delete button belongs to the browser that uploaded the image, which alone holds its delete key.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, Dialog, Page, expect

from imaging.storage.local import LocalStore
from tests import images
from tests.browser import VIEWPORT, ConsoleLog
from tests.conftest import AppFactory, LiveServer
from tests.vision_server import VisionServer

pytestmark = pytest.mark.browser

HOSTILE_NAME = "<img src=x onerror=alert(1)>.png"
DELETE_KEYS = "cloud-image-app:delete-keys"


def seed(app: Flask, data: bytes, name: str) -> dict[str, Any]:
    """Put an image in the gallery through the JSON API of the app the browser looks at."""
    response = app.test_client().post(
        "/api/images",
        data={"image": (io.BytesIO(data), name), "format": "webp"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def upload_in_page(page: Page, server: LiveServer, name: str, data: bytes) -> str:
    """Upload one file through the upload page's script; return the new image's detail URL."""
    page.goto(f"{server.url}/upload")
    page.get_by_test_id("file-input").set_input_files(
        {"name": name, "mimeType": "image/png", "buffer": data}
    )
    page.get_by_test_id("upload-button").click()
    item = page.get_by_test_id("upload-item")
    expect(item.get_by_test_id("progress")).to_have_attribute("data-state", "done")
    link = item.get_by_test_id("upload-name").get_by_role("link")
    href = link.get_attribute("href")
    assert href is not None
    return href


@pytest.fixture
def dialogs(page: Page) -> list[str]:
    """Every alert/confirm/prompt the page opens (an injected script's first move)."""
    opened: list[str] = []

    def seen(dialog: Dialog) -> None:
        opened.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", seen)
    return opened


@pytest.fixture
def labelled_server(
    make_app: AppFactory, serve: Callable[[Flask], LiveServer], vision_server: VisionServer
) -> LiveServer:
    """An app labelling through the local Vision stand-in (quick, and labels make filter chips)."""
    return serve(make_app(labeler="vision", vision_api_endpoint=vision_server.endpoint))


# -- Content-Security-Policy ----------------------------------------------------------------------


def visit(page: Page, url: str) -> None:
    page.goto(url, wait_until="networkidle")


def test_the_policy_refuses_an_injected_inline_handler_and_the_console_says_so(
    page: Page, console: ConsoleLog, dialogs: list[str], labelled_server: LiveServer
) -> None:
    # Proves the check the other tests rely on: a refusal does reach ``csp_violations``.
    visit(page, labelled_server.url)
    with page.expect_console_message(lambda message: "Content Security Policy" in message.text):
        page.evaluate(
            "document.body.insertAdjacentHTML('beforeend', '<img src=x onerror=\"alert(1)\">')"
        )

    assert console.csp_violations() != []
    assert dialogs == []


def test_the_empty_gallery_renders_without_a_csp_refusal(
    page: Page, console: ConsoleLog, labelled_server: LiveServer
) -> None:
    visit(page, labelled_server.url)
    expect(page.get_by_test_id("empty-state")).to_be_visible()
    assert console.csp_violations() == []
    assert console.page_errors == []


@pytest.mark.parametrize(
    ("path", "visible"),
    [
        ("/", "gallery-card"),
        ("/?label=cat", "active-filter"),
        ("/upload", "drop-zone"),
        ("/images/{id}", "variant-url"),
        ("/images/0000000000000deadbeef", "error-page"),
        ("/no/such/page", "error-page"),
    ],
    ids=["gallery", "filtered-gallery", "upload", "detail", "missing-image", "404"],
)
def test_every_page_renders_without_a_csp_refusal(
    page: Page,
    console: ConsoleLog,
    labelled_server: LiveServer,
    path: str,
    visible: str,
) -> None:
    created = seed(labelled_server.app, images.jpeg(64, 48), "cat.jpg")
    seed(labelled_server.app, images.png(48, 64), "other.png")

    visit(page, labelled_server.url + path.format(id=created["id"]))

    expect(page.get_by_test_id(visible).first).to_be_visible()
    assert console.csp_violations() == []
    assert console.page_errors == []


def test_the_uploader_is_told_when_safesearch_holds_an_image_back(
    page: Page,
    console: ConsoleLog,
    make_app: AppFactory,
    serve: Callable[[Flask], LiveServer],
    vision_server: VisionServer,
) -> None:
    vision_server.set_mode("labels", safe_search={"adult": "VERY_LIKELY"})
    server = serve(
        make_app(
            labeler="vision",
            vision_api_endpoint=vision_server.endpoint,
            safe_search=True,
            safe_search_hide="LIKELY",
        )
    )

    detail_url = upload_in_page(page, server, "held.png", images.png())

    expect(page.get_by_test_id("result-note")).to_contain_text("Held back for review")
    visit(page, detail_url)
    expect(page.get_by_test_id("held-back")).to_be_visible()
    visit(page, server.url)
    expect(page.get_by_test_id("empty-state")).to_be_visible()
    assert console.csp_violations() == []


def test_the_unlock_page_renders_without_a_csp_refusal(
    page: Page, console: ConsoleLog, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    server = serve(make_app(upload_tokens=("sesame",)))

    visit(page, f"{server.url}/upload")

    expect(page).to_have_url(f"{server.url}/unlock")
    page.get_by_label("Token").fill("sesame")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_test_id("drop-zone")).to_be_visible()
    assert console.csp_violations() == []
    assert console.page_errors == []


# -- names are text -------------------------------------------------------------------------------


def test_a_hostile_file_name_is_shown_as_text_in_the_results_gallery_and_detail(
    page: Page,
    console: ConsoleLog,
    dialogs: list[str],
    make_app: AppFactory,
    serve: Callable[[Flask], LiveServer],
) -> None:
    server = serve(make_app())

    detail_url = upload_in_page(page, server, HOSTILE_NAME, images.png())
    expect(page.get_by_test_id("upload-name")).to_have_text(HOSTILE_NAME)
    visit(page, server.url)
    expect(page.get_by_test_id("gallery-card")).to_contain_text(HOSTILE_NAME)
    visit(page, detail_url)
    expect(page.get_by_test_id("image-name")).to_have_text(HOSTILE_NAME)

    assert page.locator("img[src='x']").count() == 0
    assert dialogs == []
    assert console.csp_violations() == []


# -- delete from the browser that uploaded --------------------------------------------------------


def test_the_uploading_browser_deletes_the_image_from_its_detail_page(
    page: Page,
    console: ConsoleLog,
    make_app: AppFactory,
    serve: Callable[[Flask], LiveServer],
) -> None:
    server = serve(make_app())
    detail_url = upload_in_page(page, server, "mine.png", images.png())
    image_id = detail_url.rsplit("/", 1)[-1]
    visit(page, detail_url)

    page.get_by_test_id("delete-button").click()
    page.get_by_test_id("delete-confirm-button").click()

    expect(page).to_have_url(f"{server.url}/")
    expect(page.get_by_test_id("empty-state")).to_be_visible()
    assert server.app.test_client().get(f"/api/images/{image_id}").status_code == 404
    assert page.evaluate(f"localStorage.getItem('{DELETE_KEYS}')") == "{}"
    assert console.csp_violations() == []
    assert console.page_errors == []


def test_the_delete_button_asks_for_confirmation_before_deleting(
    page: Page, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    server = serve(make_app())
    detail_url = upload_in_page(page, server, "mine.png", images.png())
    visit(page, detail_url)

    page.get_by_test_id("delete-button").click()
    expect(page.get_by_test_id("delete-confirm")).to_be_visible()
    page.get_by_role("button", name="Cancel").click()

    expect(page.get_by_test_id("delete-confirm")).to_be_hidden()
    visit(page, server.url)
    expect(page.get_by_test_id("gallery-card")).to_have_count(1)


def test_a_browser_without_the_delete_key_sees_no_delete_button(
    page: Page, browser: Browser, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    server = serve(make_app())
    detail_url = upload_in_page(page, server, "mine.png", images.png())
    visit(page, detail_url)
    expect(page.get_by_test_id("delete-button")).to_be_visible()

    stranger = browser.new_context(viewport=VIEWPORT)
    try:
        other = stranger.new_page()
        visit(other, detail_url)
        expect(other.get_by_test_id("image-name")).to_have_text("mine.png")
        expect(other.get_by_test_id("delete-button")).to_be_hidden()
    finally:
        stranger.close()


def test_a_stale_key_shows_the_servers_refusal_and_keeps_the_image(
    page: Page, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    server = serve(make_app())
    detail_url = upload_in_page(page, server, "mine.png", images.png())
    image_id = detail_url.rsplit("/", 1)[-1]
    page.evaluate(
        "([name, id]) => localStorage.setItem(name, JSON.stringify({[id]: 'not-the-key'}))",
        [DELETE_KEYS, image_id],
    )
    visit(page, detail_url)

    page.get_by_test_id("delete-button").click()
    page.get_by_test_id("delete-confirm-button").click()

    expect(page.get_by_test_id("delete-message")).to_contain_text("delete key")
    assert server.app.test_client().get(f"/api/images/{image_id}").status_code == 200


# -- SVG variants --------------------------------------------------------------------------------

SVG_PREVIEW_PAINTED = """
  () => { const img = document.querySelector('[data-testid=preview]');
          return img.complete && img.naturalWidth > 0; }
"""


def test_a_traced_svg_paints_on_the_detail_page_without_a_csp_refusal(
    page: Page, console: ConsoleLog, live_server: LiveServer, local_store: LocalStore
) -> None:
    response = live_server.app.test_client().post(
        "/api/images",
        data={
            "image": (io.BytesIO(images.encode(images.logo(), "PNG")), "logo.png"),
            "format": "svg",
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    created = response.get_json()
    visit(page, f"{live_server.url}/images/{created['id']}")
    page.wait_for_function(SVG_PREVIEW_PAINTED, timeout=10_000)
    shot = images.open_image(page.get_by_test_id("preview").screenshot()).convert("RGB")
    # The logo's red disc sits left of centre, its blue bar top right (tests/images.py).
    w, h = shot.size
    red = shot.getpixel((w * 4 // 16, h * 4 // 12))
    blue = shot.getpixel((w * 11 // 16, h * 4 // 12))
    assert isinstance(red, tuple)
    assert isinstance(blue, tuple)
    assert (red[0] > 180, red[2] < 90) == (True, True), red
    assert (blue[2] > 150, blue[0] < 90) == (True, True), blue
    assert console.csp_violations() == []
    assert console.page_errors == []


def test_a_script_in_a_served_svg_never_runs(
    page: Page,
    console: ConsoleLog,
    dialogs: list[str],
    live_server: LiveServer,
    local_store: LocalStore,
) -> None:
    # Our SVGs hold paths only; this one is planted in the store to prove the second wall:
    # /media/ serves every file under a policy with no script and a sandbox.
    local_store.put(
        "img/0000000000000planted/evil.svg",
        b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
        b"<script>alert(2)</script><path d='M0 0 L9 9 Z'/></svg>",
        content_type="image/svg+xml",
    )
    page.goto(f"{live_server.url}/media/img/0000000000000planted/evil.svg", wait_until="load")
    page.wait_for_timeout(300)
    assert dialogs == []
    assert any("frame is sandboxed" in m for m in console.messages), console.messages
