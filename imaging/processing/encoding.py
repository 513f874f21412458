"""Encoding: one output fitted, flattened where the format has no alpha, and written by its
format's renderer: Pillow's ``save()`` with the registry's options, or another registered one
(``register_renderer``, the way Pillow's plugins register their save functions)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Protocol

from PIL import Image

from imaging.formats import OUTPUT_FORMATS
from imaging.processing.decoding import Decoded
from imaging.processing.geometry import fit_frame, target_size
from imaging.processing.header import pillow_boundary
from imaging.processing.spec import RenderSpec, Rendition, TraceLimits


class Renderer(Protocol):
    """Writes one output of ``decoded`` as ``spec`` asks, within ``max_side``."""

    def __call__(
        self,
        decoded: Decoded,
        spec: RenderSpec,
        *,
        max_side: int,
        background: str,
        tracing: TraceLimits,
    ) -> Rendition: ...


#: What a render call traces within when its caller does not say (the settings' defaults).
DEFAULT_TRACING = TraceLimits()

#: The renderers by the name a format's registry row gives (``OutputFormat.renderer``).
RENDERERS: dict[str, Renderer] = {}


def register_renderer(name: str, renderer: Renderer) -> None:
    RENDERERS[name] = renderer


def render(
    decoded: Decoded,
    spec: RenderSpec,
    *,
    max_side: int,
    background: str,
    tracing: TraceLimits = DEFAULT_TRACING,
) -> Rendition:
    """Fit and encode one output of ``decoded`` with its format's renderer."""
    renderer = RENDERERS[OUTPUT_FORMATS[spec.format].renderer]
    return renderer(decoded, spec, max_side=max_side, background=background, tracing=tracing)


def render_pixels(
    decoded: Decoded,
    spec: RenderSpec,
    *,
    max_side: int,
    background: str,
    tracing: TraceLimits,
) -> Rendition:
    """The raster renderer: fit every kept frame, flatten if need be, save with Pillow."""
    out = OUTPUT_FORMATS[spec.format]
    with pillow_boundary():
        size, crop = target_size(decoded.width, decoded.height, spec, max_side)
        animate = spec.animate and decoded.animated and out.animation
        sources = decoded.frames if animate else decoded.frames[:1]
        frames = [fit_frame(f, size, crop, spec.focus, spec.resample) for f in sources]
        if not out.alpha:
            frames = [flatten(f, background) for f in frames]
        data = _encode(frames, decoded, spec, animate)
        w, h = frames[0].size
        warning = first_frame_warning(decoded, spec, len(frames))
        return Rendition(spec.format, out.mime, out.ext, data, w, h, len(frames), warning)


register_renderer("pillow", render_pixels)


def first_frame_warning(decoded: Decoded, spec: RenderSpec, kept: int) -> str | None:
    """What to say when an animation was asked for and only its first frame could be kept."""
    if decoded.source_frames > 1 and kept == 1 and spec.animate:
        return (
            f"{OUTPUT_FORMATS[spec.format].label} cannot hold an animation: only the first of "
            f"{decoded.source_frames} frames was kept."
        )
    return None


def flatten(im: Image.Image, background: str) -> Image.Image:
    if im.mode != "RGBA":
        return im
    base = Image.new("RGB", im.size, background)
    base.paste(im, mask=im.getchannel("A"))
    return base


def _encode(
    frames: Sequence[Image.Image], decoded: Decoded, spec: RenderSpec, animate: bool
) -> bytes:
    """Save ``frames`` with the options the format registry gives ``spec.format``."""
    out = OUTPUT_FORMATS[spec.format]
    save = out.save
    params: dict[str, Any] = {**save.options, **save.effort.get(spec.effort, {})}
    if decoded.safe_exif and save.exif:
        params["exif"] = decoded.safe_exif
    if spec.lossless and save.lossless is not None:
        params.update(save.lossless)
    elif out.default_quality is not None:
        params["quality"] = spec.quality if spec.quality is not None else out.default_quality
        if save.large_pixels is not None and frames[0].width * frames[0].height > save.large_pixels:
            params.update(save.large)
    if save.palette:
        frames = [_to_palette(f) for f in frames]
    if animate and len(frames) > 1:
        params.update(
            save.animation,
            save_all=True,
            append_images=list(frames[1:]),
            duration=decoded.durations[: len(frames)],
        )
        loop = decoded.loop if decoded.loop is not None else save.loop_once
        if loop is not None:
            params["loop"] = loop
    buf = io.BytesIO()
    frames[0].save(buf, out.pillow, **params)
    return buf.getvalue()


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
