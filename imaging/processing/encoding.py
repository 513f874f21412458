"""Encoding: one output fitted, flattened where the format has no alpha, and saved by Pillow."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from PIL import Image

from imaging.formats import OUTPUT_FORMATS
from imaging.processing.decoding import Decoded
from imaging.processing.geometry import fit_frame, target_size
from imaging.processing.header import pillow_boundary
from imaging.processing.spec import RenderSpec, Rendition

#: Lossy WebP outputs larger than this are encoded with libwebp method 2 (see _webp_method).
LARGE_WEBP_PIXELS = 16_000_000


def render(decoded: Decoded, spec: RenderSpec, *, max_side: int, background: str) -> Rendition:
    """Fit and encode one output of ``decoded``."""
    out = OUTPUT_FORMATS[spec.format]
    with pillow_boundary():
        size, crop = target_size(decoded.width, decoded.height, spec, max_side)
        animate = spec.animate and decoded.animated and out.animation
        sources = decoded.frames if animate else decoded.frames[:1]
        frames = [fit_frame(f, size, crop) for f in sources]
        if not out.alpha:
            frames = [_flatten(f, background) for f in frames]
        data = _encode(frames, decoded, spec, animate)
        w, h = frames[0].size
        warning = None
        if decoded.source_frames > 1 and len(frames) == 1 and spec.animate:
            warning = (
                f"{out.label} cannot hold an animation: only the first of "
                f"{decoded.source_frames} frames was kept."
            )
        return Rendition(spec.format, out.mime, out.ext, data, w, h, len(frames), warning)


def _flatten(im: Image.Image, background: str) -> Image.Image:
    if im.mode != "RGBA":
        return im
    base = Image.new("RGB", im.size, background)
    base.paste(im, mask=im.getchannel("A"))
    return base


def _encode(
    frames: Sequence[Image.Image], decoded: Decoded, spec: RenderSpec, animate: bool
) -> bytes:
    out = OUTPUT_FORMATS[spec.format]
    quality = spec.quality if spec.quality is not None else out.default_quality
    params: dict[str, Any] = {}
    if decoded.safe_exif and spec.format in ("jpeg", "webp", "png", "avif"):
        params["exif"] = decoded.safe_exif
    if spec.format == "jpeg":
        params.update(quality=quality, progressive=True, optimize=False, subsampling="4:2:0")
    elif spec.format == "webp":
        if spec.lossless:
            params.update(lossless=True, quality=100, method=4)
        else:
            params.update(quality=quality, method=_webp_method(frames[0]))
    elif spec.format == "avif":
        # libavif would use every core; one conversion per core is the budget (CONVERSION_SLOTS).
        params.update(quality=quality, speed=7, max_threads=1)
    elif spec.format == "png":
        params.update(compress_level=6)
    elif spec.format == "gif":
        frames = [_to_palette(f) for f in frames]
    if animate and len(frames) > 1:
        params.update(
            save_all=True,
            append_images=list(frames[1:]),
            duration=decoded.durations[: len(frames)],
        )
        if decoded.loop is not None:
            params["loop"] = decoded.loop
        elif spec.format != "gif":
            params["loop"] = 1  # WebP and APNG count plays: 1 plays once, like the source
        if spec.format == "gif":
            params["disposal"] = 2
    buf = io.BytesIO()
    frames[0].save(buf, out.pillow, **params)
    return buf.getvalue()


def _webp_method(im: Image.Image) -> int:
    """libwebp's effort for a lossy image: 4 (its default), or 2 for a very large one.

    From method 3 up, libwebp keeps a token buffer for the whole image: about 4 bytes a pixel
    (200 MB for 50 MP) on top of its ARGB and YUV copies, and its time grows faster than the
    pixel count (50 MP: 18 s against 2.4 s). Method 2 gives the same bytes within 2 % at 0.2-0.3 dB
    less PSNR; it is only used above LARGE_WEBP_PIXELS (README "Benchmarks").
    """
    return 2 if im.width * im.height > LARGE_WEBP_PIXELS else 4


def _to_palette(im: Image.Image) -> Image.Image:
    if im.mode == "RGBA":
        # Keep binary transparency: GIF has one transparent palette index.
        alpha = im.getchannel("A")
        pal = im.convert("RGB").quantize(255, method=Image.Quantize.MEDIANCUT)
        mask = alpha.point(lambda a: 255 if a < 128 else 0)
        pal.paste(255, mask=mask)
        pal.info["transparency"] = 255
        return pal
    if im.mode == "L":
        return im
    return im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
