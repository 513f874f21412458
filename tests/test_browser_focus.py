"""The detail page's focal point in the real headless Chromium: a click on the picture re-crops
the cover variants (new links, the subject where clicked), the keyboard alone does it too, axe
finds nothing serious on the page, and no CSP violation."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from PIL import Image
from playwright.sync_api import Page, expect

from tests.browser import ConsoleLog
from tests.conftest import LiveServer
from tests.test_browser_a11y import axe_source, blocking_violations
from tests.test_refocus import BLUE, COVER, RED, striped
from tests.uploads import upload_ok

pytestmark = pytest.mark.browser
__all__ = ["axe_source"]  # the fixture, used by name

DELETE_KEYS = "cloud-image-app:delete-keys"


def seeded(page: Page, server: LiveServer, *, hold_key: bool = True) -> dict[str, Any]:
    """A cover-cropped upload whose detail page is open, this browser holding its delete key."""
    body: dict[str, Any] = upload_ok(server.app.test_client(), striped(), "striped.png", **COVER)
    page.goto(server.url)
    if hold_key:
        keys = json.dumps({body["id"]: body["delete_key"]})
        page.evaluate("([name, keys]) => localStorage.setItem(name, keys)", [DELETE_KEYS, keys])
    page.goto(f"{server.url}/images/{body['id']}")
    return body


def left_colour(client: FlaskClient, url: str) -> object:
    data = client.get("/" + url.split("//", 1)[1].split("/", 1)[1]).data
    return Image.open(io.BytesIO(data)).convert("RGB").getpixel((5, 150))


def current(server: LiveServer, image_id: str) -> dict[str, Any]:
    record: dict[str, Any] = server.app.test_client().get(f"/api/images/{image_id}").get_json()
    return record


def test_a_click_on_the_picture_re_crops_where_clicked(
    page: Page, console: ConsoleLog, live_server: LiveServer
) -> None:
    body = seeded(page, live_server)
    expect(page.get_by_test_id("focus-key")).to_be_hidden()  # the browser holds the key
    picture = page.get_by_test_id("focus-picker").locator("img")
    box = picture.bounding_box()
    assert box is not None
    picture.click(position={"x": box["width"] * 0.03, "y": box["height"] * 0.5})
    expect(page.get_by_test_id("focus-message")).to_contain_text("across")
    x, y = (float(page.get_by_test_id(f"focus-{axis}").input_value()) for axis in "xy")
    assert abs(x - 3) <= 0.5
    assert abs(y - 50) <= 0.5
    page.get_by_test_id("focus-submit").click()
    page.wait_for_url(f"**/images/{body['id']}#focus")
    expect(page.get_by_test_id("focus-x")).to_have_value(f"{x:g}", timeout=10_000)
    record = current(live_server, body["id"])
    assert record["receipt"]["crop"] == "focus"
    assert record["receipt"]["focus"] == [round(x / 100, 4), round(y / 100, 4)]
    assert {v["url"] for v in record["variants"]}.isdisjoint(v["url"] for v in body["variants"])
    client = live_server.app.test_client()
    assert all(left_colour(client, v["url"]) == BLUE for v in record["variants"])
    shown = page.get_by_test_id("variant-url").first.input_value()
    assert shown.endswith(record["variants"][0]["url"].split("/media/", 1)[1])  # the new links
    assert console.csp_violations() == []


def test_the_keyboard_alone_moves_the_point_and_re_crops(
    page: Page, live_server: LiveServer
) -> None:
    body = seeded(page, live_server)
    page.get_by_test_id("focus-picker").focus()
    for _ in range(10):  # from the centre, 5 % a press: 100 % across
        page.keyboard.press("ArrowRight")
    expect(page.get_by_test_id("focus-x")).to_have_value("100")
    expect(page.get_by_test_id("focus-message")).to_contain_text("100 % across")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/images/{body['id']}#focus")
    expect(page.get_by_test_id("focus-x")).to_have_value("100", timeout=10_000)
    record = current(live_server, body["id"])
    assert record["receipt"]["focus"] == [1.0, 0.5]
    data = (
        live_server.app.test_client()
        .get("/" + record["variants"][0]["url"].split("//", 1)[1].split("/", 1)[1])
        .data
    )
    picture = Image.open(io.BytesIO(data)).convert("RGB")
    assert picture.getpixel((picture.width - 5, 150)) == RED


def test_a_visitor_without_the_key_is_told_so_on_the_page(
    page: Page, live_server: LiveServer
) -> None:
    body = seeded(page, live_server, hold_key=False)
    expect(page.get_by_test_id("focus-key")).to_be_visible()
    page.get_by_test_id("focus-x").fill("10")
    page.get_by_test_id("focus-y").fill("50")
    page.get_by_test_id("focus-key").fill("not-the-key")
    page.get_by_test_id("focus-submit").click()
    expect(page.get_by_test_id("focus-message")).to_contain_text("delete key")
    assert current(live_server, body["id"])["variants"] == body["variants"]


def test_the_focal_point_page_has_no_serious_axe_violation(
    page: Page, live_server: LiveServer, axe_source: str
) -> None:
    seeded(page, live_server)
    page.get_by_test_id("focus-picker").locator("img").click()
    assert blocking_violations(page, axe_source) == []
