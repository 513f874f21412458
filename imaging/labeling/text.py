"""Text in a picture: a cheap look for screenshot-like text, then Tesseract OCR when it is likely.

Tesseract (Debian's ``tesseract-ocr``, Apache-2.0, with its English model) runs as a
subprocess, so it holds no memory in the server between uploads; each call is bounded by
OCR_TIMEOUT, and one runs at a time per process. OCR costs 100-300 ms of CPU even on a photo
with nothing to read, so it only runs when ``likely_text`` says so: a picture mostly of flat
colour (screenshots, slides, documents, posters) with rows of sharp, dense edges (lines of
letters). Photos almost never pass it, so a photo costs no OCR call at all; the price is that
text inside a photo (a street sign) is not read locally. Cloud Vision's TEXT_DETECTION reads
that in production.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from imaging.errors import LabelerUnavailable

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["OCR_SLOTS", "Reading", "TextReader", "likely_text"]

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
    """Whether the picture looks like lines of text on a flat background (about 1-2 ms)."""
    grey = picture.convert("L")
    if max(grey.size) > _CHECK_SIDE:
        grey.thumbnail((_CHECK_SIDE, _CHECK_SIDE))
    pixels = np.asarray(grey, dtype=np.int16)
    if pixels.shape[0] < 2 or pixels.shape[1] < 2:
        return False
    across = np.abs(np.diff(pixels, axis=1))
    down = np.abs(np.diff(pixels, axis=0))
    smooth = float(((across[:-1] <= _SMOOTH_STEP) & (down[:, :-1] <= _SMOOTH_STEP)).mean())
    if smooth < _MIN_SMOOTH:
        return False
    text_rows = (across > _EDGE_STEP).sum(axis=1) >= _EDGES_PER_TEXT_ROW
    return 0 < float(text_rows.mean()) <= _MAX_TEXT_ROWS


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
        if not likely_text(picture):
            return Reading("", 0.0)
        return self.ocr(picture)

    def ocr(self, picture: Image.Image) -> Reading:
        """Run Tesseract on the picture (no pre-check); LabelerUnavailable if it fails."""
        from PIL import Image

        grey = picture.convert("L")
        if max(grey.size) < _UPSCALE_BELOW:
            grey = grey.resize((grey.width * 2, grey.height * 2), Image.Resampling.LANCZOS)
        png = io.BytesIO()
        grey.save(png, "PNG", compress_level=1)
        if not OCR_SLOTS.acquire(timeout=self.timeout):
            raise LabelerUnavailable(f"OCR busy for {self.timeout:g} s")
        with self._calls_lock:
            self.calls += 1
        try:
            done = subprocess.run(
                [self.command, "-", "-", "--psm", "3", "-l", "eng", "tsv"],
                input=png.getvalue(),
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
