"""What the bytes really are: the allowlisted open, header limits, the one Pillow error boundary.

``probe`` sniffs the real format from the bytes through an explicit allowlist and checks every
limit from the header before any pixel is decoded. Pillow reads most headers itself; the two it
reads too trustingly (a PNG's chunk checksums, a GIF's frame count) have parsers of their own here.

Every exception Pillow can raise on a malformed file is turned into an ``ImagingError`` at one
boundary (``pillow_boundary``): 415 for what is not a valid image, 422 for what is over a limit.
Every module of the package opens bytes through ``open_image`` and works inside that boundary.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pillow_heif  # HEIC/HEIF (iPhone photos) come from pillow-heif's plugin.
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError

from imaging.errors import (
    ImagingError,
    LimitExceeded,
    MissingFile,
    TooLarge,
    UnsupportedFormat,
)
from imaging.formats import ACCEPTED_INPUT_DESCRIPTION, INPUT_FORMATS

pillow_heif.register_heif_opener(thumbnails=False)
# One conversion runs per core (CONVERSION_SLOTS): codecs must not fan out on their own.
pillow_heif.options.DECODE_THREADS = 1

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
#: An animation may decode at most this many times MAX_PIXELS in all its frames together: every
#: frame is held decoded (4 bytes a pixel) until the outputs are encoded, so 1 bounds one
#: animated upload like one still image of MAX_PIXELS.
ANIMATION_PIXEL_FACTOR = 1


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


@contextmanager
def pillow_boundary() -> Iterator[None]:
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


def open_image(data: bytes) -> Image.Image:
    """``data`` opened lazily by one of the allowlisted plugins; call inside ``pillow_boundary``."""
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
    with pillow_boundary(), open_image(data) as im:
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


def png_bit_depth(data: bytes) -> int:
    """From the IHDR, which a PNG always starts with (Pillow does not keep it)."""
    return data[24] if len(data) > 24 else 8


def png_chunks_before_image(data: bytes) -> bool:
    """Whether every chunk but IEND comes before the image data (IDAT), as in most PNGs: then
    Pillow's ``open`` has read every one of them (text, EXIF, XMP) without decoding a pixel."""
    seen_image = False
    for kind, _, _ in _png_chunks(data):
        if kind == b"IEND":
            return seen_image
        if kind == b"IDAT":
            seen_image = True
        elif seen_image:
            return False
    return False


def _png_checksums_match(data: bytes) -> bool:
    """Every chunk's CRC, up to IEND: Pillow checks the header chunks but not the image data.

    zlib.crc32 runs at memory speed, so a whole 20 MB file costs milliseconds. Bytes after IEND
    are not looked at (they are never decoded, nor copied into any output).
    """
    for kind, start, end in _png_chunks(data):
        (expected,) = struct.unpack_from(">I", data, end)
        if zlib.crc32(data[start:end]) != expected:
            return False
        if kind == b"IEND":
            return True
    return False


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """Each whole chunk after the signature, up to IEND: its type and where its type and data
    start and end (its CRC follows); a chunk that runs past the end of ``data`` stops the walk."""
    pos, size = 8, len(data)
    while pos + 12 <= size:
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 8 + length
        if end + 4 > size:
            return
        kind = data[pos + 4 : pos + 8]
        yield kind, pos + 4, end
        if kind == b"IEND":
            return
        pos = end + 4


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
