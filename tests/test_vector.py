"""SVG output (imaging/processing/vector.py): flat art traced into paths, photos refused, the
trace bounded in pixels and bytes, and nothing but paths ever written."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import vtracer
from PIL import Image, ImageDraw

from imaging.errors import TooDetailed
from imaging.processing import RenderSpec, Rendition, TraceLimits, vector
from tests import images
from tests.test_processing import BACKGROUND, MAX_SIDE, decoded

SVG = "{http://www.w3.org/2000/svg}"


def traced(
    data: bytes, spec: RenderSpec | None = None, tracing: TraceLimits | None = None
) -> Rendition:
    spec = spec or RenderSpec("svg")
    return vector.render_svg(
        decoded(data, spec),
        spec,
        max_side=MAX_SIDE,
        background=BACKGROUND,
        tracing=tracing or TraceLimits(),
    )


def parsed(rendition: Rendition) -> ET.Element:
    return ET.fromstring(rendition.data)  # noqa: S314 (our own output)


def fills(rendition: Rendition) -> set[tuple[int, int, int]]:
    return {
        (int(f[1:3], 16), int(f[3:5], 16), int(f[5:7], 16))
        for f in (p.get("fill", "") for p in parsed(rendition))
    }


def near(
    colour: tuple[int, int, int], seen: set[tuple[int, int, int]], tolerance: int = 24
) -> bool:
    return any(all(abs(a - b) <= tolerance for a, b in zip(colour, c, strict=True)) for c in seen)


def test_a_logo_traces_into_coloured_paths_of_the_size_asked_for() -> None:
    out = traced(images.encode(images.logo(400, 300), "PNG"), RenderSpec("svg", width=200))
    assert (out.format, out.mime, out.ext) == ("svg", "image/svg+xml", "svg")
    assert (out.width, out.height, out.frames) == (200, 150, 1)
    root = parsed(out)
    assert root.tag == f"{SVG}svg"
    assert (root.get("width"), root.get("height"), root.get("viewBox")) == (
        "200",
        "150",
        "0 0 200 150",
    )
    assert len(root) >= 3
    assert {child.tag for child in root} == {f"{SVG}path"}
    seen = fills(out)
    assert near((220, 30, 40), seen)
    assert near((20, 60, 200), seen)
    assert near((255, 255, 255), seen)
    assert len(out.data) < 20_000  # a few shapes are a few paths, not a bitmap in disguise


def test_a_traced_svg_holds_no_script_no_handler_and_no_reference() -> None:
    text = traced(images.encode(images.logo(), "PNG")).data.decode()
    assert "<script" not in text.lower()
    assert not re.search(r"\son\w+\s*=", text, re.IGNORECASE)
    assert "href" not in text
    assert "url(" not in text
    assert "<style" not in text
    assert not text.startswith("<?xml")
    assert "<!--" not in text


@pytest.mark.parametrize(
    "picture",
    [
        pytest.param(lambda: images.skimage_photo("astronaut"), id="astronaut"),
        pytest.param(lambda: images.skimage_photo("coffee"), id="coffee"),
        pytest.param(lambda: images.skimage_photo("camera").convert("RGB"), id="grey camera"),
        pytest.param(lambda: images.noise(300, 200), id="noise"),
        pytest.param(
            lambda: images.portrait().quantize(8, method=Image.Quantize.MEDIANCUT).convert("RGB"),
            id="posterised",
        ),
    ],
)
def test_a_photo_is_refused_before_any_tracing(
    picture: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_trace(*args: object, **kwargs: object) -> str:
        raise AssertionError("a photo reached the tracer")

    monkeypatch.setattr(vtracer, "convert_raw_image_to_svg", must_not_trace)
    with pytest.raises(TooDetailed) as refused:
        traced(images.encode(picture(), "PNG"))
    assert refused.value.status == 422
    assert refused.value.code == "too_detailed"
    assert refused.value.public_message == (
        "This picture is too detailed to trace as SVG; ask for png or webp."
    )


@pytest.mark.parametrize(
    ("picture", "flat"),
    [
        (lambda: images.logo(), True),
        (lambda: images.screenshot(), True),
        (lambda: images.bands(), True),
        (lambda: images.skimage_photo("astronaut"), False),
        (lambda: images.skimage_photo("chelsea"), False),
        (lambda: images.skimage_photo("camera").convert("RGB"), False),
    ],
)
def test_the_pre_check_tells_flat_art_from_photos_with_room_on_both_sides(
    picture: Any, flat: bool
) -> None:
    busy = vector.busy_share(picture().convert("RGBA"))
    if flat:
        assert busy < vector.MAX_BUSY / 2
    else:
        assert busy > vector.MAX_BUSY * 1.4


def test_a_trace_larger_than_the_byte_cap_is_refused() -> None:
    data = images.encode(images.logo(), "PNG")
    assert len(traced(data).data) > 600
    with pytest.raises(TooDetailed, match="too detailed to trace"):
        traced(data, tracing=TraceLimits(max_bytes=600))


def test_the_tracer_reads_a_copy_within_the_trace_side_and_the_svg_keeps_the_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[int, int]] = []
    real = vtracer.convert_raw_image_to_svg

    def spy(data: bytes, **kwargs: object) -> str:
        seen.append(images.open_image(data).size)
        result: str = real(data, **kwargs)
        return result

    monkeypatch.setattr(vtracer, "convert_raw_image_to_svg", spy)
    out = traced(images.encode(images.logo(1600, 1200), "PNG"), tracing=TraceLimits(max_side=400))
    assert seen == [(400, 300)]
    root = parsed(out)
    assert (out.width, out.height) == (1600, 1200)
    assert (root.get("width"), root.get("height"), root.get("viewBox")) == (
        "1600",
        "1200",
        "0 0 400 300",
    )


def test_a_cover_crop_is_traced_at_the_crop_size() -> None:
    out = traced(
        images.encode(images.logo(400, 300), "PNG"),
        RenderSpec("svg", width=100, height=100, fit="cover"),
    )
    assert (out.width, out.height) == (100, 100)
    assert parsed(out).get("viewBox") == "0 0 100 100"


def test_transparent_areas_stay_transparent() -> None:
    im = Image.new("RGBA", (120, 90), (0, 0, 0, 0))
    ImageDraw.Draw(im).ellipse((20, 10, 100, 80), fill=(255, 0, 0, 255))
    out = traced(images.encode(im, "PNG"))
    assert fills(out) == {(255, 0, 0)}  # no background path: the rest shows through


def test_an_animation_keeps_its_first_frame_and_says_so() -> None:
    out = traced(images.animated_gif(frames=3))
    assert out.frames == 1
    assert out.warning == "SVG cannot hold an animation: only the first of 3 frames was kept."


@pytest.mark.parametrize(
    "inside",
    [
        "<script>alert(1)</script>",
        '<path d="M0 0 Z" fill="#FF0000" onload="alert(1)"/>',
        '<path d="M0 0 Z" fill="url(https://evil.example/x)"/>',
        '<path d="M0 0 Z" fill="#FF0000" style="fill:red"/>',
        '<path d="M0 0 Z" fill="#FF0000" transform="translate(0,0) scale(9)"/>',
        '<path d="javascript:alert(1)" fill="#FF0000"/>',
        '<image href="https://evil.example/x.png"/>',
        '<a href="javascript:alert(1)"><path d="M0 0 Z" fill="#FF0000"/></a>',
        '<foreignObject><div xmlns="http://www.w3.org/1999/xhtml">hi</div></foreignObject>',
        '<path d="M0 0 Z" fill="#FF0000"><set attributeName="fill" to="red"/></path>',
        "some text",
    ],
)
def test_anything_but_plain_paths_from_the_tracer_is_refused(inside: str) -> None:
    hostile = f'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4">{inside}</svg>'
    with pytest.raises(TooDetailed, match="could not be traced"):
        vector.clean_svg(hostile, width=4, height=4, grid=(4, 4))


def test_an_svg_that_is_not_svg_is_refused() -> None:
    for text in ("<html><body/></html>", "not xml at all", '<svg xmlns="urn:x"/>'):
        with pytest.raises(TooDetailed, match="could not be traced"):
            vector.clean_svg(text, width=4, height=4, grid=(4, 4))
