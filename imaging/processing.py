"""The conversion engine, and the only module that imports Pillow: probe, decode, render.

Bytes come in, renditions go out. ``probe`` sniffs the real format from the bytes through an
explicit allowlist and checks every limit from the header before any pixel is decoded.
``decode`` applies EXIF orientation, converts colour to sRGB and keeps animation frames, decoding
JPEGs in draft (DCT-domain) mode when every output is smaller than the source. ``render`` fits,
flattens and encodes one output; it never carries the source's metadata across unless asked to.

Every exception Pillow can raise on a malformed file is turned into an ``ImagingError`` at one
boundary (``_pillow_boundary``): 415 for what is not a valid image, 422 for what is over a limit.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageCms, ImageFile, ImageSequence

from imaging.errors import ImagingError, LimitExceeded, MissingFile, UnsupportedFormat
from imaging.formats import ACCEPTED_INPUT_DESCRIPTION, INPUT_FORMATS, OUTPUT_FORMATS

try:  # HEIC/HEIF (iPhone photos) come from pillow-heif's plugin.
    from pillow_heif import register_heif_opener

    register_heif_opener(thumbnails=False)
except ImportError:  # pragma: no cover - pillow-heif is a hard requirement; kept for clarity
    pass

log = logging.getLogger(__name__)

# A truncated file is refused, never half-decoded.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Our own, configurable pixel check runs first on every image; Pillow's bomb check is a backstop
# at the largest size anything could be allowed (MAX_SIDE squared), and its warning is an error.
Image.MAX_IMAGE_PIXELS = 16383 * 16383
warnings.simplefilter("error", Image.DecompressionBombWarning)

# MPO has no opener of its own: Pillow's JPEG opener returns MPO files, so JPEG admits both.
ALLOWED_PILLOW_FORMATS: tuple[str, ...] = tuple(
    f.pillow for f in INPUT_FORMATS.values() if f.pillow != "MPO"
)
FIT_MODES = ("contain", "cover", "fill")
#: An animation may decode at most this many times MAX_PIXELS in all its frames together.
ANIMATION_PIXEL_FACTOR = 4
#: EXIF tags kept when KEEP_COPYRIGHT=1: Artist and Copyright; nothing that locates anyone.
SAFE_EXIF_TAGS = (0x013B, 0x8298)

_SRGB = ImageCms.createProfile("sRGB")


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_pixels: int
    max_side: int
    max_frames: int


@dataclass(frozen=True)
class Probe:
    """What the bytes really are, read from the header only."""

    format: str  # input registry name: "jpeg", "png", "heic", ...
    pillow_format: str
    mime: str
    width: int
    height: int
    frames: int
    bytes: int


@dataclass(frozen=True)
class RenderSpec:
    """One output: format and an optional box (``width``/``height``) to fit into."""

    format: str
    width: int | None = None
    height: int | None = None
    fit: str = "contain"
    quality: int | None = None
    lossless: bool = False
    upscale: bool = False
    animate: bool = True


@dataclass(frozen=True)
class Rendition:
    format: str
    mime: str
    ext: str
    data: bytes
    width: int
    height: int
    frames: int
    warning: str | None = None


@dataclass
class Decoded:
    """A decoded image ready to render: oriented, sRGB, frames in L/RGB/RGBA. Opaque to callers."""

    frames: list[Image.Image]
    durations: list[int]
    loop: int
    width: int  # of the oriented source, before any draft downscale
    height: int
    orientation_applied: bool
    profile: str  # "converted", "kept", "none"
    icc_profile: bytes | None
    safe_exif: bytes | None
    source_frames: int = 1
    warnings: list[str] = field(default_factory=list)

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


@contextmanager
def _pillow_boundary() -> Iterator[None]:
    """Turn every exception a malformed or hostile file can raise in Pillow into a public error."""
    try:
        yield
    except ImagingError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise LimitExceeded(
            "The image has too many pixels.", detail=f"decompression bomb: {exc}"
        ) from None
    except MemoryError:
        raise LimitExceeded(
            "The image is too large to process.", detail="MemoryError while decoding"
        ) from None
    except (
        OSError,
        SyntaxError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        EOFError,
        struct.error,
        zlib.error,
        ZeroDivisionError,
        AttributeError,
        RuntimeError,
    ) as exc:
        raise UnsupportedFormat(
            "The file is not a valid image or is damaged. "
            f"Accepted formats: {ACCEPTED_INPUT_DESCRIPTION}.",
            detail=f"{type(exc).__name__}: {exc}",
        ) from None


def _not_an_image() -> UnsupportedFormat:
    return UnsupportedFormat(
        f"The file is not an image in an accepted format. Accepted: {ACCEPTED_INPUT_DESCRIPTION}."
    )


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_PILLOW_FORMATS)
    except Image.UnidentifiedImageError:
        raise _not_an_image() from None


def probe(data: bytes, limits: Limits) -> Probe:
    """Identify ``data`` from its bytes and check every limit before decoding a pixel."""
    if not data:
        raise MissingFile("The uploaded file is empty.")
    if len(data) > limits.max_bytes:
        raise _too_large(limits)
    with _pillow_boundary(), _open(data) as im:
        fmt = INPUT_FORMATS.get(im.format or "")
        if fmt is None:  # pragma: no cover - Image.open(formats=...) already enforces this
            raise _not_an_image()
        width, height = im.size
        if width < 1 or height < 1:
            raise _not_an_image()
        _check_geometry(width, height, limits)
        frames = _frame_count(im)
        if frames > limits.max_frames:
            raise LimitExceeded(
                f"The animation has {frames} frames; the limit is {limits.max_frames}."
            )
        if frames > 1 and frames * width * height > limits.max_pixels * ANIMATION_PIXEL_FACTOR:
            raise LimitExceeded("The animation has too many pixels in all its frames together.")
        return Probe(fmt.name, im.format or "", fmt.mime, width, height, frames, len(data))


def _too_large(limits: Limits) -> ImagingError:
    from imaging.errors import TooLarge

    return TooLarge(f"The file is larger than the {limits.max_bytes // (1024 * 1024)} MB limit.")


def _check_geometry(width: int, height: int, limits: Limits) -> None:
    if max(width, height) > limits.max_side:
        raise LimitExceeded(
            f"The image is {width}x{height} pixels; no side may exceed {limits.max_side}."
        )
    if width * height > limits.max_pixels:
        raise LimitExceeded(
            f"The image has {width * height / 1e6:.1f} megapixels; "
            f"the limit is {limits.max_pixels / 1e6:.1f}."
        )


def _frame_count(im: Image.Image) -> int:
    """Frames that matter: MPO's extra frames are previews, TIFF pages are not animation."""
    if im.format in ("MPO", "TIFF", "HEIF", "AVIF"):
        return 1
    return int(getattr(im, "n_frames", 1))


def target_size(
    src_w: int, src_h: int, spec: RenderSpec, max_side: int
) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """The size to scale to and, for ``cover``, the final crop size.

    Never upscales unless ``spec.upscale``; never exceeds ``max_side``.
    """
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


def decode(
    data: bytes,
    probed: Probe,
    *,
    specs: Sequence[RenderSpec],
    max_side: int,
    keep_copyright: bool = False,
) -> Decoded:
    """Decode, orient and colour-normalise, at no more resolution than ``specs`` need.

    When every output is smaller than the source, a JPEG is decoded in draft mode at the
    smallest DCT scale that still covers the largest output (as libvips' shrink-on-load does),
    then resampled with Lanczos: a 12 MP photo headed for 1024 px decodes 4x fewer pixels.
    """
    animate = any(OUTPUT_FORMATS[s.format].animation and s.animate for s in specs)
    with _pillow_boundary(), _open(data) as im:
        warnings_out: list[str] = []
        orientation = _orientation(im)
        box = _needed_box(probed, orientation, specs, max_side)
        if box is not None and im.format in ("JPEG", "MPO"):
            bw, bh = box
            if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: draft in stored orientation
                bw, bh = bh, bw
            im.draft(im.mode if im.mode in ("L", "CMYK") else "RGB", (bw, bh))
        icc = im.info.get("icc_profile") or None
        safe_exif = _safe_exif(im) if keep_copyright else None
        loop = int(im.info.get("loop", 0) or 0)
        frames: list[Image.Image] = []
        durations: list[int] = []
        profile = "none"
        multi = animate and probed.frames > 1
        if im.format == "TIFF" and int(getattr(im, "n_frames", 1)) > 1:
            warnings_out.append("Only the first page of the multi-page TIFF was converted.")
        source_frames: Any = ImageSequence.Iterator(im) if multi else [im]
        for frame in source_frames:
            frame.load()
            durations.append(int(frame.info.get("duration", 100) or 100))
            out, profile = _normalise(frame, icc)
            frames.append(out)
        width, height = probed.width, probed.height
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        transpose = _TRANSPOSE.get(orientation)
        if transpose is not None:
            frames = [f.transpose(transpose) for f in frames]
        return Decoded(
            frames=frames,
            durations=durations,
            loop=loop,
            width=width,
            height=height,
            orientation_applied=orientation not in (0, 1),
            profile=profile,
            icc_profile=icc if profile == "kept" else None,
            safe_exif=safe_exif,
            source_frames=probed.frames,
            warnings=warnings_out,
        )


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _needed_box(
    probed: Probe, orientation: int, specs: Sequence[RenderSpec], max_side: int
) -> tuple[int, int] | None:
    """The largest scaled size any spec needs (oriented), or None when one needs full size."""
    w, h = probed.width, probed.height
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    best = (0, 0)
    for spec in specs:
        (sw, sh), _ = target_size(w, h, spec, max_side)
        if sw >= w or sh >= h:
            return None
        best = (max(best[0], sw), max(best[1], sh))
    return best if best != (0, 0) else None


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except (ValueError, TypeError, struct.error, SyntaxError, OSError):
        return 1


def _safe_exif(im: Image.Image) -> bytes | None:
    source = im.getexif()
    kept = Image.Exif()
    for tag in SAFE_EXIF_TAGS:
        if tag in source:
            kept[tag] = source[tag]
    return kept.tobytes() if len(kept) else None


def _normalise(frame: Image.Image, icc: bytes | None) -> tuple[Image.Image, str]:
    """One frame in L, RGB or RGBA, in sRGB when the file carried a profile we could apply."""
    im = frame
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping everything above 255 to white.
        im = im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    elif im.mode == "F":
        im = im.convert("L")
    profile = "none"
    if icc:
        try:
            src_profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            if im.mode in ("RGB", "RGBA", "CMYK"):
                out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
                converted = ImageCms.profileToProfile(
                    im, src_profile, _SRGB, outputMode=out_mode
                )
                if converted is not None:
                    im = converted
                profile = "converted"
            else:
                profile = "kept"
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            profile = "kept"  # an unusable profile is passed through, never silently dropped
    if im.mode in ("RGB", "RGBA", "L"):
        pass
    elif im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("1",):
        im = im.convert("L")
    elif im.mode in ("LA", "La", "PA", "RGBa", "RGBX"):
        im = im.convert("RGBA")
    elif im.mode == "CMYK":
        im = im.convert("RGB")
    elif "transparency" in im.info:
        im = im.convert("RGBA")
    else:
        im = im.convert("RGB")
    if im.mode == "RGBA" and im.getextrema()[3][0] == 255:
        im = im.convert("RGB")  # fully opaque: drop the channel, it only costs bytes
    if im is frame:
        im = im.copy()
    im.info = {}
    return im, profile


def render(decoded: Decoded, spec: RenderSpec, *, max_side: int, background: str) -> Rendition:
    """Fit and encode one output of ``decoded``."""
    out = OUTPUT_FORMATS[spec.format]
    with _pillow_boundary():
        size, crop = target_size(decoded.width, decoded.height, spec, max_side)
        animate = spec.animate and decoded.animated and out.animation
        sources = decoded.frames if animate else decoded.frames[:1]
        frames = [_fit(f, size, crop, spec.fit) for f in sources]
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


def _fit(
    im: Image.Image, size: tuple[int, int], crop: tuple[int, int] | None, fit: str
) -> Image.Image:
    if crop is not None:
        # Scale to cover, then cut the centre: resize(box=) does both in one resampling pass.
        sw, sh = size
        cw, ch = crop
        fx, fy = im.width / sw, im.height / sh
        left, top = (sw - cw) / 2 * fx, (sh - ch) / 2 * fy
        box = (left, top, left + cw * fx, top + ch * fy)
        return im.resize((cw, ch), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    if im.size == size:
        return im
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


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
    if decoded.icc_profile and spec.format != "gif":
        params["icc_profile"] = decoded.icc_profile
    if decoded.safe_exif and spec.format in ("jpeg", "webp", "png", "avif"):
        params["exif"] = decoded.safe_exif
    first = frames[0]
    if spec.format == "jpeg":
        params.update(quality=quality, progressive=True, optimize=False, subsampling="4:2:0")
    elif spec.format == "webp":
        if spec.lossless:
            params.update(lossless=True, quality=100, method=4)
        else:
            params.update(quality=quality, method=4)
    elif spec.format == "avif":
        params.update(quality=quality, speed=7)
    elif spec.format == "png":
        params.update(compress_level=6)
    elif spec.format == "gif":
        frames = [_to_palette(f) for f in frames]
        first = frames[0]
    if animate and len(frames) > 1:
        params.update(
            save_all=True,
            append_images=list(frames[1:]),
            duration=decoded.durations[: len(frames)],
            loop=decoded.loop,
        )
        if spec.format == "gif":
            params["disposal"] = 2
    buf = io.BytesIO()
    first.save(buf, out.pillow, **params)
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


def rgb_pixels(data: bytes, size: int) -> bytes:
    """Raw RGB bytes (size*size*3) of an image for a classifier: ImageNet-style eval crop.

    The shorter side is resized to ``round(size / 0.875)`` (bicubic), then the centre
    ``size x size`` square is cut out.
    """
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        short = round(size / 0.875)
        scale = short / min(im.size)
        w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
        im = im.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        return im.crop((left, top, left + size, top + size)).tobytes()
