"""The engine against PngSuite, the PNG reference corpus: every valid file converts, every
corrupted one is refused, and transparency survives.

The corpus lives beside the repository (``<clone>/../shared/corpus/pngsuite/png``), not in it.
A missing corpus FAILS these tests: a suite that silently skips proves nothing.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from PIL import Image

from imaging import processing
from imaging.errors import UnsupportedFormat
from imaging.processing import Limits, RenderSpec, Rendition

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


def _convert(data: bytes, *specs: RenderSpec) -> list[Rendition]:
    probed = processing.probe(data, LIMITS)
    decoded = processing.decode(data, probed, specs=specs, max_side=LIMITS.max_side)
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


@pytest.mark.parametrize("name", _files(corrupt=True))
def test_a_corrupted_png_is_refused(name: str) -> None:
    with pytest.raises(UnsupportedFormat) as caught:
        _convert(_read(name), RenderSpec("webp"))
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
