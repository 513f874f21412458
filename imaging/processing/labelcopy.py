"""The labelers' copy of an upload: small upright sRGB pixels, and each form a labeler reads.

A classifier wants a small square of RGB pixels, Cloud Vision a JPEG of about 640 px. Encoding a
JPEG only to decode it again for the classifier cost more CPU than the classifier itself, so the
pipeline hands every labeler a ``LabelImage`` made from the pixels it has already decoded (an
integer box reduce, the cheapest resampling there is), and each labeler asks for the form it
needs: ``square_rgb(size)``, ``small(short)`` or ``jpeg()``, each made on first ask, in the
labeler's thread. A text reader asks for ``text_picture()``: the upload's own decoded pixels, not
the small copy (letters a few pixels high are lost in a reduce); the copy only holds a reference
to them.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from PIL import Image

from imaging.formats import OUTPUT_FORMATS
from imaging.processing.decoding import Decoded
from imaging.processing.encoding import flatten
from imaging.processing.geometry import fit_frame, target_size
from imaging.processing.header import open_image, pillow_boundary
from imaging.processing.spec import RenderSpec

#: The box of the JPEG form: what Cloud Vision recommends for label detection (640x480).
JPEG_BOX = (640, 640)
_ANY_SIDE = 1 << 16  # no output cap applies to the labelers' copy
#: ImageNet's eval crop: the centre square is this share of the shorter side.
_CROP_SHARE = 0.875
T = TypeVar("T")


class LabelImage:
    """What a labeler reads. Build it with ``of`` (the pipeline) or ``from_bytes``."""

    def __init__(
        self,
        image: Image.Image | None = None,
        *,
        encoded: bytes | None = None,
        background: str = "#ffffff",
        text_source: Image.Image | None = None,
    ) -> None:
        if image is None and encoded is None:
            raise ValueError("a LabelImage needs pixels or encoded bytes")
        self._image = image
        self._text_source = text_source
        #: When (``time.monotonic()``) the labels are collected, if anyone waits for them (the
        #: pipeline sets it): a slow step (OCR) gives up in time for the others to be kept.
        self.deadline: float | None = None
        self._encoded = encoded
        self._background = background
        self._lock = threading.Lock()
        self._jpeg: bytes | None = None
        self._squares: dict[int, bytes] = {}
        self._small: dict[int, Image.Image] = {}
        self._found: dict[str, Any] = {}

    @classmethod
    def of(
        cls,
        decoded: Decoded,
        *,
        box: tuple[int, int],
        background: str,
        source: Decoded | None = None,
    ) -> LabelImage:
        """``decoded``'s first frame, reduced by the largest whole factor that keeps it at least
        the size ``box`` would give it (a box average: no resampling filter runs). ``source``
        is the decode ``decoded`` was resampled from, if it was (the outputs' shared size): the
        text reader reads its pixels."""
        frame = decoded.frames[0]
        text_source = (source if source is not None else decoded).frames[0]
        with pillow_boundary():
            (tw, th), _ = target_size(
                frame.width, frame.height, RenderSpec("jpeg", *box), _ANY_SIDE
            )
            factor = max(1, min(frame.width // tw, frame.height // th))
            small = frame.reduce(factor) if factor > 1 else frame
        return cls(small, background=background, text_source=text_source)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        background: str = "#ffffff",
        text_source: Image.Image | None = None,
    ) -> LabelImage:
        """An encoded image (decoded on first ask; a JPEG is sent to Vision as it is), and the
        pixels it was made from for a text reader, if there are any."""
        return cls(encoded=data, background=background, text_source=text_source)

    def small(self, short: int) -> Image.Image:
        """The pixels in RGB box-reduced by the largest whole factor that keeps their shorter
        side at least ``short`` (as they are when already that small), made once per ``short``:
        the one small copy the classifier's square, the face detector and the text check all
        read, instead of each resampling the labelers' copy on its own."""
        with self._lock:
            cached = self._small.get(short)
        if cached is not None:
            return cached
        with pillow_boundary():
            im = self._rgb(short)
            factor = min(im.size) // short
            if factor > 1:  # a box reduce: the cheapest resampling there is
                im = im.reduce(factor)
        with self._lock:
            return self._small.setdefault(short, im)

    @staticmethod
    def square_side(size: int) -> int:
        """The shorter side ``square_rgb(size)`` cuts its square from (224 -> 256): a
        detector reading ``small`` of it shares the classifier's copy."""
        return round(size / _CROP_SHARE)

    def square_rgb(self, size: int) -> bytes:
        """Raw RGB bytes (size*size*3) for a classifier: ImageNet-style eval crop.

        The shorter side is brought to ``square_side(size)`` (the ``small`` copy for that
        side, then bicubic where it is not exactly that already), then the centre
        ``size x size`` square is cut out.
        """
        with self._lock:
            cached = self._squares.get(size)
        if cached is not None:
            return cached
        short = self.square_side(size)
        im = self.small(short)
        with pillow_boundary():
            scale = short / min(im.size)
            w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
            if (w, h) != im.size:
                im = im.resize((w, h), Image.Resampling.BICUBIC)
            left, top = (w - size) // 2, (h - size) // 2
            square = im.crop((left, top, left + size, top + size)).tobytes()
        with self._lock:
            self._squares[size] = square
        return square

    def jpeg(self) -> bytes:
        """A JPEG within ``JPEG_BOX`` (the bytes given, if they were a JPEG already)."""
        if self._encoded is not None and self._encoded[:3] == b"\xff\xd8\xff":
            return self._encoded
        with self._lock:
            if self._jpeg is not None:
                return self._jpeg
        out = OUTPUT_FORMATS["jpeg"]
        with pillow_boundary():
            im = self._rgb(min(JPEG_BOX))
            size, _ = target_size(im.width, im.height, RenderSpec("jpeg", *JPEG_BOX), _ANY_SIDE)
            buf = io.BytesIO()
            fit_frame(im, size, None).save(
                buf, out.pillow, quality=out.default_quality, **out.save.options
            )
        with self._lock:
            self._jpeg = buf.getvalue()
        return self._jpeg

    def once(self, name: str, find: Callable[[], T]) -> T:
        """What ``find`` finds in this copy, found once and kept under ``name``: the pipeline
        detects faces for a smart crop before the labeler runs, and the labeler reuses them.
        A ``find`` that raises keeps nothing (the next caller tries again)."""
        with self._lock:
            if name in self._found:
                found: T = self._found[name]
                return found
        found = find()
        with self._lock:
            self._found.setdefault(name, found)
            kept: T = self._found[name]
            return kept

    def picture(self) -> Image.Image:
        """The pixels in RGB for a detector (faces, text), at least ``JPEG_BOX``'s shorter side
        where the source allows: the reduced copy itself, no further resampling."""
        with pillow_boundary():
            return self._rgb(min(JPEG_BOX))

    def text_picture(self) -> Image.Image:
        """The pixels a text reader reads: the upload's own decoded frame in RGB (alpha
        flattened), or ``picture()`` when this copy was made without it (from bytes)."""
        source = self._text_source
        if source is None:
            return self.picture()
        with pillow_boundary():
            return self._flattened(source)

    def _rgb(self, short: int) -> Image.Image:
        """The pixels in RGB, alpha flattened onto the background, at least ``short`` px on the
        shorter side where the source allows (a JPEG from bytes decodes in draft mode)."""
        im = self._image
        if im is None:
            assert self._encoded is not None
            with open_image(self._encoded) as source:
                if min(source.size) > 2 * short:
                    source.draft("RGB", (short, short))  # JPEG only; other formats ignore it
                source.load()
                im = source.convert("RGBA" if "A" in source.getbands() else "RGB")
        return self._flattened(im)

    def _flattened(self, im: Image.Image) -> Image.Image:
        """``im`` (L, RGB or RGBA, as decoded) in RGB, alpha flattened onto the background."""
        if im.mode == "RGBA":
            return flatten(im, self._background)
        return im if im.mode == "RGB" else im.convert("RGB")
