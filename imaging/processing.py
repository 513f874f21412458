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

import dataclasses
import io
import logging
import struct
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageCms, ImageFile, ImageMath, UnidentifiedImageError

from imaging.errors import (
    BadRequest,
    ImagingError,
    LimitExceeded,
    MissingFile,
    TooLarge,
    UnsupportedFormat,
)
from imaging.formats import ACCEPTED_INPUT_DESCRIPTION, INPUT_FORMATS, OUTPUT_FORMATS

try:  # HEIC/HEIF (iPhone photos) come from pillow-heif's plugin.
    import pillow_heif

    pillow_heif.register_heif_opener(thumbnails=False)
    # One conversion runs per core (CONVERSION_SLOTS): codecs must not fan out on their own.
    pillow_heif.options.DECODE_THREADS = 1
except ImportError:  # pragma: no cover - pillow-heif is a hard requirement; kept for clarity
    pass

log = logging.getLogger(__name__)

# A truncated file is refused, never half-decoded.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Our own, configurable pixel check runs first on every image; Pillow's bomb check is a backstop
# at the largest size anything could be allowed (MAX_SIDE squared), and its warning is an error.
# Only an image with a side over 16383 can trip it, and _check_geometry refuses those anyway, so
# the outcome (422) is the same whatever the process's warning filters say.
Image.MAX_IMAGE_PIXELS = 16383 * 16383
warnings.simplefilter("error", Image.DecompressionBombWarning)

# MPO has no opener of its own: Pillow's JPEG opener returns MPO files, so JPEG admits both.
ALLOWED_PILLOW_FORMATS: tuple[str, ...] = tuple(
    f.pillow for f in INPUT_FORMATS.values() if f.pillow != "MPO"
)
FIT_MODES = ("contain", "cover", "fill")
#: An animation may decode at most this many times MAX_PIXELS in all its frames together: every
#: frame is held decoded (4 bytes a pixel) until the outputs are encoded, so 1 bounds one
#: animated upload like one still image of MAX_PIXELS.
ANIMATION_PIXEL_FACTOR = 1
#: EXIF tags kept when KEEP_COPYRIGHT=1: Artist and Copyright; nothing that locates anyone.
SAFE_EXIF_TAGS = (0x013B, 0x8298)
#: Lossy WebP outputs larger than this are encoded with libwebp method 2 (see _webp_method).
LARGE_WEBP_PIXELS = 16_000_000
#: Frame delay used when a frame declares none (or 0 ms): what browsers do with such GIFs.
DEFAULT_FRAME_MS = 100

_SRGB = ImageCms.createProfile("sRGB")
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
        LookupError,
        EOFError,
        struct.error,
        zlib.error,
        ArithmeticError,
        AttributeError,
        RuntimeError,
        ImageCms.PyCMSError,
        # Pillow's plugins assert on states only a damaged file reaches (a palette image
        # without a palette...): that is a bad file, not a bug of ours.
        AssertionError,
        # Pillow *warns* about damaged metadata ("Corrupt EXIF data", "Invalid APNG"); where the
        # process turns warnings into errors (the test suite does), such a file is refused.
        UserWarning,
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
    except UnidentifiedImageError:
        raise _not_an_image() from None


def probe(data: bytes, limits: Limits) -> Probe:
    """Identify ``data`` from its bytes and check every limit before decoding a pixel."""
    if not data:
        raise MissingFile("The uploaded file is empty.")
    if len(data) > limits.max_bytes:
        raise TooLarge.over(limits.max_bytes)
    with _pillow_boundary(), _open(data) as im:
        fmt = INPUT_FORMATS.get(im.format or "")
        if fmt is None:  # pragma: no cover - Image.open(formats=...) already enforces this
            raise _not_an_image()
        width, height = im.size
        if width < 1 or height < 1:
            raise _not_an_image()
        if im.format == "PNG" and not _png_checksums_match(data):
            raise UnsupportedFormat(
                "The PNG file is damaged (a checksum does not match). "
                f"Accepted formats: {ACCEPTED_INPUT_DESCRIPTION}."
            )
        _check_geometry(width, height, limits)
        frames = _frame_count(im, data, limits.max_frames)
        if frames > limits.max_frames:
            raise LimitExceeded(
                f"The animation has more than {limits.max_frames} frames, the limit."
            )
        if frames > 1 and frames * width * height > limits.max_pixels * ANIMATION_PIXEL_FACTOR:
            raise LimitExceeded("The animation has too many pixels in all its frames together.")
        return Probe(fmt.name, im.format or "", fmt.mime, width, height, frames, len(data))


def _png_checksums_match(data: bytes) -> bool:
    """Every chunk's CRC, up to IEND: Pillow checks the header chunks but not the image data.

    zlib.crc32 runs at memory speed, so a whole 20 MB file costs milliseconds. Bytes after IEND
    are not looked at (they are never decoded, nor copied into any output).
    """
    pos, size = 8, len(data)
    while pos + 12 <= size:
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 8 + length
        if end + 4 > size:
            return False
        (expected,) = struct.unpack_from(">I", data, end)
        if zlib.crc32(data[pos + 4 : end]) != expected:
            return False
        if data[pos + 4 : pos + 8] == b"IEND":
            return True
        pos = end + 4
    return False


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


def _frame_count(im: Image.Image, data: bytes, max_frames: int) -> int:
    """Frames that matter: MPO's extra frames are previews, TIFF pages are not animation."""
    if im.format in ("MPO", "TIFF", "HEIF", "AVIF"):
        return 1
    if im.format == "GIF":
        # Pillow counts GIF frames by walking every one of them in Python: a 15 MB file of
        # a million 1-pixel frames takes seconds. Count cheaply, and stop past the limit.
        counted = _gif_frames(data, stop=max_frames + 1)
        if counted > max_frames:
            return counted
    return int(getattr(im, "n_frames", 1))


def _gif_frames(data: bytes, stop: int) -> int:
    """Image descriptors in a GIF, counted no further than ``stop``, reading only block headers.

    Walks the blocks the way Pillow's reader does (unknown bytes are skipped one at a time), so a
    file it counts over the limit is one Pillow would also find over the limit.
    """
    size = len(data)
    pos = 13
    if size > 10 and data[10] & 0x80:  # global colour table
        pos += 3 << ((data[10] & 7) + 1)
    count = 0
    while pos < size and count < stop:
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: introducer, label, then sub-blocks
            pos += 2
        elif block == 0x2C:  # image descriptor, optional local colour table, LZW code size
            count += 1
            flags = data[pos + 9] if pos + 9 < size else 0
            pos += 10
            if flags & 0x80:
                pos += 3 << ((flags & 7) + 1)
            pos += 1
        else:
            pos += 1
            continue
        while pos < size and data[pos]:
            pos += data[pos] + 1
        pos += 1
    return count


def target_size(
    src_w: int, src_h: int, spec: RenderSpec, max_side: int
) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """The size to scale to and, for ``cover``, the final crop size.

    Never upscales unless ``spec.upscale``; never exceeds ``max_side``.
    """
    if spec.fit not in FIT_MODES:
        raise BadRequest(f"fit must be one of: {', '.join(FIT_MODES)}.")
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
    with _pillow_boundary():
        # _decode holds the only reference to the opened image, so it can let go of it early.
        return _decode(_open(data), data, probed, specs, max_side, keep_copyright, animate)


def _decode(
    im: Image.Image,
    data: bytes,
    probed: Probe,
    specs: Sequence[RenderSpec],
    max_side: int,
    keep_copyright: bool,
    animate: bool,
) -> Decoded:
    if im.size != (probed.width, probed.height):
        raise UnsupportedFormat("The image changed between probe and decode.")
    warnings_out: list[str] = []
    orientation = _orientation(im)
    box = _needed_box(probed, orientation, specs, max_side)
    if box is not None and im.format in ("JPEG", "MPO"):
        bw, bh = box
        if orientation in _ROTATED:  # the box is oriented; the draft is in stored orientation
            bw, bh = bh, bw
        im.draft(im.mode if im.mode in ("L", "CMYK") else "RGB", (bw, bh))
    icc = im.info.get("icc_profile") or None
    safe_exif = _safe_exif(im) if keep_copyright else None
    loop = im.info.get("loop")
    if im.format == "TIFF" and getattr(im, "is_animated", False):
        warnings_out.append("Only the first page of the multi-page TIFF was converted.")
    count = probed.frames if animate and probed.frames > 1 else 1
    colour = _Colour(icc, _png_bit_depth(data) if im.format == "PNG" else 8, in_place=count == 1)
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
    width, height = probed.width, probed.height
    if orientation in _ROTATED:
        width, height = height, width
    return Decoded(
        frames=frames,
        durations=durations,
        loop=None if loop is None else int(loop),
        width=width,
        height=height,
        orientation_applied=orientation != 1,
        profile=colour.status,
        icc_profile=None,
        safe_exif=safe_exif,
        source_frames=probed.frames,
        warnings=warnings_out,
    )


def _needed_box(
    probed: Probe, orientation: int, specs: Sequence[RenderSpec], max_side: int
) -> tuple[int, int] | None:
    """The largest scaled size any spec needs (oriented), or None when one needs full size."""
    w, h = probed.width, probed.height
    if orientation in _ROTATED:
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


def _png_bit_depth(data: bytes) -> int:
    """From the IHDR, which a PNG always starts with (Pillow does not keep it)."""
    return data[24] if len(data) > 24 else 8


class _Colour:
    """Brings every frame to L, RGB or RGBA in sRGB; builds each ICC transform once per image."""

    def __init__(self, icc: bytes | None, bit_depth: int, *, in_place: bool) -> None:
        self.status = "none"
        self._bit_depth = bit_depth
        self._in_place = in_place  # never in an animation: Pillow composes the next frame on it
        self._profile: ImageCms.ImageCmsProfile | None = None
        self._transforms: dict[str, ImageCms.ImageCmsTransform | None] = {}
        if icc:
            try:
                self._profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
                self.status = "ignored"

    def normalise(self, frame: Image.Image) -> Image.Image:
        """``frame`` itself when nothing needed doing, else a new image (with ``info`` copied)."""
        im = frame
        profile_applied = False
        if self._profile is not None and im.mode == "CMYK":
            # A CMYK profile must see CMYK pixels: convert before any naive CMYK -> RGB.
            im = self._to_srgb(im)
            profile_applied = True
        im = self._to_standard_mode(im)
        if self._profile is not None and not profile_applied:
            im = self._to_srgb(im)
        if im.mode == "RGBA" and im.getchannel("A").getextrema()[0] == 255:
            im = im.convert("RGB")  # fully opaque: drop the channel, it only costs bytes
        return im

    def _to_standard_mode(self, im: Image.Image) -> Image.Image:
        mode = im.mode
        transparency = im.info.get("transparency")
        if mode.startswith("I"):
            return self._from_wide_grey(im)
        if mode == "F":
            return im.convert("L")
        if mode in ("L", "RGB") and transparency is not None:
            # Pillow keeps a PNG's tRNS colour at the file's bit depth, but its pixels in 8 bits.
            if mode == "RGB" and self._bit_depth == 16 and isinstance(transparency, tuple):
                im = im.copy()
                im.info["transparency"] = tuple(v >> 8 for v in transparency)
            elif mode == "L" and self._bit_depth in (2, 4) and isinstance(transparency, int):
                im = im.copy()
                im.info["transparency"] = transparency * 255 // (2**self._bit_depth - 1)
            return im.convert("RGBA")
        if mode in ("RGB", "RGBA", "L"):
            return im
        if mode == "P":
            # Not has_transparency_data: it asserts on a (damaged) palette image with no palette.
            alpha = "transparency" in im.info or (im.palette is not None and "A" in im.palette.mode)
            return im.convert("RGBA" if alpha else "RGB")
        if mode == "1":
            return im.convert("RGBA" if transparency is not None else "L")
        if mode in ("LA", "La", "PA", "RGBa"):
            return im.convert("RGBA")
        return im.convert("RGBA" if im.has_transparency_data else "RGB")

    def _from_wide_grey(self, im: Image.Image) -> Image.Image:
        """16-bit greyscale scaled to 8 bits, instead of clipping everything above 255 to white."""
        wide = im if im.mode == "I" else im.convert("I")
        grey = wide.point(lambda v: v * (1 / 256)).convert("L")
        transparent = im.info.get("transparency")
        if not isinstance(transparent, int):
            return grey
        alpha = ImageMath.lambda_eval(lambda a: (a["im"] != transparent) * 255, im=wide)
        return Image.merge("LA", (grey, alpha.convert("L"))).convert("RGBA")

    def _to_srgb(self, im: Image.Image) -> Image.Image:
        transform = self._transform(im.mode)
        if transform is None:
            return im
        if transform.input_mode == transform.output_mode and self._in_place:
            ImageCms.applyTransform(im, transform, inPlace=True)
            return im
        converted = ImageCms.applyTransform(im, transform)
        assert converted is not None
        # A grey profile's grey stays grey in sRGB: back to one channel, a third of the bytes.
        return converted.convert("L") if im.mode == "L" else converted

    def _transform(self, mode: str) -> ImageCms.ImageCmsTransform | None:
        if mode in self._transforms:
            return self._transforms[mode]
        assert self._profile is not None
        transform: ImageCms.ImageCmsTransform | None = None
        out_mode = {"CMYK": "RGB", "L": "RGB"}.get(mode, mode)
        try:
            transform = ImageCms.buildTransform(self._profile, _SRGB, mode, out_mode)
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            # The profile does not describe these pixels (an RGB profile on a grey image...):
            # browsers ignore such a profile and so do we.
            self.status = "ignored"
        else:
            if mode in ("RGB", "RGBA") and _is_identity(transform):
                # Most camera JPEGs embed sRGB itself: converting would cost a pass for nothing.
                transform = None
                if self.status == "none":
                    self.status = "srgb"
            else:
                self.status = "converted"
        self._transforms[mode] = transform
        return transform


def _is_identity(transform: ImageCms.ImageCmsTransform) -> bool:
    """Whether ``transform`` leaves colours alone (within rounding) on a spread of samples."""
    levels = range(0, 256, 15)
    mode = transform.input_mode
    pixels = bytes(
        v for r in levels for g in levels for b in levels for v in (r, g, b, 255)[: len(mode)]
    )
    sample = Image.frombytes(mode, (len(pixels) // len(mode), 1), pixels)
    out = ImageCms.applyTransform(sample, transform)
    assert out is not None
    return max(abs(a - b) for a, b in zip(pixels, out.tobytes(), strict=True)) <= 2


def render(decoded: Decoded, spec: RenderSpec, *, max_side: int, background: str) -> Rendition:
    """Fit and encode one output of ``decoded``."""
    out = OUTPUT_FORMATS[spec.format]
    with _pillow_boundary():
        size, crop = target_size(decoded.width, decoded.height, spec, max_side)
        animate = spec.animate and decoded.animated and out.animation
        sources = decoded.frames if animate else decoded.frames[:1]
        frames = [_fit(f, size, crop) for f in sources]
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


def shrink(decoded: Decoded, box: tuple[int, int], *, max_side: int) -> Decoded:
    """``decoded`` scaled down to fit ``box`` (never up), to render smaller outputs from.

    Rendering a 480 px thumbnail from the 1024 px output's pixels instead of the full source
    costs a fraction of the resampling, at no visible loss (Lanczos both times).
    """
    with _pillow_boundary():
        spec = RenderSpec(format="png", width=box[0], height=box[1])
        size, _ = target_size(decoded.width, decoded.height, spec, max_side)
        if size == (decoded.width, decoded.height) and decoded.frames[0].size == size:
            return decoded
        frames = [_fit(f, size, None) for f in decoded.frames]
        return dataclasses.replace(decoded, frames=frames, width=size[0], height=size[1])


def _fit(im: Image.Image, size: tuple[int, int], crop: tuple[int, int] | None) -> Image.Image:
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


def rgb_pixels(data: bytes, size: int) -> bytes:
    """Raw RGB bytes (size*size*3) of an image for a classifier: ImageNet-style eval crop.

    The shorter side is resized to ``round(size / 0.875)`` (bicubic), then the centre
    ``size x size`` square is cut out. The same allowlist and error boundary as ``probe``.
    """
    short = round(size / 0.875)
    with _pillow_boundary(), _open(data) as source:
        if min(source.size) > 2 * short:
            source.draft("RGB", (short, short))  # JPEG only; other formats ignore it
        im = source.convert("RGB")
        scale = short / min(im.size)
        w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
        im = im.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        return im.crop((left, top, left + size, top + size)).tobytes()
