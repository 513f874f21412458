"""The upload page's helpers in the real headless Chromium: paste, drop anywhere, the location
notice, the note when the text in a picture was not read, and "Copy as curl" (run for real
against the live server)."""

from __future__ import annotations

import io
import json
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask, request
from PIL import Image
from playwright.sync_api import FilePayload, Page, expect
from skimage import data as samples

from imaging.labeling import Label, LabelResult
from imaging.processing import LabelImage
from tests import images
from tests.browser import ConsoleLog
from tests.conftest import AppFactory, LiveServer
from tests.test_browser import UPLOAD_TIMEOUT_MS, jpeg_bytes, record_posts
from tests.test_browser_security import upload_in_page, visit

pytestmark = pytest.mark.browser

LOCATION_NOTICE = "public copies will not contain its location"
GPS_IFD = 0x8825


def jpeg_with_position(pixels: np.ndarray[Any, Any]) -> bytes:
    """A JPEG whose EXIF GPS IFD holds a latitude and a longitude, like a phone photo's."""
    exif = Image.Exif()
    exif[GPS_IFD] = {1: "N", 2: (52.0, 22.0, 30.0), 3: "E", 4: (4.0, 53.0, 40.0)}
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90, exif=exif)
    return buf.getvalue()


def file_payload(name: str, data: bytes, mime: str = "image/jpeg") -> FilePayload:
    return {"name": name, "mimeType": mime, "buffer": data}


def page_with_files(page: Page, files: dict[str, bytes], event: str, target: str) -> None:
    """Dispatch a drop or paste event carrying ``files`` at the element matching ``target``."""
    page.evaluate(
        """([files, event, target]) => {
          const transfer = new DataTransfer();
          for (const [name, bytes] of Object.entries(files)) {
            transfer.items.add(new File([new Uint8Array(bytes)], name, { type: 'image/jpeg' }));
          }
          const element = document.querySelector(target);
          const init = { bubbles: true, cancelable: true };
          const fired = event === 'paste'
            ? new ClipboardEvent('paste', { ...init, clipboardData: transfer })
            : new DragEvent(event, { ...init, dataTransfer: transfer });
          element.dispatchEvent(fired);
        }""",
        [{name: list(data) for name, data in files.items()}, event, target],
    )


def test_pasting_an_image_adds_it_to_the_queue(
    page: Page, console: ConsoleLog, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    server = serve(make_app())
    page.goto(f"{server.url}/upload")

    page_with_files(page, {"screenshot.jpg": jpeg_bytes(samples.coffee())}, "paste", "body")

    item = page.get_by_test_id("upload-item")
    expect(item).to_have_count(1)
    expect(item).to_have_attribute("data-state", "queued")
    expect(item.get_by_test_id("upload-name")).to_have_text("screenshot.jpg")
    assert console.page_errors == []


def test_pasting_text_into_a_field_queues_nothing(
    page: Page, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    server = serve(make_app())
    page.goto(f"{server.url}/upload")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page.evaluate("navigator.clipboard.writeText('640')")

    page.locator("#width").focus()
    page.keyboard.press("Control+V")

    expect(page.locator("#width")).to_have_value("640")
    expect(page.get_by_test_id("upload-item")).to_have_count(0)


def test_files_dropped_anywhere_on_the_page_join_the_queue(
    page: Page, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    server = serve(make_app())
    page.goto(f"{server.url}/upload")
    photo = jpeg_bytes(samples.coffee())

    page_with_files(page, {"heading.jpg": photo}, "dragover", "h1")
    page_with_files(page, {"heading.jpg": photo}, "drop", "h1")
    page_with_files(page, {"footer.jpg": photo}, "drop", "footer")

    names = page.get_by_test_id("upload-name")
    expect(names).to_have_text(["heading.jpg", "footer.jpg"])
    expect(page).to_have_url(f"{server.url}/upload")


def test_a_photo_with_a_gps_position_gets_the_location_notice_and_nothing_is_sent(
    page: Page, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    server = serve(make_app())
    posts = record_posts(page)
    page.goto(f"{server.url}/upload")

    page.get_by_test_id("file-input").set_input_files(
        [
            file_payload("phone.jpg", jpeg_with_position(samples.coffee())),
            file_payload("plain.jpg", jpeg_bytes(samples.coffee())),
        ]
    )

    items = page.get_by_test_id("upload-item")
    expect(items).to_have_count(2)
    phone = items.filter(has_text="phone.jpg")
    expect(phone.get_by_test_id("location-notice")).to_be_visible()
    expect(phone.get_by_test_id("location-notice")).to_contain_text(LOCATION_NOTICE)
    plain = items.filter(has_text="plain.jpg")
    page.wait_for_timeout(300)  # give its (negative) answer the same time
    expect(plain.get_by_test_id("location-notice")).to_be_hidden()
    assert posts == []


def test_the_notice_tells_the_truth_the_public_copy_has_no_position(
    page: Page, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    server = serve(make_app())
    page.goto(f"{server.url}/upload")
    page.get_by_test_id("file-input").set_input_files(
        file_payload("phone.jpg", jpeg_with_position(samples.coffee()))
    )
    page.get_by_label("JPEG").check()
    page.get_by_test_id("upload-button").click()

    item = page.get_by_test_id("upload-item")
    expect(item.get_by_test_id("progress")).to_have_attribute(
        "data-state", "done", timeout=UPLOAD_TIMEOUT_MS
    )
    url = item.get_by_test_id("result-url").filter(has_text=".jpg").first.inner_text()
    copy = Image.open(io.BytesIO(page.request.get(url).body()))
    assert copy.getexif().get_ifd(GPS_IFD) == {}


def curl_command(page: Page) -> str:
    page.get_by_test_id("curl-button").click()
    command = page.get_by_test_id("curl-command")
    expect(command).to_be_visible()
    return command.input_value()


def args_of(command: str) -> list[str]:
    return shlex.split(command)


def run_curl(command: str, path: Path, token: str | None = None) -> dict[str, Any]:
    args = shlex.split(command.replace("your-image.jpg", str(path)))
    if token is not None:
        args = [a.replace("<your upload token>", token) for a in args]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    body: dict[str, Any] = json.loads(done.stdout)
    return body


def shape(record: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(v["format"], v["width"], v["height"]) for v in record["variants"]]


def choose_options(page: Page) -> None:
    page.get_by_label("JPEG").check()
    page.get_by_label("PNG").check()
    page.locator("#width").fill("120")
    page.locator("#height").fill("90")
    page.locator("#fit").select_option("cover")
    page.locator("#quality").fill("70")
    page.locator("#focus").fill("0.3,0.5")


def test_copy_as_curl_reproduces_the_pages_upload_with_the_token_placeholder(
    page: Page, make_app: AppFactory, serve: Callable[[Flask], LiveServer], tmp_path: Path
) -> None:
    server = serve(make_app(upload_tokens=("s3cret-token",)))
    sent: list[dict[str, str]] = []

    @server.app.before_request
    def keep_form() -> None:
        if request.method == "POST" and request.path == "/upload":
            sent.append(dict(request.form))

    page.goto(f"{server.url}/unlock")
    page.get_by_label("Token").fill("s3cret-token")
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(f"{server.url}/upload")
    choose_options(page)
    page.get_by_test_id("file-input").set_input_files(
        file_payload("cat.jpg", jpeg_bytes(samples.chelsea()))
    )
    page.get_by_test_id("upload-button").click()
    page_result = page.get_by_test_id("upload-item")
    expect(page_result.get_by_test_id("progress")).to_have_attribute(
        "data-state", "done", timeout=UPLOAD_TIMEOUT_MS
    )
    detail = page_result.get_by_test_id("upload-name").locator("a").get_attribute("href")
    assert detail is not None
    from_page = server.app.test_client().get(f"/api/images/{detail.rsplit('/', 1)[1]}").get_json()

    command = curl_command(page)
    assert "-H 'Authorization: Bearer <your upload token>'" in command
    assert f"'{server.url}/api/images'" in command
    # Another photo of the same size (the same bytes would come back as a duplicate).
    other = tmp_path / "mirrored.jpg"
    other.write_bytes(jpeg_bytes(samples.chelsea()[:, ::-1].copy()))
    from_curl = run_curl(command, other, token="s3cret-token")

    assert from_curl["duplicate"] is False
    assert shape(from_curl) == shape(from_page)
    # WebP is checked by default; JPEG and PNG were added.
    assert shape(from_page) == [("webp", 120, 90), ("jpeg", 120, 90), ("png", 120, 90)]
    # Every option the command sends is a field the page's own upload sent with that value.
    fields = [
        a for prev, a in zip(args_of(command), args_of(command)[1:], strict=False) if prev == "-F"
    ]
    options = [f.split("=", 1) for f in fields if not f.startswith("image=")]
    assert ["quality", "70"] in options
    assert ["fit", "cover"] in options
    assert ["focus", "0.3,0.5"] in options
    for record in (from_page, from_curl):  # the focal point reached the crop both ways
        assert (record["receipt"]["crop"], record["receipt"]["focus"]) == ("focus", [0.3, 0.5])
    assert {name: value for name, value in options} == {
        name: value for name, value in sent[0].items() if name != "csrf_token"
    }


def test_copy_as_curl_has_no_token_header_when_the_server_needs_none(
    page: Page, make_app: AppFactory, serve: Callable[[Flask], LiveServer], tmp_path: Path
) -> None:
    server = serve(make_app())
    page.goto(f"{server.url}/upload")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page.locator("#width").fill("64")

    command = curl_command(page)

    assert "Authorization" not in command
    assert page.evaluate("navigator.clipboard.readText()") == command
    photo = tmp_path / "coffee.jpg"
    photo.write_bytes(jpeg_bytes(samples.coffee()))
    record = run_curl(command, photo)
    assert shape(record) == [("webp", 64, 43)]


class BusyReader:
    """Labels the picture, but its text reader was busy (what a loaded server answers)."""

    name = "busy-reader"
    reads_text = True

    def label(self, image: LabelImage) -> LabelResult:
        return LabelResult(labels=(Label("screen", 0.9, self.name),), text_status="busy")

    def check(self) -> None:
        return None


def test_the_uploader_is_told_when_the_text_in_the_picture_was_not_read(
    page: Page,
    console: ConsoleLog,
    make_app: AppFactory,
    serve: Callable[[Flask], LiveServer],
) -> None:
    server = serve(make_app(labeler_impl=BusyReader()))

    detail_url = upload_in_page(page, server, "screen.png", images.png())

    expect(page.get_by_test_id("result-note")).to_contain_text(
        "The text in this picture was not read: the text reader was busy"
    )
    visit(page, detail_url)
    expect(page.get_by_test_id("text-not-read")).to_contain_text("A relabel run reads it later")
    assert console.csp_violations() == []
