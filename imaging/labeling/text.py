"""Text in a picture: a cheap look for screen- or page-like text, then Tesseract OCR when likely.

Tesseract (Debian's ``tesseract-ocr``, Apache-2.0, with its English model) runs as a
subprocess, so it holds no memory in the server between uploads; each call is bounded by
OCR_TIMEOUT, and one runs at a time per process. OCR costs 100-300 ms of CPU even on a photo
with nothing to read, so it only runs when ``likely_text`` says so: a picture mostly of flat
colour (screenshots, slides, documents, posters) with rows of sharp, dense edges (lines of
letters), or a page of paper: once uneven light is evened out (each pixel over the brightest
pixel near it), mostly blank paper with a little dark ink in rows of strokes, gaps between the
lines. A page passes as the paper kind and is read evened out (scikit-image's scanned page:
1 word read without that, every line with it). Photos almost never pass either look, so a
photo costs no OCR call at all; the price is that text inside a photo (a street sign) is not
read locally. Cloud Vision's TEXT_DETECTION reads that in production.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from imaging.errors import LabelerUnavailable

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["OCR_SLOTS", "Reading", "TextReader", "likely_text", "text_look"]

log = logging.getLogger(__name__)

#: The pre-check looks at a grey copy no larger than this.
_CHECK_SIDE = 640
#: A "smooth" pixel differs from its right and lower neighbours by at most this.
_SMOOTH_STEP = 4
#: Share of smooth pixels a picture needs to be screenshot-like (photos: 0.4-0.75).
_MIN_SMOOTH = 0.85
#: A sharp edge: this much brighter or darker than the pixel to its left.
_EDGE_STEP = 48
#: A row crosses a line of letters when it has at least this many sharp edges.
_EDGES_PER_TEXT_ROW = 12
#: Text fills some rows and leaves gaps between lines: not every row.
_MAX_TEXT_ROWS = 0.6
#: Paper: its local white is the brightest pixel in a block this wide and the blocks around it
#: (a 24 px window: about two lines of a page's letters at 640 px).
_PAPER_BLOCK = 8
#: Over the paper's local white, paper is at least this bright and ink at most this dark.
_PAPER_LIGHT, _INK_DARK = 0.85, 0.6
#: A page is at least half paper (most photos: 0.05-0.45; flat, empty pictures more) ...
_MIN_PAPER = 0.5
#: ... with a little ink (letters fill 2-30 % of a page; a blank sheet or a cell has less) ...
_INK_SHARE = (0.02, 0.3)
#: ... in rows that cross many strokes (ink/paper changes) ...
_CHANGES_PER_TEXT_ROW = 12
_PAPER_TEXT_ROWS = (0.25, 0.8)
#: ... with blank rows between the lines (photos of texture have none).
_MIN_BLANK_ROWS = 0.1
#: Words Tesseract is less sure of than this (0..100) are left out.
_MIN_CONFIDENCE = 50.0
#: OCR runs at once per process: each Tesseract holds about 40 MB while it runs, and the label
#: pool would otherwise start one per labelling thread.
OCR_SLOTS = threading.BoundedSemaphore(1)
#: Tesseract reads letters best at 20-30 px; the labeler's copy is at most 640 px, so small
#: pictures are enlarged first (measured: 91 % -> 100 % of rendered words read back).
_UPSCALE_BELOW = 1000


@dataclass(frozen=True)
class Reading:
    text: str
    confidence: float  # 0..1, the mean of the kept words' confidences


def likely_text(picture: Image.Image) -> bool:
    """Whether the picture looks like lines of text on a flat background or on paper (a few ms)."""
    return text_look(picture) is not None


def text_look(picture: Image.Image) -> Literal["screen", "paper"] | None:
    """ "screen": lines of text on a flat background; "paper": lines of ink on paper, once the
    light is evened out; None: neither (most photos)."""
    grey = picture.convert("L")
    if max(grey.size) > _CHECK_SIDE:
        grey.thumbnail((_CHECK_SIDE, _CHECK_SIDE))
    pixels = np.asarray(grey, dtype=np.int16)
    if pixels.shape[0] < 2 or pixels.shape[1] < 2:
        return None
    across = np.abs(np.diff(pixels, axis=1))
    down = np.abs(np.diff(pixels, axis=0))
    smooth = float(((across[:-1] <= _SMOOTH_STEP) & (down[:, :-1] <= _SMOOTH_STEP)).mean())
    if smooth >= _MIN_SMOOTH:
        text_rows = (across > _EDGE_STEP).sum(axis=1) >= _EDGES_PER_TEXT_ROW
        if 0 < float(text_rows.mean()) <= _MAX_TEXT_ROWS:
            return "screen"
    return "paper" if _looks_like_a_page(pixels) else None


def _local_white(pixels: NDArray[np.int16]) -> NDArray[np.int16]:
    """The paper's local white behind each pixel: the maximum over its block and the blocks
    around it (a block inside a thick stroke borrows its neighbours' paper)."""
    height, width = pixels.shape
    b = _PAPER_BLOCK
    rows, cols = -(-height // b), -(-width // b)
    padded = np.pad(pixels, ((0, rows * b - height), (0, cols * b - width)), mode="edge")
    # Strided maxima: numpy reduces a short trailing axis slowly, pairs of slices quickly.
    across = padded[:, ::b].copy()
    for k in range(1, b):
        np.maximum(across, padded[:, k::b], out=across)
    blocks = across[::b].copy()
    for k in range(1, b):
        np.maximum(blocks, across[k::b], out=blocks)
    around = np.pad(blocks, 1, mode="edge")
    white = around[:-2, :-2].copy()
    for i, j in ((0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)):
        np.maximum(white, around[i : i + rows, j : j + cols], out=white)
    spread = np.repeat(np.repeat(white, b, axis=0), b, axis=1)[:height, :width]
    return np.maximum(spread, 1)


def _evened(pixels: NDArray[np.int16]) -> NDArray[np.uint8]:
    """Each pixel over the paper's local white, as 0..255: uneven light and a grey scan evened
    out to paper near 255 and ink near 0."""
    levels = pixels.astype(np.int32) * 255 // _local_white(pixels)
    evened: NDArray[np.uint8] = np.clip(levels, 0, 255).astype(np.uint8)
    return evened


def _looks_like_a_page(pixels: NDArray[np.int16]) -> bool:
    white = _local_white(pixels)
    # pixel / white <= 0.6 (ink), >= 0.85 (paper), in integers: 20 x 255 < 2**15
    scaled = pixels * 20
    if float((scaled >= white * round(_PAPER_LIGHT * 20)).mean()) < _MIN_PAPER:
        return False
    ink = scaled <= white * round(_INK_DARK * 20)
    if not _INK_SHARE[0] <= float(ink.mean()) <= _INK_SHARE[1]:
        return False
    changes = np.count_nonzero(ink[:, 1:] != ink[:, :-1], axis=1)
    text_rows = float((changes >= _CHANGES_PER_TEXT_ROW).mean())
    blank_rows = float((~ink.any(axis=1)).mean())
    return _PAPER_TEXT_ROWS[0] <= text_rows <= _PAPER_TEXT_ROWS[1] and blank_rows >= _MIN_BLANK_ROWS


class TextReader:
    """Reads text with the ``tesseract`` command, when the pre-check finds text likely."""

    def __init__(self, *, timeout: float = 3.0, command: str = "tesseract") -> None:
        self.timeout = timeout
        self.command = command
        self.calls = 0  # OCR runs by this reader: what the pre-check saved shows here
        self._calls_lock = threading.Lock()

    def available(self) -> bool:
        return shutil.which(self.command) is not None

    def read(self, picture: Image.Image) -> Reading:
        """The text found, in reading order; empty when the picture is not likely to hold any."""
        look = text_look(picture)
        if look is None:
            return Reading("", 0.0)
        return self.ocr(picture, evened=look == "paper")

    def ocr(self, picture: Image.Image, *, evened: bool = False) -> Reading:
        """Run Tesseract on the picture (no pre-check), with its light evened out first when it
        is a page (``evened``); LabelerUnavailable if it fails."""
        from PIL import Image

        grey = picture.convert("L")
        if evened:
            grey = Image.fromarray(_evened(np.asarray(grey, dtype=np.int16)))
        if max(grey.size) < _UPSCALE_BELOW:
            grey = grey.resize((grey.width * 2, grey.height * 2), Image.Resampling.LANCZOS)
        # Handed over as a PGM, not a PNG: the same pixels, the same words read back, but no
        # compression (a 2048x1280 page: 0.4 ms to write against 54 ms at PNG level 1).
        pgm = io.BytesIO()
        grey.save(pgm, "PPM")
        if not OCR_SLOTS.acquire(timeout=self.timeout):
            raise LabelerUnavailable(f"OCR busy for {self.timeout:g} s")
        with self._calls_lock:
            self.calls += 1
        try:
            done = subprocess.run(
                [self.command, "-", "-", "--psm", "3", "-l", "eng", "tsv"],
                input=pgm.getvalue(),
                capture_output=True,
                timeout=self.timeout,
                check=True,
                # One thread: OCR is one upload's work among several on two cores.
                env={**os.environ, "OMP_THREAD_LIMIT": "1"},
            )
        except subprocess.TimeoutExpired as exc:
            raise LabelerUnavailable(f"OCR took longer than {self.timeout:g} s") from exc
        except (OSError, subprocess.CalledProcessError) as exc:
            raise LabelerUnavailable(f"OCR failed: {exc}") from exc
        finally:
            OCR_SLOTS.release()
        return _parsed(done.stdout.decode("utf-8", "replace"))


def _parsed(tsv: str) -> Reading:
    """Tesseract's TSV (one row per word: block, paragraph, line, ..., confidence, text) as
    lines of text, leaving out the words it is unsure of."""
    lines: dict[tuple[str, str, str], list[str]] = {}
    confidences: list[float] = []
    for row in tsv.splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) != 12 or not cells[11].strip():
            continue
        try:
            confidence = float(cells[10])
        except ValueError:
            continue
        if confidence < _MIN_CONFIDENCE:
            continue
        lines.setdefault((cells[2], cells[3], cells[4]), []).append(cells[11].strip())
        confidences.append(confidence)
    text = "\n".join(" ".join(words) for words in lines.values())
    score = sum(confidences) / len(confidences) / 100 if confidences else 0.0
    return Reading(text, round(score, 4))
