"""Text in a picture: a cheap look for screen- or page-like text, then Tesseract OCR when likely.

Tesseract (Debian's ``tesseract-ocr``, Apache-2.0, with its English model) runs as a
subprocess, so it holds no memory in the server between uploads; one runs at a time per process.
A read is bounded twice: by the CPU it may use (OCR_CPU_SECONDS, the child's RLIMIT_CPU: a busy
machine slows a read down but does not make it cost more, so a read killed for being slow would
waste what it had spent), and by the wall-clock time an upload waits for its text, the wait for
the slot included (OCR_TIMEOUT). A read that does not happen says why (``TextNotRead.reason``),
and the record keeps that as its ``text_status``, so ``flask relabel --unread`` reads it later.
OCR costs 100-300 ms of CPU even on a photo with nothing to read, so it only runs when
``likely_text`` says so: a picture mostly of flat colour (screenshots, slides, documents,
posters) with rows of sharp, dense edges (lines of letters), or a page of paper: once uneven
light is evened out (each pixel over the brightest pixel near it), mostly blank paper with a
little dark ink in rows of strokes, gaps between the lines. A page passes as the paper kind
and is read evened out (scikit-image's scanned page: 1 word read without that, every line with
it). Photos almost never pass either look, so a photo costs no OCR call at all; the price is
that text inside a photo (a street sign) is not read locally. Cloud Vision's TEXT_DETECTION
reads that in production.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import resource
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from imaging.errors import LabelerUnavailable
from imaging.labeling import TEXT_UNREAD

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "OCR_SLOTS",
    "Reading",
    "TextNotRead",
    "TextReader",
    "likely_text",
    "text_look",
]

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
#: Tesseract reads letters best at 20-30 px: small pictures are enlarged first (measured on the
#: labelers' 640 px copies: 91 % -> 100 % of rendered words read back) ...
_UPSCALE_BELOW = 1000
#: ... and large ones box-reduced by a whole factor to at most this side (a 12 MP page photo
#: would cost many seconds of CPU; a 2880x1800 screenshot is read at its 1440x900 logical size).
_MAX_READ_SIDE = 2560
#: The wall-clock time a read that starts is left, per second of its CPU limit (at least).
_WALL_PER_CPU = 2
#: What a read given a deadline leaves of it: the labeler's result still has to reach the
#: pipeline (parsing the TSV, composing the labels).
_HAND_ON = 0.5


class TextNotRead(LabelerUnavailable):
    """The text reader did not read the picture; ``reason`` is one of ``TEXT_UNREAD``."""

    def __init__(self, reason: str, message: str) -> None:
        assert reason in TEXT_UNREAD
        super().__init__(message)
        self.reason = reason


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
    """Reads text with the ``tesseract`` command, when the pre-check finds text likely.

    ``timeout``: wall-clock seconds one read may take, the wait for the process's OCR slot
    included; ``cpu_seconds``: the CPU time the read itself may use. The slot is waited for only
    while ``_WALL_PER_CPU`` times ``cpu_seconds`` would be left, so a read that starts can
    use its whole CPU limit on half a core: a read killed for the wall clock wasted its CPU,
    while one that never started cost nothing (both are recorded, and read again later).
    """

    def __init__(
        self, *, timeout: float = 8.0, cpu_seconds: float = 3.0, command: str = "tesseract"
    ) -> None:
        self.timeout = timeout
        self.cpu_seconds = cpu_seconds
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

    def ocr(
        self, picture: Image.Image, *, evened: bool = False, deadline: float | None = None
    ) -> Reading:
        """Run Tesseract on the picture (no pre-check), with its light evened out first when it
        is a page (``evened``), done by ``deadline`` (``time.monotonic()``) when one is given;
        TextNotRead (a LabelerUnavailable) with the reason if it did not read it."""
        started = time.monotonic()
        budget = self.timeout
        if deadline is not None:  # the labels are collected then: leave time to hand them on
            budget = min(budget, deadline - _HAND_ON - started)
        pgm = _prepared(picture, evened=evened)
        wait = max(0.0, budget - _WALL_PER_CPU * self.cpu_seconds - (time.monotonic() - started))
        if not OCR_SLOTS.acquire(timeout=wait):
            raise TextNotRead("busy", f"OCR busy for {wait:.1f} s")
        with self._calls_lock:
            self.calls += 1
        try:
            left = budget - (time.monotonic() - started)
            if left <= 0:
                raise TextNotRead("timeout", "no time was left to read the text")
            return _parsed(self._run(pgm, wall=left))
        finally:
            OCR_SLOTS.release()

    def _run(self, pgm: bytes, *, wall: float) -> str:
        """Tesseract's TSV for ``pgm``, the child limited to ``cpu_seconds`` of CPU (it gets
        SIGXCPU past it, SIGKILL a second later) and to ``wall`` seconds."""
        try:
            child = subprocess.Popen(
                [self.command, "-", "-", "--psm", "3", "-l", "eng", "tsv"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                # One thread: OCR is one upload's work among several on two cores.
                env={**os.environ, "OMP_THREAD_LIMIT": "1"},
            )
        except OSError as exc:
            raise TextNotRead("failed", f"OCR failed: {exc}") from exc
        cpu = max(1, math.ceil(self.cpu_seconds))  # RLIMIT_CPU counts whole seconds
        # Set right after the start, not in a preexec_fn (unsafe with threads): the limit counts
        # the CPU the child used before it was set too. A child already gone says how it went.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            resource.prlimit(child.pid, resource.RLIMIT_CPU, (cpu, cpu + 1))
            resource.prlimit(child.pid, resource.RLIMIT_CORE, (0, 0))  # SIGXCPU dumps no core
        try:
            out, err = child.communicate(pgm, timeout=wall)
        except subprocess.TimeoutExpired as exc:
            _stop(child)
            raise TextNotRead("timeout", f"OCR took longer than {wall:.1f} s") from exc
        except OSError as exc:  # a broken pipe: the child died while reading its input
            _stop(child)
            raise TextNotRead("failed", f"OCR failed: {exc}") from exc
        if child.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
            raise TextNotRead("cpu", f"OCR needed more than {cpu} s of CPU")
        if child.returncode != 0:
            detail = err.decode("utf-8", "replace").strip()[-200:]
            raise TextNotRead("failed", f"OCR failed (exit {child.returncode}): {detail}")
        return out.decode("utf-8", "replace")


def _stop(child: subprocess.Popen[bytes]) -> None:
    """Kill a tesseract child and reap it. Its input pipe is closed here: a page bigger than
    the pipe's buffer (a PGM of the screenshot is 1 MB) may be half written when the wall
    clock runs out, and a second ``communicate()`` would leave that pipe open."""
    child.kill()
    if child.stdin is not None:
        with contextlib.suppress(OSError):
            child.stdin.close()
    child.communicate()


def _prepared(picture: Image.Image, *, evened: bool) -> bytes:
    """The picture as the PGM Tesseract reads: grey, evened out for a page, enlarged when
    small and box-reduced when large."""
    from PIL import Image

    grey = picture.convert("L")
    factor = -(-max(grey.size) // _MAX_READ_SIDE)
    if factor > 1:
        grey = grey.reduce(factor)
    if evened:
        grey = Image.fromarray(_evened(np.asarray(grey, dtype=np.int16)))
    if max(grey.size) < _UPSCALE_BELOW:
        grey = grey.resize((grey.width * 2, grey.height * 2), Image.Resampling.LANCZOS)
    # A PGM, not a PNG: the same pixels, the same words read back, but no compression
    # (a 2048x1280 page: 0.4 ms to write against 54 ms at PNG level 1).
    pgm = io.BytesIO()
    grey.save(pgm, "PPM")
    return pgm.getvalue()


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
