"""libvips' lanczos3 resampler (``imaging.processing.resampler``) and its Pillow fallback."""

from __future__ import annotations

import importlib.abc
import io
import logging
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from imaging import processing
from imaging.processing import RenderSpec, resampler
from imaging.processing.geometry import fit_frame
from tests import images

#: The issue's bound on the main output: no more than 0.005 SSIM below Pillow's.
SSIM_SLACK = 0.005


@pytest.fixture
def no_pyvips(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """pyvips not importable (as on an install without it), tried afresh."""
    monkeypatch.setitem(sys.modules, "pyvips", None)
    resampler._pyvips.cache_clear()
    yield
    resampler._pyvips.cache_clear()


def ssim(a: Image.Image, b: Image.Image) -> float:
    return float(
        structural_similarity(
            np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")), channel_axis=2
        )
    )


def pillow(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def photo_pixels() -> Image.Image:
    with Image.open(io.BytesIO(images.photo("chelsea"))) as im:
        return im.convert("RGB").resize((903, 601), Image.Resampling.LANCZOS)


def test_libvips_loads_where_pyvips_binary_is_installed() -> None:
    assert resampler.available()


@pytest.mark.parametrize(
    "size",
    [(1, 1), (7, 5), (449, 300), (450, 1), (1, 600), (333, 222), (901, 599), (902, 601), (451, 2)],
)
def test_the_output_is_exactly_the_size_asked_for(size: tuple[int, int]) -> None:
    source = images.noise(903, 601)
    out = resampler.downscale(source, size)
    assert out is not None
    assert out.size == size
    assert out.mode == "RGB"


@pytest.mark.parametrize("width", list(range(20, 1000, 37)))
def test_every_ratio_target_size_gives_is_met_exactly(width: int) -> None:
    source = images.noise(1001, 667)
    size, _ = processing.target_size(1001, 667, RenderSpec("webp", width), 4096)
    assert fit_frame(source, size, None, None, "lanczos3").size == size


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_a_downscale_is_as_sharp_as_pillows(mode: str) -> None:
    source = photo_pixels().convert(mode)
    ours = fit_frame(source, (512, 341), None, None, "lanczos3")
    assert ours.mode == mode
    assert ssim(ours, pillow(source, (512, 341))) > 0.99


def test_transparent_pixels_colours_do_not_bleed_into_the_opaque_edge() -> None:
    # Opaque red on the left, fully transparent *green* on the right.
    source = Image.new("RGBA", (200, 100), (0, 255, 0, 0))
    source.paste((255, 0, 0, 255), (0, 0, 100, 100))
    out = resampler.downscale(source, (50, 25))
    assert out is not None
    pixel = out.getpixel((24, 12))  # the last column that is still mostly opaque
    assert isinstance(pixel, tuple)
    assert pixel[3] > 128
    assert pixel[1] < 10  # no green came in from under the transparency


@pytest.mark.parametrize("mode", ["P", "I;16", "CMYK", "1", "LA"])
def test_other_modes_stay_on_pillow(mode: str) -> None:
    source = Image.new(mode, (60, 40))
    assert resampler.downscale(source, (30, 20)) is None
    assert fit_frame(source, (30, 20), None, None, "lanczos3").mode == mode


def test_an_upscale_stays_on_pillow() -> None:
    source = images.noise(100, 80)
    assert resampler.downscale(source, (120, 96)) is None
    assert resampler.downscale(source, (120, 40)) is None  # one side enlarged is enough
    out = fit_frame(source, (120, 96), None, None, "lanczos3")
    assert out.tobytes() == pillow(source, (120, 96)).tobytes()


@pytest.mark.parametrize("resample", ["lanczos", "lanczos3"])
def test_a_short_step_up_is_bicubic_and_a_longer_one_lanczos(resample: str) -> None:
    source = images.noise(500, 375)
    short = fit_frame(source, (512, 384), None, None, resample)  # 2.4 %: a draft's shortfall
    assert short.tobytes() == source.resize((512, 384), Image.Resampling.BICUBIC).tobytes()
    longer = fit_frame(source, (540, 405), None, None, resample)  # 8 %
    assert longer.tobytes() == pillow(source, (540, 405)).tobytes()


def test_a_draft_decode_stepped_up_stays_within_the_quality_bound_of_lanczos() -> None:
    # 2000x1500 headed for 512 px decodes at 1/4 (500x375), then steps up 2.4 %.
    data = images.encode(photo_pixels().resize((2000, 1500), Image.Resampling.LANCZOS), "JPEG")
    spec = RenderSpec("webp", 512)
    probed = processing.probe(data, processing.Limits(1 << 30, 10**8, 16383, 10))
    decoded = processing.decode(data, probed, specs=[spec], max_side=4096)
    assert decoded.frames[0].size == (500, 375)
    ours = processing.render(decoded, spec, max_side=4096, background="#fff")
    lanczos = pillow(decoded.frames[0], (512, 384))
    buf = io.BytesIO()
    lanczos.save(buf, "WEBP", quality=80, method=2)  # the same encode, Lanczos' pixels
    reference = pillow(Image.open(io.BytesIO(data)).convert("RGB"), (512, 384))
    got, theirs = Image.open(io.BytesIO(ours.data)), Image.open(buf)
    assert got.size == (512, 384)
    assert ssim(got, reference) >= ssim(theirs, reference) - SSIM_SLACK
    assert len(ours.data) <= len(buf.getvalue()) * 1.05


@pytest.mark.parametrize(("size", "crop"), [((600, 400), (300, 400)), ((451, 300), (451, 120))])
def test_a_cover_crop_frames_the_same_as_pillows(
    size: tuple[int, int], crop: tuple[int, int]
) -> None:
    source = photo_pixels()
    focus = processing.Focus(0.3, 0.6) if crop[1] < size[1] else None
    ours = fit_frame(source, size, crop, focus, "lanczos3")
    theirs = fit_frame(source, size, crop, focus, "lanczos")
    assert ours.size == theirs.size == crop
    assert ssim(ours, theirs) > 0.98


def test_without_pyvips_lanczos3_is_pillows_lanczos_and_says_so_once(
    no_pyvips: None, caplog: pytest.LogCaptureFixture
) -> None:
    source = images.noise(300, 200)
    with caplog.at_level(logging.WARNING, logger="imaging.processing.resampler"):
        assert not resampler.available()
        out = fit_frame(source, (150, 100), None, None, "lanczos3")
        fit_frame(source, (150, 100), None, None, "lanczos3")
    assert out.tobytes() == pillow(source, (150, 100)).tobytes()
    assert len([r for r in caplog.records if "libvips unavailable" in r.message]) == 1


def test_a_rendered_photo_stays_within_the_quality_bound_of_pillows() -> None:
    data = images.encode(photo_pixels(), "JPEG", quality=92)
    outputs = {}
    for resample in ("lanczos", "lanczos3"):
        spec = RenderSpec("webp", 400, resample=resample)
        probed = processing.probe(data, processing.Limits(1 << 30, 10**8, 16383, 10))
        decoded = processing.decode(data, probed, specs=[spec], max_side=4096)
        outputs[resample] = processing.render(decoded, spec, max_side=4096, background="#fff")
    reference = pillow(Image.open(io.BytesIO(data)).convert("RGB"), (400, 266))
    got = {k: Image.open(io.BytesIO(v.data)) for k, v in outputs.items()}
    assert got["lanczos3"].size == got["lanczos"].size == (400, 266)
    assert ssim(got["lanczos3"], reference) >= ssim(got["lanczos"], reference) - SSIM_SLACK
    assert len(outputs["lanczos3"].data) <= len(outputs["lanczos"].data) * 1.05


def test_a_libvips_that_fails_to_load_falls_back_to_pillow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Broken(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, *args: object) -> None:
            if name == "pyvips":
                raise OSError("cannot load library 'libvips.so.42'")

    monkeypatch.delitem(sys.modules, "pyvips")
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    resampler._pyvips.cache_clear()
    try:
        assert not resampler.available()
        assert resampler.downscale(images.noise(60, 40), (30, 20)) is None
    finally:
        resampler._pyvips.cache_clear()
