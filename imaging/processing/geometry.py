"""Sizes and resampling: the fit modes, the size each output needs, one Lanczos pass to it."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from imaging.errors import BadRequest
from imaging.processing import resampler
from imaging.processing.spec import Focus, RenderSpec

FIT_MODES = ("contain", "cover", "fill")


def parse_fit(raw: str | None) -> str:
    """The fit mode ``raw`` names, in any case and spacing (none: ``contain``); else BadRequest.

    The one rule for ``fit``: the form reader, the pipeline and ``target_size`` all ask here.
    """
    fit = (raw or "contain").strip().lower()
    if fit not in FIT_MODES:
        raise BadRequest(f"fit must be one of: {', '.join(FIT_MODES)}.")
    return fit


def target_size(
    src_w: int, src_h: int, spec: RenderSpec, max_side: int
) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """The size to scale to and, for ``cover``, the final crop size.

    Never upscales unless ``spec.upscale``; never exceeds ``max_side``.
    """
    parse_fit(spec.fit)
    if any(v is not None and v < 1 for v in (spec.width, spec.height)):
        raise BadRequest("width and height must be positive.")
    tw, th = spec.width, spec.height
    if tw is None and th is None:
        scale = min(1.0, max_side / max(src_w, src_h))
        return (max(1, round(src_w * scale)), max(1, round(src_h * scale))), None
    fit = spec.fit if tw is not None and th is not None else "contain"
    if fit == "fill":
        assert tw is not None
        assert th is not None
        if not spec.upscale:
            tw, th = min(tw, src_w), min(th, src_h)
        return (min(tw, max_side), min(th, max_side)), None
    sx = tw / src_w if tw is not None else None
    sy = th / src_h if th is not None else None
    scales = [s for s in (sx, sy) if s is not None]
    scale = max(scales) if fit == "cover" else min(scales)
    if not spec.upscale:
        scale = min(scale, 1.0)
    scale = min(scale, max_side / max(src_w, src_h))
    size = (max(1, round(src_w * scale)), max(1, round(src_h * scale)))
    if fit == "cover":
        assert tw is not None
        assert th is not None
        return size, (min(tw, size[0]), min(th, size[1]))
    return size, None


def needed_box(
    width: int, height: int, specs: Sequence[RenderSpec], max_side: int
) -> tuple[int, int] | None:
    """The largest scaled size any spec needs of a ``width`` x ``height`` (oriented) source.

    None when one of them needs the full size, or when there are no specs at all.
    """
    best = (0, 0)
    for spec in specs:
        (sw, sh), _ = target_size(width, height, spec, max_side)
        if sw >= width or sh >= height:
            return None
        best = (max(best[0], sw), max(best[1], sh))
    return best if best != (0, 0) else None


def cuts(size: tuple[int, int], crop: tuple[int, int] | None) -> bool:
    """Whether a ``target_size`` answer cuts anything away (a cover crop narrower or shorter)."""
    return crop is not None and (crop[0] < size[0] or crop[1] < size[1])


def window(
    size: tuple[int, int], crop: tuple[int, int], focus: Focus | None
) -> tuple[float, float]:
    """The top-left corner, in ``size`` pixels, of the ``crop`` window: centred on ``focus``
    (default: the picture's centre), pushed back inside the picture at its edges."""
    (sw, sh), (cw, ch) = size, crop
    fx, fy = focus.centre if focus is not None else (0.5, 0.5)
    left = min(max(fx * sw - cw / 2, 0.0), sw - cw)
    top = min(max(fy * sh - ch / 2, 0.0), sh - ch)
    return left, top


#: The filters a ``RenderSpec`` may ask for (``RenderSpec.resample``): Pillow's, and
#: ``lanczos3``, libvips' (``resampler``), which downscales 8-bit L/RGB/RGBA and falls back to
#: Pillow's Lanczos for everything else (and when libvips is not there).
RESAMPLING = {
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos3": Image.Resampling.LANCZOS,
}
#: An enlargement by at most this much (what is left when a JPEG is decoded at the DCT scale
#: just under the output: ``decoding.DRAFT_SLACK``) is resampled with bicubic where Lanczos was
#: asked for: 12 MP -> 1024 px steps up from 1000x750 by 2.4 %, and bicubic does that in 13 ms
#: against Lanczos' 19, at SSIM 0.997 to it (docs/benchmarks.md, "The body's reads and the short
#: step up").
SHORT_STEP_UP = 1.05


def short_step_up(source: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether ``size`` enlarges ``source`` (no side smaller) by at most ``SHORT_STEP_UP``."""
    steps = zip(source, size, strict=True)
    return size != source and all(s <= t <= s * SHORT_STEP_UP for s, t in steps)


def fit_frame(
    im: Image.Image,
    size: tuple[int, int],
    crop: tuple[int, int] | None,
    focus: Focus | None = None,
    resample: str = "lanczos",
) -> Image.Image:
    """``im`` resampled to ``size`` (``target_size``'s answer) with the ``resample`` filter,
    then cut to ``crop`` if given, around ``focus`` (default: the centre)."""
    method = RESAMPLING[resample]
    if method is Image.Resampling.LANCZOS and short_step_up(im.size, size):
        method = Image.Resampling.BICUBIC
    if resample == "lanczos3" and im.size != size:
        scaled = resampler.downscale(im, size)
        if scaled is not None:
            if crop is None:
                return scaled
            # Scale the whole picture, then cut the window at the nearest whole pixel: the
            # same frame as Pillow's resize(box=) below, within half an output pixel.
            x, y = window(size, crop, focus)
            return scaled.crop((round(x), round(y), round(x) + crop[0], round(y) + crop[1]))
    if crop is not None:
        # Scale to cover, then cut the window: resize(box=) does both in one resampling pass.
        sw, sh = size
        cw, ch = crop
        fx, fy = im.width / sw, im.height / sh
        x, y = window(size, crop, focus)
        left, top = x * fx, y * fy
        box = (left, top, left + cw * fx, top + ch * fy)
        return im.resize((cw, ch), method, box=box, reducing_gap=3.0)
    if im.size == size:
        return im
    return im.resize(size, method, reducing_gap=3.0)
