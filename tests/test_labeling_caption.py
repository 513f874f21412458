"""Captions (CAPTIONER=gemini) through google-genai against a local Gemini stand-in."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from imaging.errors import LabelerUnavailable
from imaging.labeling.caption import (
    MAX_CAPTION,
    STAND_IN_KEY,
    GeminiCaptioner,
    clean_caption,
)
from imaging.processing import LabelImage
from tests import images
from tests.conftest import AppFactory
from tests.gemini_server import GeminiServer
from tests.uploads import upload_ok

SECRET_KEY = "real-key-never-sent-in-clear"


def captioner(server: GeminiServer, **kw: Any) -> GeminiCaptioner:
    options: dict[str, Any] = {
        "model": "gemini-2.5-flash",
        "api_key": SECRET_KEY,
        "endpoint": server.endpoint,
        "timeout": 2.0,
    }
    return GeminiCaptioner(**{**options, **kw})


def captioning_app(make_app: AppFactory, server: GeminiServer, **kw: Any) -> Flask:
    options: dict[str, Any] = {
        "captioner": "gemini",
        "gemini_api_key": SECRET_KEY,
        "caption_endpoint": server.endpoint,
        "caption_timeout": 2.0,
    }
    return make_app(**{**options, **kw})


def copied_html(page: str) -> str:
    """The detail page's "copy HTML" as the user copies it (the textarea's text)."""
    box = re.search(r'<textarea[^>]*data-testid="picture-html"[^>]*>(.*?)</textarea>', page, re.S)
    assert box
    return html.unescape(box.group(1))


def picture() -> LabelImage:
    return LabelImage.from_bytes(images.png(96, 64))


# -- the captioner ---------------------------------------------------------------------------
def test_the_caption_is_gemini_s_sentence(gemini_server: GeminiServer) -> None:
    assert captioner(gemini_server).caption(picture()) == "A tabby cat asleep on a red sofa."


def test_the_labelers_jpeg_and_the_prompt_go_to_the_model_without_the_real_key(
    gemini_server: GeminiServer,
) -> None:
    image = picture()
    captioner(gemini_server).caption(image)

    (sent,) = gemini_server.received
    assert sent.path.endswith("/models/gemini-2.5-flash:generateContent")
    assert sent.image() == image.jpeg()
    assert "one plain sentence" in sent.prompt()
    # A flash model thinks not at all: its thoughts would use up the few output tokens.
    thinking = sent.body["generationConfig"]["thinkingConfig"]
    assert thinking in ({"thinkingBudget": 0}, {"thinking_budget": 0})  # proto JSON takes both
    # A plain-http stand-in gets a placeholder: the real key is never sent in clear.
    assert sent.headers.get("x-goog-api-key") == STAND_IN_KEY
    assert SECRET_KEY not in str(sent.headers)


def test_without_an_api_key_it_asks_vertex_ai_in_the_project(
    gemini_server: GeminiServer,
) -> None:
    vertex = captioner(gemini_server, api_key="", project="my-project", location="europe-west4")
    assert vertex.caption(picture()) == "A tabby cat asleep on a red sofa."

    (sent,) = gemini_server.received
    assert "/projects/my-project/locations/europe-west4/" in sent.path
    auth = {name.lower(): value for name, value in sent.headers.items()}.get("authorization")
    assert auth == f"Bearer {STAND_IN_KEY}"  # a placeholder, never the service's own token


def test_a_caption_is_cleaned_of_control_characters_and_capped() -> None:
    assert clean_caption("A cat\x00 on\n a\u202e mat.\x1b[31m ") == "A cat on a mat.[31m"
    long = clean_caption("word " * 200)
    assert len(long) <= MAX_CAPTION
    assert long.endswith("word…")


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("error", {"error_status": 500}),
        ("error", {"error_status": 429}),
        ("garbage", {}),
        ("slow", {"slow_seconds": 5.0}),
    ],
)
def test_every_failure_is_labeler_unavailable(
    gemini_server: GeminiServer, mode: str, options: dict[str, Any]
) -> None:
    gemini_server.set_mode(mode, **options)
    started = time.monotonic()
    with pytest.raises(LabelerUnavailable, match="Gemini failed"):
        captioner(gemini_server, timeout=1.0).caption(picture())
    assert time.monotonic() - started < 4.0  # bounded by its timeout, not the server
    assert len(gemini_server.received) == 1  # never retried: the upload is waiting


def test_nothing_listening_is_labeler_unavailable(gemini_server: GeminiServer) -> None:
    endpoint = gemini_server.endpoint
    gemini_server.stop()
    with pytest.raises(LabelerUnavailable):
        GeminiCaptioner(model="m", api_key="k", endpoint=endpoint, timeout=1.0).caption(picture())


def test_a_captioner_needs_a_key_or_a_project() -> None:
    with pytest.raises(ValueError, match="API key or a Vertex AI project"):
        GeminiCaptioner(model="gemini-2.5-flash")


# -- in the app ------------------------------------------------------------------------------
def test_the_caption_is_stored_used_as_alt_text_and_searchable(
    make_app: AppFactory, gemini_server: GeminiServer
) -> None:
    client = captioning_app(make_app, gemini_server).test_client()
    record = upload_ok(client, images.jpeg(), "IMG_0001.jpg")

    caption = "A tabby cat asleep on a red sofa."
    assert record["caption"] == caption
    assert record["alt"] == caption
    assert client.get(f"/api/images/{record['id']}").get_json()["caption"] == caption
    gallery = client.get("/").get_data(as_text=True)
    assert f'alt="{caption}"' in gallery
    detail = client.get(f"/images/{record['id']}").get_data(as_text=True)
    assert f'alt="{caption}"' in detail  # the preview
    assert f'alt="{caption}"' in copied_html(detail)
    found = client.get("/api/images?q=asleep+sofa").get_json()
    assert [image["id"] for image in found["images"]] == [record["id"]]


def test_an_html_ish_caption_is_escaped_everywhere(
    make_app: AppFactory, gemini_server: GeminiServer
) -> None:
    gemini_server.set_mode("caption", caption='A "cat"><script>alert(1)</script><img src=x>')
    client = captioning_app(make_app, gemini_server).test_client()
    record = upload_ok(client, images.jpeg(), "cat.jpg")
    assert record["caption"] == 'A "cat"><script>alert(1)</script><img src=x>'

    for page in ("/", f"/images/{record['id']}"):
        body = client.get(page).get_data(as_text=True)
        assert "<script>alert(1)" not in body
        assert "<img src=x>" not in body
        assert '"cat">' not in body
    detail = client.get(f"/images/{record['id']}").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail  # the caption shown as text
    copied = copied_html(detail)
    assert "<script>" not in copied
    assert 'alt="A &quot;cat&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x&gt;"' in (
        copied
    )


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("error", {"error_status": 500}),
        ("garbage", {}),
        ("slow", {"slow_seconds": 5.0}),
        ("down", {}),
    ],
)
def test_when_the_captioner_fails_the_upload_still_succeeds_without_a_caption(
    make_app: AppFactory,
    gemini_server: GeminiServer,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    options: dict[str, Any],
) -> None:
    app = captioning_app(make_app, gemini_server, caption_timeout=1.0)
    if mode == "down":
        gemini_server.stop()
    else:
        gemini_server.set_mode(mode, **options)

    started = time.monotonic()
    record = upload_ok(app.test_client(), images.jpeg(), "photo.jpg")

    assert time.monotonic() - started < 4.0  # waited at most CAPTION_TIMEOUT, not the server
    assert record["caption"] == ""
    assert record["alt"] == "photo.jpg"
    assert any("captioner gemini" in r.getMessage() for r in caplog.records)


def test_captions_are_off_by_default_and_call_nobody(
    make_app: AppFactory, gemini_server: GeminiServer
) -> None:
    client = make_app(caption_endpoint=gemini_server.endpoint).test_client()
    record = upload_ok(client)

    assert record["caption"] == ""
    assert gemini_server.received == []


def test_relabel_captions_old_images_when_the_captioner_is_on(
    make_app: AppFactory, gemini_server: GeminiServer, tmp_path: Path
) -> None:
    before = make_app()
    record = upload_ok(before.test_client(), images.jpeg(), "old.jpg")
    assert record["caption"] == ""

    after = captioning_app(make_app, gemini_server)
    result = after.test_cli_runner().invoke(
        args=["relabel", "--cursor-file", str(tmp_path / "cursor")]
    )

    assert result.exit_code == 0, result.output
    client: FlaskClient = after.test_client()
    assert client.get(f"/api/images/{record['id']}").get_json()["caption"] == (
        "A tabby cat asleep on a red sofa."
    )
    assert [i["id"] for i in client.get("/api/images?q=tabby+sofa").get_json()["images"]] == [
        record["id"]
    ]
