"""The engine against PngSuite, the PNG reference corpus: every valid file converts, every
corrupted one is refused, and transparency survives.

The corpus lives beside the repository (``<clone>/../shared/corpus/pngsuite/png``), not in it.
A missing corpus FAILS these tests: a suite that silently skips proves nothing.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from imaging import processing
from imaging.errors import UnsupportedFormat
from imaging.processing import Limits, RenderSpec, Rendition, decoding, header, resampler
from tests import images

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "pngsuite" / "png"
LIMITS = Limits(max_bytes=20 * 1024 * 1024, max_pixels=50_000_000, max_side=16383, max_frames=100)
EXPECTED_CORRUPT, EXPECTED_VALID = 14, 161
MISSING = "corpus-missing"


def _files(corrupt: bool) -> list[str]:
    names = sorted(p.name for p in CORPUS.glob("*.png") if p.name.startswith("x") == corrupt)
    return names or [MISSING]  # an empty parameter list would be skipped, not failed


def _read(name: str) -> bytes:
    assert name != MISSING, f"PngSuite is missing: expected it at {CORPUS}"
    return (CORPUS / name).read_bytes()


def _convert(data: bytes, *specs: RenderSpec, libvips: bool = False) -> list[Rendition]:
    probed = processing.probe(data, LIMITS)
    decoded = processing.decode(
        data, probed, specs=specs, max_side=LIMITS.max_side, libvips=libvips
    )
    return [
        processing.render(decoded, spec, max_side=LIMITS.max_side, background="#ffffff")
        for spec in specs
    ]


def _has_transparency(data: bytes) -> bool:
    """From the file itself: colour type 4 or 6 (an alpha channel) or a tRNS chunk."""
    colour_type = data[25]
    return colour_type in (4, 6) or _chunk_present(data, b"tRNS")


def _chunk_present(data: bytes, kind: bytes) -> bool:
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        if data[pos + 4 : pos + 8] == kind:
            return True
        pos += length + 12
    return False


def _alpha(rendition: Rendition) -> bytes | None:
    im = Image.open(io.BytesIO(rendition.data))
    im.load()
    return im.getchannel("A").tobytes() if "A" in im.getbands() else None


def test_the_corpus_is_all_there() -> None:
    assert len(_files(corrupt=True)) == EXPECTED_CORRUPT, CORPUS
    assert len(_files(corrupt=False)) == EXPECTED_VALID, CORPUS


@pytest.mark.parametrize("libvips", [False, True])
@pytest.mark.parametrize("name", _files(corrupt=True))
def test_a_corrupted_png_is_refused(name: str, libvips: bool) -> None:
    with pytest.raises(UnsupportedFormat) as caught:
        _convert(_read(name), RenderSpec("webp"), libvips=libvips)
    assert caught.value.status == 415


@pytest.mark.parametrize("name", _files(corrupt=False))
def test_a_valid_png_converts_to_webp_and_png_keeping_transparency(name: str) -> None:
    data = _read(name)
    webp, png = _convert(data, RenderSpec("webp"), RenderSpec("png"))
    probed = processing.probe(data, LIMITS)
    for out in (webp, png):
        assert (out.width, out.height) == (probed.width, probed.height)
    if _has_transparency(data):
        png_alpha = _alpha(png)
        assert png_alpha is not None, "PNG output lost the alpha channel"
        assert min(png_alpha) < 255, "PNG output lost the transparent pixels"
        assert _alpha(webp) == png_alpha, "WebP output's alpha differs from the PNG's"


def _decoded(data: bytes, *, libvips: bool) -> processing.Decoded:
    probed = processing.probe(data, LIMITS)
    return processing.decode(
        data, probed, specs=[RenderSpec("webp")], max_side=LIMITS.max_side, libvips=libvips
    )


@pytest.mark.parametrize("name", _files(corrupt=False))
def test_libvips_decodes_every_plain_png_as_pillow_does(name: str) -> None:
    """RESAMPLER=vips decodes a still 8-bit PNG with libvips (``resampler.png_pixels``) where
    it gives the bands Pillow would: the same pixels, to the byte, and the same colour step."""
    data = _read(name)
    by_vips, by_pillow = _decoded(data, libvips=True), _decoded(data, libvips=False)
    assert by_vips.receipt() == by_pillow.receipt()
    assert (by_vips.profile, by_vips.camera) == (by_pillow.profile, by_pillow.camera)
    for ours, theirs in zip(by_vips.frames, by_pillow.frames, strict=True):
        assert (ours.mode, ours.size) == (theirs.mode, theirs.size)
        assert ours.tobytes() == theirs.tobytes()


def test_a_png_with_chunks_after_its_pixels_stays_with_pillow() -> None:
    """Pillow reads a chunk after IDAT (text, EXIF) only when it decodes the pixels: such a
    PNG is not handed to libvips, so nothing Pillow would read is missed."""
    plain = _read("basn2c08.png")
    assert header.png_chunks_before_image(plain)
    body = b"tEXtComment\x00after the pixels"
    text = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    iend = plain.rindex(b"IEND") - 4
    late = plain[:iend] + text + plain[iend:]
    assert not header.png_chunks_before_image(late)
    assert not header.png_chunks_before_image(plain[:iend])  # no IEND
    by_vips, by_pillow = _decoded(late, libvips=True), _decoded(late, libvips=False)
    assert by_vips.frames[0].tobytes() == by_pillow.frames[0].tobytes()


def test_libvips_takes_the_plain_pngs_and_leaves_the_rest_to_pillow() -> None:
    taken = {
        name
        for name in _files(corrupt=False)
        if (im := Image.open(io.BytesIO(_read(name))))
        and resampler.png_pixels(_read(name), im.mode, im.size) is not None
    }
    # 8-bit truecolour with and without alpha, and 8-bit grey, interlaced or not...
    assert {"basn2c08.png", "basn6a08.png", "basn0g08.png", "basi2c08.png"} <= taken
    # ...but not 16-bit, palette, 1-bit grey, or a tRNS colour key (libvips adds an alpha band).
    assert not {"basn2c16.png", "basn3p08.png", "basn0g01.png", "tbrn2c08.png"} & taken


def test_a_png_over_libvips_bound_is_decoded_by_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past LIBVIPS_PNG_MAX_PIXELS libvips' copy beside Pillow's would raise the peak memory."""
    handed: list[tuple[int, int]] = []
    real = resampler.png_pixels

    def spy(data: bytes, mode: str, size: tuple[int, int]) -> Image.Image | None:
        handed.append(size)
        return real(data, mode, size)

    monkeypatch.setattr(resampler, "png_pixels", spy)
    _decoded(_read("basn2c08.png"), libvips=True)
    assert handed == [(32, 32)]
    monkeypatch.setattr(decoding, "LIBVIPS_PNG_MAX_PIXELS", 32 * 32 - 1)
    _decoded(_read("basn2c08.png"), libvips=True)
    assert handed == [(32, 32)]  # not handed again


def test_libvips_decoded_png_keeps_its_icc_profile_for_the_colour_step() -> None:
    """The profile comes from Pillow's open() (iCCP precedes IDAT): with the swapped-primaries
    profile, pure red is sRGB's green whichever decoder read the pixels."""
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (255, 0, 0)).save(
        buf, "PNG", icc_profile=images.swapped_primaries_profile()
    )
    data = buf.getvalue()
    assert header.png_chunks_before_image(data)
    assert resampler.png_pixels(data, "RGB", (40, 30)) is not None  # the libvips path
    by_vips, by_pillow = _decoded(data, libvips=True), _decoded(data, libvips=False)
    assert by_vips.profile == by_pillow.profile == "converted"
    red, green, blue = by_vips.frames[0].convert("RGB").getpixel((20, 15))  # type: ignore[misc]
    assert green > 200
    assert red < 60
    assert blue < 60
    assert by_vips.frames[0].tobytes() == by_pillow.frames[0].tobytes()
