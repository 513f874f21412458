"""Decoding: pixels upright, in sRGB, every animation frame kept, at no more resolution than needed.

``decode`` applies EXIF orientation, converts colour to sRGB (``colour.Colour``) and keeps
animation frames, decoding JPEGs in draft (DCT-domain) mode when every output is smaller than the
source. Nothing of the source's metadata leaves here unless asked for (``keep_copyright``), but
the camera facts (``camera.read_camera``: an allowlist that never reads a location).
``shrink`` and ``shared_fit`` scale a decoded image down to render smaller outputs from.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from imaging.errors import UnsupportedFormat
from imaging.formats import OUTPUT_FORMATS
from imaging.processing import resampler
from imaging.processing.camera import Camera, read_camera
from imaging.processing.colour import Colour
from imaging.processing.geometry import SHORT_STEP_UP, fit_frame, needed_box, target_size
from imaging.processing.header import (
    Probe,
    open_image,
    pillow_boundary,
    png_bit_depth,
    png_chunks_before_image,
)
from imaging.processing.spec import RenderSpec

#: EXIF tags kept when KEEP_COPYRIGHT=1: Artist and Copyright; nothing that locates anyone.
SAFE_EXIF_TAGS = (0x013B, 0x8298)
#: How far under an output's size a JPEG may be decoded at a DCT scale (then resampled up):
#: 12 MP -> 1024 px decodes at 1/4 (1000x750) instead of 1/2, and a 48 MP upload capped at
#: MAX_OUTPUT_SIDE (4096) at 1/2 (4000x3000) instead of full size (+317 MB peak). The step up
#: from there is a short one (``geometry.SHORT_STEP_UP``), which takes the cheaper bicubic.
DRAFT_SLACK = SHORT_STEP_UP
#: The largest PNG libvips decodes (``_plain_png``), a 4K screenshot's size: its decode holds
#: libvips' copy of the pixels beside Pillow's (3 + 4 bytes a pixel) until the frame is made,
#: where Pillow's alone holds 4, so a larger PNG stays with Pillow and its peak memory.
LIBVIPS_PNG_MAX_PIXELS = 10_000_000
#: Frame delay used when a frame declares none (or 0 ms): what browsers do with such GIFs.
DEFAULT_FRAME_MS = 100

_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass
class Decoded:
    """A decoded image ready to render: oriented, sRGB, frames in L/RGB/RGBA. Opaque to callers.

    ``profile`` says what happened to an embedded ICC profile: ``"converted"`` (pixels converted
    to sRGB), ``"srgb"`` (the profile was sRGB already), ``"ignored"`` (unusable or not matching
    the pixels: they are taken as sRGB, as browsers do) or ``"none"``. Outputs never carry a
    profile: they are all sRGB, which every viewer assumes.
    """

    frames: list[Image.Image]
    durations: list[int]
    loop: int | None  # None: an animation that plays once (a GIF without a loop extension)
    width: int  # of the oriented source, before any draft downscale
    height: int
    orientation_applied: bool
    profile: str
    safe_exif: bytes | None
    source_frames: int = 1
    warnings: list[str] = field(default_factory=list)
    camera: Camera = field(default_factory=Camera)  # read before the metadata is dropped

    @property
    def animated(self) -> bool:
        return len(self.frames) > 1

    def receipt(self) -> dict[str, Any]:
        return {
            "orientation_applied": self.orientation_applied,
            "profile": self.profile,
            "metadata_removed": self.safe_exif is None,
            "frames_kept": len(self.frames),
        }


def decode(
    data: bytes,
    probed: Probe,
    *,
    specs: Sequence[RenderSpec],
    max_side: int,
    keep_copyright: bool = False,
    libvips: bool = False,
) -> Decoded:
    """Decode, orient and colour-normalise, at no more resolution than ``specs`` need.

    When every output is smaller than the source, a JPEG is decoded in draft mode at the
    smallest DCT scale that still covers the largest output, or falls at most ``DRAFT_SLACK``
    short of it (as libvips' shrink-on-load does), then resampled (that short step up with
    bicubic, ``geometry.SHORT_STEP_UP``): a 12 MP photo headed for 1024 px decodes 16x fewer
    pixels. With ``libvips`` (RESAMPLER=vips) a still 8-bit PNG's pixels are decoded by libvips
    where it gives the bands Pillow would (``resampler.png_pixels``).
    """
    animate = any(OUTPUT_FORMATS[s.format].animation and s.animate for s in specs)
    with pillow_boundary():
        # _decode holds the only reference to the opened image, so it can let go of it early.
        return _decode(
            open_image(data), data, probed, specs, max_side, keep_copyright, animate, libvips
        )


def _decode(
    im: Image.Image,
    data: bytes,
    probed: Probe,
    specs: Sequence[RenderSpec],
    max_side: int,
    keep_copyright: bool,
    animate: bool,
    libvips: bool,
) -> Decoded:
    if im.size != (probed.width, probed.height):
        raise UnsupportedFormat("The image changed between probe and decode.")
    source_format = im.format
    if libvips and _plain_png(im, data, probed):
        pixels = resampler.png_pixels(data, im.mode, im.size)
        if pixels is not None:
            # Every chunk comes before the pixels, so Pillow's open() has read them all into
            # info (ICC, EXIF, XMP): the image needs no load() of Pillow's to read them.
            pixels.info = im.info
            im = pixels
    warnings_out: list[str] = []
    orientation = _orientation(im)
    width, height = probed.width, probed.height
    if orientation in _ROTATED:
        width, height = height, width
    box = needed_box(width, height, specs, max_side)
    if box is not None and source_format in ("JPEG", "MPO"):
        # A DCT scale may land up to DRAFT_SLACK under the largest output: one short bicubic
        # step up from there costs far less than decoding (and resampling) twice the pixels.
        bw, bh = (math.ceil(side / DRAFT_SLACK) for side in box)
        if orientation in _ROTATED:  # the box is oriented; the draft is in stored orientation
            bw, bh = bh, bw
        im.draft(im.mode if im.mode in ("L", "CMYK") else "RGB", (bw, bh))
    icc = im.info.get("icc_profile") or None
    safe_exif = _safe_exif(im) if keep_copyright else None
    camera = read_camera(im)
    loop = im.info.get("loop")
    if source_format == "TIFF" and getattr(im, "is_animated", False):
        warnings_out.append("Only the first page of the multi-page TIFF was converted.")
    count = probed.frames if animate and probed.frames > 1 else 1
    bit_depth = png_bit_depth(data) if source_format == "PNG" else 8
    colour = Colour(icc, bit_depth, in_place=count == 1)
    frames: list[Image.Image] = []
    durations: list[int] = []
    for index in range(count):
        if index:
            im.seek(index)
        im.load()
        durations.append(int(im.info.get("duration") or DEFAULT_FRAME_MS))
        frame = colour.normalise(im)
        if frame is im and count > 1:
            frame = im.copy()  # every frame of an animation is the same Image object, seeked
        # Metadata stops here: nothing in ``info`` (EXIF, XMP, ICC, comments) reaches an encoder
        # (PNG's, for one, would copy the source's ICC profile from ``info``).
        frame.info = {}
        frames.append(frame)
    # A single frame may be `im` itself (no copy of the pixels is made): from here on `frames`
    # holds the only reference, so each stored frame is freed as soon as it is turned upright.
    del frame, im
    transpose = _TRANSPOSE.get(orientation)
    if transpose is not None:
        for i, stored in enumerate(frames):
            frames[i] = stored.transpose(transpose)
            del stored
    return Decoded(
        frames=frames,
        durations=durations,
        loop=None if loop is None else int(loop),
        width=width,
        height=height,
        orientation_applied=orientation != 1,
        profile=colour.status,
        safe_exif=safe_exif,
        source_frames=probed.frames,
        warnings=warnings_out,
        camera=camera,
    )


def _plain_png(im: Image.Image, data: bytes, probed: Probe) -> bool:
    """A still 8-bit PNG whose chunks all come before its pixels (libvips may decode it)."""
    return (
        im.format == "PNG"
        and probed.frames == 1
        and probed.width * probed.height <= LIBVIPS_PNG_MAX_PIXELS
        and png_bit_depth(data) == 8
        and png_chunks_before_image(data)
    )


def _orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(0x0112, 1) or 1)
    except (ValueError, TypeError, struct.error, SyntaxError, OSError):
        return 1
    return value if value in _TRANSPOSE else 1


def _safe_exif(im: Image.Image) -> bytes | None:
    source = im.getexif()
    kept = Image.Exif()
    for tag in SAFE_EXIF_TAGS:
        value = source.get(tag)
        if isinstance(value, str) and value.strip("\x00 "):
            kept[tag] = value
    return kept.tobytes() if len(kept) else None


def shrink(decoded: Decoded, box: tuple[int, int], *, max_side: int) -> Decoded:
    """``decoded`` scaled down to fit ``box`` (never up), to render smaller outputs from.

    Rendering a 480 px thumbnail from the 1024 px output's pixels instead of the full source
    costs a fraction of the resampling, at no visible loss (Lanczos both times).
    """
    spec = RenderSpec(format="png", width=box[0], height=box[1])
    size, _ = target_size(decoded.width, decoded.height, spec, max_side)
    return _resampled(decoded, size)


def shared_fit(
    decoded: Decoded,
    specs: Sequence[RenderSpec],
    *,
    derived: Sequence[RenderSpec] = (),
    max_side: int,
) -> Decoded:
    """``decoded`` resampled once to the size every one of ``specs`` renders at, if they share
    one filter and one uncropped, undistorted size that is at least what each of ``derived``
    needs; else as is.

    The outputs in ``specs`` then render from it without resampling again (byte-identical to
    rendering them from ``decoded``), and the smaller ``derived`` ones (the gallery thumbnail)
    resample the output's pixels instead of the full decode: a fraction of the work.
    """
    if not specs:
        return decoded
    with pillow_boundary():
        sizes = set()
        filters = {spec.resample for spec in specs}
        if len(filters) != 1:
            return decoded
        for spec in specs:
            size, crop = target_size(decoded.width, decoded.height, spec, max_side)
            distorted = spec.fit == "fill" and spec.width is not None and spec.height is not None
            if crop is not None or distorted:
                return decoded
            sizes.add(size)
        if len(sizes) != 1:
            return decoded
        (size,) = sizes
        for spec in derived:
            (w, h), _ = target_size(decoded.width, decoded.height, spec, max_side)
            if w > size[0] or h > size[1]:
                return decoded  # the output is smaller than a derived one needs
        return _resampled(decoded, size, *filters)


def _resampled(decoded: Decoded, size: tuple[int, int], resample: str = "lanczos") -> Decoded:
    with pillow_boundary():
        if size == (decoded.width, decoded.height) and decoded.frames[0].size == size:
            return decoded
        frames = [fit_frame(f, size, None, resample=resample) for f in decoded.frames]
        return dataclasses.replace(decoded, frames=frames, width=size[0], height=size[1])
