"""The gallery in the real headless Chromium: lightbox, phone grid, layout shift, colour modes."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, Request, Route, expect
from skimage import data as samples

from imaging.labeling import Label, LabelResult
from imaging.processing import LabelImage, placeholder
from tests.browser import ConsoleLog
from tests.conftest import AppFactory, LiveServer
from tests.gemini_server import GeminiServer
from tests.test_browser import ALL_THUMBNAILS_LOADED, jpeg_bytes, upload_via_api

pytestmark = pytest.mark.browser

ACTIVE_TESTID = "() => document.activeElement && document.activeElement.dataset.testid"
LIGHTBOX_IMAGE_LOADED = """
  () => { const img = document.getElementById('lightbox-image');
          return img.complete && img.naturalWidth > 0; }
"""
#: Sums every layout shift not caused by input, from the very start of the page (buffered).
CLS_OBSERVER = """
  window.__cls = 0;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if (!entry.hadRecentInput) window.__cls += entry.value;
    }
  }).observe({ type: 'layout-shift', buffered: true });
"""


class TabbyLabeler:
    """Labels every image "tabby cat", instantly: the info panel has something to show."""

    name = "fixed"

    def label(self, image: LabelImage) -> LabelResult:
        return LabelResult(labels=(Label("tabby cat", 0.9, self.name),))

    def check(self) -> None:
        return None


Seeder = Callable[[], tuple[LiveServer, list[dict[str, Any]]]]


@pytest.fixture
def seeded_gallery(make_app: AppFactory, serve: Callable[[Flask], LiveServer]) -> Seeder:
    """Serve an app holding three photos; their records in gallery order (newest first)."""

    def seed() -> tuple[LiveServer, list[dict[str, Any]]]:
        server = serve(make_app(labeler_impl=TabbyLabeler()))
        photos = [
            ("chelsea.jpg", samples.chelsea()),
            ("coffee.jpg", samples.coffee()),
            ("astronaut.jpg", samples.astronaut()),
        ]
        created = [
            upload_via_api(server.app, jpeg_bytes(pixels), name, formats="webp,jpeg")
            for name, pixels in photos
        ]
        return server, created[::-1]

    return seed


def path_of(url: str) -> str:
    # Seeded through the test client (host "localhost"): only paths match the page's URLs.
    return urlsplit(url).path


def shown_path(page: Page) -> str:
    return path_of(page.get_by_test_id("lightbox-image").evaluate("img => img.currentSrc"))


def test_enter_on_a_card_opens_its_full_size_image_in_a_modal_and_esc_returns_focus(
    page: Page, console: ConsoleLog, seeded_gallery: Seeder
) -> None:
    server, images = seeded_gallery()
    page.goto(server.url)

    page.get_by_test_id("card-link").nth(1).focus()
    page.keyboard.press("Enter")

    lightbox = page.get_by_role("dialog", name=images[1]["name"])
    expect(lightbox).to_be_visible()
    expect(lightbox).to_have_attribute("aria-modal", "true")
    expect(page).to_have_url(f"{server.url}/#image={images[1]['id']}")
    page.wait_for_function(LIGHTBOX_IMAGE_LOADED)
    # A full-size variant, not the gallery thumbnail.
    image = page.get_by_test_id("lightbox-image")
    assert shown_path(page) in {path_of(v["url"]) for v in images[1]["variants"]}
    assert image.evaluate("img => img.naturalWidth") == images[1]["width"]
    assert image.get_attribute("width") == str(images[1]["width"])
    assert image.get_attribute("height") == str(images[1]["height"])

    page.keyboard.press("Escape")
    expect(lightbox).to_be_hidden()
    expect(page).to_have_url(f"{server.url}/")
    expect(page.locator(":focus")).to_have_attribute("data-testid", "card-link")
    expect(page.locator(":focus")).to_have_text(images[1]["name"])
    assert console.csp_violations() == []
    assert console.page_errors == []


def test_a_click_on_a_card_opens_the_lightbox_in_place(page: Page, seeded_gallery: Seeder) -> None:
    server, images = seeded_gallery()
    page.goto(server.url)

    page.get_by_test_id("gallery-card").first.click()

    expect(page.get_by_role("dialog", name=images[0]["name"])).to_be_visible()
    expect(page).to_have_url(f"{server.url}/#image={images[0]['id']}")
    page.get_by_test_id("lightbox-close").click()
    expect(page.get_by_test_id("lightbox")).to_be_hidden()
    assert page.evaluate(ACTIVE_TESTID) == "card-link"


def test_the_caption_is_the_alt_text_of_the_thumbnail_and_the_lightbox_image(
    page: Page,
    make_app: AppFactory,
    serve: Callable[[Flask], LiveServer],
    gemini_server: GeminiServer,
) -> None:
    server = serve(
        make_app(captioner="gemini", gemini_api_key="k", caption_endpoint=gemini_server.endpoint)
    )
    upload_via_api(server.app, jpeg_bytes(samples.chelsea()), "IMG_0001.jpg", formats="webp")
    page.goto(server.url)

    caption = "A tabby cat asleep on a red sofa."
    expect(page.get_by_test_id("thumb")).to_have_attribute("alt", caption)
    page.get_by_test_id("gallery-card").first.click()
    expect(page.get_by_test_id("lightbox-image")).to_have_attribute("alt", caption)


def test_arrow_keys_step_through_the_page_and_stop_at_its_ends(
    page: Page, seeded_gallery: Seeder
) -> None:
    server, images = seeded_gallery()
    page.goto(server.url)
    page.get_by_test_id("gallery-card").first.click()
    title = page.get_by_test_id("lightbox-title")
    expect(title).to_have_text(images[0]["name"])

    page.keyboard.press("ArrowRight")
    expect(title).to_have_text(images[1]["name"])
    expect(page).to_have_url(f"{server.url}/#image={images[1]['id']}")
    expect(page.get_by_test_id("lightbox-position")).to_have_text("2 of 3")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")  # already the last: stays
    expect(title).to_have_text(images[2]["name"])
    expect(page.get_by_test_id("lightbox-next")).to_be_disabled()
    page.keyboard.press("ArrowLeft")
    expect(title).to_have_text(images[1]["name"])
    page.wait_for_function(LIGHTBOX_IMAGE_LOADED)
    assert shown_path(page) in {path_of(v["url"]) for v in images[1]["variants"]}


def test_a_swipe_shows_the_next_and_the_previous_image(
    browser: Browser, seeded_gallery: Seeder
) -> None:
    server, images = seeded_gallery()
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True
    )
    try:
        page = context.new_page()
        page.goto(server.url)
        page.get_by_test_id("card-link").first.tap()
        title = page.get_by_test_id("lightbox-title")
        expect(title).to_have_text(images[0]["name"])
        touch = context.new_cdp_session(page)

        def swipe(from_x: int, to_x: int) -> None:
            y = 400
            touch.send(
                "Input.dispatchTouchEvent",
                {"type": "touchStart", "touchPoints": [{"x": from_x, "y": y}]},
            )
            for x in range(from_x, to_x, 20 if to_x > from_x else -20):
                touch.send(
                    "Input.dispatchTouchEvent",
                    {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]},
                )
            touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})

        swipe(320, 80)  # right to left: the next image
        expect(title).to_have_text(images[1]["name"])
        swipe(80, 320)  # left to right: back
        expect(title).to_have_text(images[0]["name"])
    finally:
        context.close()


def test_i_toggles_the_info_panel_with_name_size_labels_and_the_detail_link(
    page: Page, seeded_gallery: Seeder
) -> None:
    server, images = seeded_gallery()
    page.goto(server.url)
    page.get_by_test_id("gallery-card").nth(2).click()
    info = page.get_by_test_id("lightbox-info")
    expect(info).to_be_hidden()

    page.keyboard.press("i")

    expect(info).to_be_visible()
    expect(page.get_by_test_id("lightbox-info-toggle")).to_have_attribute("aria-expanded", "true")
    expect(page.get_by_test_id("info-name")).to_have_text(images[2]["name"])
    expect(page.get_by_test_id("info-dimensions")).to_have_text(
        f"{images[2]['width']} × {images[2]['height']} px"
    )
    expect(page.get_by_test_id("info-bytes")).to_contain_text("KiB")
    expect(page.get_by_test_id("info-labels")).to_have_text("tabby cat")
    page.get_by_test_id("lightbox-details").click()
    expect(page).to_have_url(f"{server.url}/images/{images[2]['id']}")
    page.go_back()
    # The URL still names the image: back on the gallery, the lightbox opens again.
    expect(page.get_by_test_id("lightbox")).to_be_visible()
    page.keyboard.press("i")
    page.keyboard.press("i")
    expect(page.get_by_test_id("lightbox-info")).to_be_hidden()


def test_the_url_deep_links_to_the_open_image_and_a_reload_opens_it(
    page: Page, console: ConsoleLog, seeded_gallery: Seeder
) -> None:
    server, images = seeded_gallery()
    page.goto(f"{server.url}/#image={images[2]['id']}")
    expect(page.get_by_role("dialog", name=images[2]["name"])).to_be_visible()

    page.keyboard.press("ArrowLeft")
    expect(page).to_have_url(f"{server.url}/#image={images[1]['id']}")
    page.reload()

    expect(page.get_by_role("dialog", name=images[1]["name"])).to_be_visible()
    page.keyboard.press("Escape")
    # Closing a lightbox the page opened by itself leaves focus on that image's card (polled:
    # focus moves once the closing dialog has handed it back, a moment after the key).
    expect(page.locator(":focus")).to_have_text(images[1]["name"])
    assert console.page_errors == []


def test_the_neighbours_full_size_images_are_preloaded(page: Page, seeded_gallery: Seeder) -> None:
    server, images = seeded_gallery()
    fetched: list[str] = []

    def seen(request: Request) -> None:
        fetched.append(path_of(request.url))

    page.on("request", seen)
    page.goto(server.url)
    page.get_by_test_id("gallery-card").nth(1).click()
    page.wait_for_function(LIGHTBOX_IMAGE_LOADED)

    for neighbour in (images[0], images[2]):
        variants = {path_of(v["url"]) for v in neighbour["variants"]}
        page.wait_for_function(
            "(paths) => performance.getEntriesByType('resource')"
            ".some((e) => paths.includes(new URL(e.name).pathname))",
            arg=sorted(variants),
        )
        assert variants & set(fetched)


def test_focus_stays_inside_the_open_lightbox(page: Page, seeded_gallery: Seeder) -> None:
    server, _ = seeded_gallery()
    page.goto(server.url)
    page.get_by_test_id("gallery-card").nth(1).click()
    inside = "() => document.getElementById('lightbox').contains(document.activeElement)"

    reached = set()
    for _ in range(8):
        page.keyboard.press("Tab")
        assert page.evaluate(inside)
        reached.add(page.evaluate(ACTIVE_TESTID))
    for _ in range(8):
        page.keyboard.press("Shift+Tab")
        assert page.evaluate(inside)
    assert {"lightbox-close", "lightbox-prev", "lightbox-next", "lightbox-info-toggle"} <= reached


def test_phones_get_a_two_column_grid(browser: Browser, seeded_gallery: Seeder) -> None:
    server, _ = seeded_gallery()
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        page.goto(server.url)
        cards = page.get_by_test_id("gallery-card")
        expect(cards).to_have_count(3)
        first, second, third = (cards.nth(i).bounding_box() for i in range(3))
        assert first is not None
        assert second is not None
        assert third is not None
        assert first["y"] == second["y"]  # side by side
        assert second["x"] > first["x"] + first["width"] - 1
        assert third["y"] > first["y"]  # the third starts the next row
        assert first["width"] < 390 / 2
    finally:
        context.close()


def test_every_image_on_the_pages_has_width_and_height(page: Page, seeded_gallery: Seeder) -> None:
    server, images = seeded_gallery()
    without = """() => [...document.images]
      .filter((img) => !img.getAttribute('width') || !img.getAttribute('height'))
      .map((img) => img.outerHTML)"""
    for path in ("/", f"/images/{images[0]['id']}", "/upload", f"/#image={images[0]['id']}"):
        page.goto(f"{server.url}{path}")
        assert page.evaluate(without) == [], path
    page.goto(f"{server.url}/upload")
    page.get_by_test_id("file-input").set_input_files(
        {"name": "a.jpg", "mimeType": "image/jpeg", "buffer": jpeg_bytes(samples.coffee())}
    )
    expect(page.get_by_test_id("upload-item")).to_have_count(1)
    assert page.evaluate(without) == []


def test_the_gallery_loads_without_any_layout_shift(page: Page, seeded_gallery: Seeder) -> None:
    server, _ = seeded_gallery()

    # Slow every thumbnail down so each one arrives after the first layout (the worst case).
    def late(route: Route) -> None:
        time.sleep(0.15)
        route.continue_()

    page.route("**/media/**", late)
    page.add_init_script(CLS_OBSERVER)

    page.goto(server.url)
    page.wait_for_function(ALL_THUMBNAILS_LOADED, arg=3)
    page.wait_for_timeout(300)  # let the observer deliver the last entries

    assert page.evaluate("window.__cls") == 0


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_auto_follows_the_systems_colour_scheme(
    browser: Browser, seeded_gallery: Seeder, scheme: str
) -> None:
    server, _ = seeded_gallery()
    context = browser.new_context(color_scheme=scheme)  # type: ignore[arg-type]
    try:
        page = context.new_page()
        page.goto(server.url)
        expect(page.locator("html")).to_have_attribute("data-bs-theme", scheme)
        expect(page.get_by_test_id("theme-select")).to_have_value("auto")
        other = "light" if scheme == "dark" else "dark"
        page.emulate_media(color_scheme=other)  # type: ignore[arg-type]
        expect(page.locator("html")).to_have_attribute("data-bs-theme", other)
    finally:
        context.close()


def test_the_theme_toggle_persists_and_applies_before_first_paint(
    browser: Browser, seeded_gallery: Seeder
) -> None:
    server, _ = seeded_gallery()
    context = browser.new_context(color_scheme="light")
    try:
        page = context.new_page()
        page.goto(server.url)
        background = "() => getComputedStyle(document.body).backgroundColor"
        light_background = page.evaluate(background)

        page.get_by_test_id("theme-select").select_option("dark")
        expect(page.locator("html")).to_have_attribute("data-bs-theme", "dark")
        assert page.evaluate(background) != light_background

        # On the next page the theme is on <html> before any deferred script has run.
        page.add_init_script(
            "document.addEventListener('readystatechange', () => {"
            " if (document.readyState === 'interactive' && !window.__firstTheme)"
            " window.__firstTheme = document.documentElement.getAttribute('data-bs-theme'); });"
        )
        page.goto(f"{server.url}/upload")
        assert page.evaluate("window.__firstTheme") == "dark"
        expect(page.get_by_test_id("theme-select")).to_have_value("dark")

        page.get_by_test_id("theme-select").select_option("auto")
        page.reload()
        expect(page.locator("html")).to_have_attribute("data-bs-theme", "light")
        page.get_by_test_id("theme-select").select_option("light")
        page.emulate_media(color_scheme="dark")
        expect(page.locator("html")).to_have_attribute("data-bs-theme", "light")
    finally:
        context.close()


# -- placeholders, srcset and "copy HTML" ---------------------------------------------------

PLACEHOLDER_OF = "(img) => img.style.backgroundImage"
JS_THUMBHASH_PIXELS = """(hash) => {
  const image = window.thumbhash.toRGBA(window.thumbhash.fromBase64(hash));
  return [image.width, image.height, Array.from(image.rgba)];
}"""


def test_each_thumbnail_shows_its_placeholder_until_its_pixels_arrive(
    page: Page, console: ConsoleLog, seeded_gallery: Seeder
) -> None:
    server, images = seeded_gallery()
    held: list[Route] = []

    def hold(route: Route) -> None:  # no thumbnail arrives until the test lets it
        held.append(route)

    page.route("**/media/**", hold)

    page.goto(server.url)
    thumbs = page.get_by_test_id("thumb")
    expect(thumbs).to_have_count(3)
    page.wait_for_function("() => window.thumbhash !== undefined")
    for index, image in enumerate(images):
        thumb = thumbs.nth(index)
        assert thumb.get_attribute("data-thumbhash") == image["thumbhash"]
        assert thumb.evaluate(PLACEHOLDER_OF).startswith('url("data:image/png;base64,')
        # The browser's decoder paints exactly what the server's computes.
        width, height, rgba = placeholder.decode(base64.b64decode(image["thumbhash"]))
        assert page.evaluate(JS_THUMBHASH_PIXELS, image["thumbhash"]) == [
            width,
            height,
            rgba.flatten().tolist(),
        ]
    # The painted placeholder is the picture, not a flat colour: its corners differ.
    corners = thumbs.first.evaluate(
        """(img) => new Promise((resolve) => {
          const source = new Image();
          source.onload = () => {
            const canvas = document.createElement('canvas');
            canvas.width = source.width; canvas.height = source.height;
            const context = canvas.getContext('2d');
            context.drawImage(source, 0, 0);
            const at = (x, y) => Array.from(context.getImageData(x, y, 1, 1).data);
            resolve([at(0, 0), at(source.width - 1, source.height - 1)]);
          };
          source.src = img.style.backgroundImage.slice(5, -2);
        })"""
    )
    assert corners[0] != corners[1]

    for route in held:
        route.continue_()
    page.unroute("**/media/**")
    page.wait_for_function(ALL_THUMBNAILS_LOADED, arg=3)
    # Once loaded, the placeholder goes: it would show through a transparent image.
    for index in range(3):
        expect(thumbs.nth(index)).not_to_have_class(re.compile("has-placeholder"))
        assert thumbs.nth(index).evaluate(PLACEHOLDER_OF) == ""
    assert console.csp_violations() == []
    assert console.page_errors == []


def test_a_sharp_screen_gets_a_full_size_variant_from_the_srcset(
    browser: Browser, seeded_gallery: Seeder
) -> None:
    server, images = seeded_gallery()
    astronaut = images[0]  # 512 px wide: more than its 480 px thumbnail
    full = {path_of(v["url"]) for v in astronaut["variants"]}
    for scale, expected in ((1, {path_of(astronaut["thumbnail"]["url"])}), (3, full)):
        context = browser.new_context(
            viewport={"width": 1280, "height": 800}, device_scale_factor=scale
        )
        try:
            page = context.new_page()
            page.goto(server.url)
            page.wait_for_function(ALL_THUMBNAILS_LOADED, arg=3)
            thumb = page.get_by_test_id("thumb").first
            assert path_of(thumb.evaluate("img => img.currentSrc")) in expected, scale
            # Whatever the browser picked, the box is the one width and height reserved.
            assert thumb.get_attribute("width") == str(astronaut["thumbnail"]["width"])
        finally:
            context.close()


def test_copy_html_puts_a_picture_of_every_variant_on_the_clipboard(
    page: Page, console: ConsoleLog, seeded_gallery: Seeder
) -> None:
    server, images = seeded_gallery()
    image = images[1]  # coffee.jpg: WebP and JPEG, labelled "tabby cat"
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page.goto(f"{server.url}/images/{image['id']}")

    page.get_by_test_id("copy-html").click()

    expect(page.get_by_test_id("copy-html")).to_have_text("Copied!")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == page.get_by_test_id("picture-html").input_value()
    picture = page.evaluate(
        """(text) => {
          const doc = new DOMParser().parseFromString(text, 'text/html');
          const img = doc.querySelector('picture > img');
          return {
            sources: [...doc.querySelectorAll('picture > source')].map(
              (s) => [s.type, new URL(s.srcset).pathname]),
            img: [new URL(img.src).pathname, img.width, img.height, img.alt],
          };
        }""",
        copied,
    )
    by_format = {v["format"]: v for v in image["variants"]}
    assert picture == {
        "sources": [["image/webp", path_of(by_format["webp"]["url"])]],
        "img": [path_of(by_format["jpeg"]["url"]), image["width"], image["height"], "tabby cat"],
    }
    expect(page.locator("#copy-status")).to_have_text("HTML copied to the clipboard.")


def test_the_search_box_finds_by_name_and_the_detail_page_shows_swatches(
    page: Page, console: ConsoleLog, seeded_gallery: Seeder
) -> None:
    server, records = seeded_gallery()
    page.goto(server.url)

    page.get_by_test_id("search-input").fill("Coffee")
    page.get_by_test_id("search-button").click()

    expect(page.get_by_test_id("active-search")).to_have_text("Coffee")
    expect(page.get_by_test_id("gallery-card")).to_have_count(1)
    coffee = next(r for r in records if r["name"] == "coffee.jpg")
    card = page.get_by_test_id("gallery-card").first
    expect(card).to_have_attribute("data-image-id", coffee["id"])

    page.get_by_test_id("search-input").fill("cat")  # every image is a "tabby cat"
    page.get_by_test_id("search-input").press("Enter")
    expect(page.get_by_test_id("gallery-card")).to_have_count(3)

    page.goto(f"{server.url}/images/{coffee['id']}")
    swatches = page.get_by_test_id("swatch")
    expect(swatches.first).to_be_visible()
    name = swatches.first.get_by_test_id("swatch-name").inner_text().strip()
    swatches.first.click()
    expect(page.get_by_test_id("active-search")).to_have_text(name)
    expect(page.locator(f'[data-image-id="{coffee["id"]}"]')).to_have_count(1)
    assert console.page_errors == []
    assert console.csp_violations() == []
