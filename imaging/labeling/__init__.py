"""The labeling seam: the Labeler contract, the null labeler, and the mapping from LABELER to one.

A labeler receives the upload's small copy (``imaging.processing.LabelImage``, made from the
pixels already decoded) and reads it in the form it needs: raw RGB pixels for a classifier, a JPEG
for a web API. It returns labels best first. Any failure is ``LabelerUnavailable``: the pipeline
then keeps the upload and records ``label_status: "error"``, so "labeling off" and "labeler down"
are the same simple path.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from imaging.errors import LabelerUnavailable
from imaging.gclients import stand_in_credentials

if TYPE_CHECKING:
    from imaging.config import Settings
    from imaging.processing import LabelImage

log = logging.getLogger(__name__)

__all__ = [
    "MAX_FACES",
    "MAX_TEXT",
    "TEXT_NOT_READ",
    "TEXT_UNREAD",
    "Box",
    "FindsFaces",
    "Label",
    "LabelResult",
    "Labeler",
    "LabelerUnavailable",
    "NullLabeler",
    "ReadsText",
    "build_labeler",
    "convert_local_model",
    "people_labels",
    "text_note",
    "with_findings",
]


@dataclass(frozen=True)
class Label:
    description: str
    score: float  # 0..1
    source: str  # the labeler's name: "local", "vision"


@dataclass(frozen=True)
class Box:
    """A region of the picture as fractions (0..1) of its width and height, with a score."""

    left: float
    top: float
    width: float
    height: float
    score: float


@dataclass(frozen=True)
class LabelResult:
    """What a labeler found; ``safe_search`` maps a category to a likelihood name when asked for.

    ``people`` is how many faces were found; ``faces`` holds the best of their boxes (at most
    ``MAX_FACES``), for crops. ``text`` is the text read in the picture (at most ``MAX_TEXT``
    characters), ``""`` when none was found or looked for; ``text_status`` says which:
    ``ok`` (text found), ``empty`` (looked for, none found), ``off`` (not looked for), or why
    the text was not read (``imaging.labeling.text.TEXT_UNREAD``: the words may be there).
    """

    labels: tuple[Label, ...] = ()
    safe_search: dict[str, str] = field(default_factory=dict)
    faces: tuple[Box, ...] = ()
    people: int = 0
    text: str = ""
    text_status: str = "off"


#: Face boxes kept per image: enough for a group photo's crop, small enough for every record.
MAX_FACES = 20
#: Characters of recognised text kept per image.
MAX_TEXT = 1000
#: Why a picture's text was not read, as ``text_status`` says it (the words may be there, and
#: ``flask relabel --unread`` reads them), with what the pages say of it: ``busy`` (no OCR slot
#: came free in time), ``timeout`` (the read ran past OCR_TIMEOUT), ``cpu`` (it needed more
#: than OCR_CPU_SECONDS of CPU), ``failed`` (tesseract, or the labeler as a whole, failed).
TEXT_NOT_READ = {
    "busy": "the text reader was busy with other uploads",
    "timeout": "reading it took longer than an upload waits",
    "cpu": "reading it needed more CPU than one read may use",
    "failed": "the text reader failed",
}
TEXT_UNREAD = tuple(TEXT_NOT_READ)


def text_note(text_status: str) -> str:
    """What a page says of a record's text status: a sentence when the text was not read."""
    reason = TEXT_NOT_READ.get(text_status)
    if reason is None:
        return ""
    return f"The text in this picture was not read: {reason}. A relabel run reads it later."


def people_labels(faces: tuple[Box, ...], source: str) -> tuple[Label, ...]:
    """``person`` for one face, ``people`` for several, scored by the surest face."""
    if not faces:
        return ()
    word = "person" if len(faces) == 1 else "people"
    return (Label(word, max(face.score for face in faces), source),)


def with_findings(
    result: LabelResult,
    *,
    faces: tuple[Box, ...] = (),
    text: str = "",
    text_score: float = 0.0,
    text_status: str | None = None,
    source: str,
) -> LabelResult:
    """``result`` with the faces and text found: their labels first, the boxes and text kept
    within ``MAX_FACES`` and ``MAX_TEXT``; ``text_status`` as given, else ``ok`` or ``empty``
    by whether any text was found."""
    text = "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())
    text = text[:MAX_TEXT]
    found = people_labels(faces, source)
    if text:
        found += (Label("text", text_score, source),)
    taken = {label.description for label in found}
    labels = found + tuple(label for label in result.labels if label.description not in taken)
    if text_status is None:
        text_status = "ok" if text else "empty"
    return replace(
        result,
        labels=labels,
        faces=faces[:MAX_FACES],
        people=len(faces),
        text=text,
        text_status=text_status,
    )


class Labeler(Protocol):
    name: str

    def label(self, image: LabelImage) -> LabelResult:
        """Labels for an image, best first; raise LabelerUnavailable on any failure."""

    def check(self) -> None:
        """Raise LabelerUnavailable unless ready to label (readiness probe)."""


@runtime_checkable
class FindsFaces(Protocol):
    """A labeler that can find faces on its own copy before labelling it (the local one with
    its detector): the pipeline asks it for a smart crop, and ``label`` reuses the boxes."""

    def faces_in(self, image: LabelImage) -> tuple[Box, ...]:
        """Every face found, best first (``()`` without a detector); LabelerUnavailable on
        failure. Found once per image: a later call, ``label``'s too, reads the same boxes."""


@runtime_checkable
class ReadsText(Protocol):
    """A labeler that may read the text in a picture: when it fails as a whole, the record says
    the text was not read (``text_status: failed``), not that it was never looked for."""

    reads_text: bool


class NullLabeler:
    """LABELER=none: labels nothing, never fails."""

    name = "none"

    def label(self, image: LabelImage) -> LabelResult:
        return LabelResult()

    def check(self) -> None:
        return None


def build_labeler(settings: Settings, **kwargs: Any) -> Labeler:
    """The labeler LABELER names, built once per process."""
    if settings.labeler == "local":
        from imaging.labeling.faces import FaceDetector
        from imaging.labeling.local import LocalLabeler
        from imaging.labeling.text import TextReader

        reader = None
        if "text" in settings.local_features:
            reader = TextReader(timeout=settings.ocr_timeout, cpu_seconds=settings.ocr_cpu_seconds)
            if not reader.available():
                log.warning("LOCAL_FEATURES has text, but no tesseract command: text is not read")
                reader = None
        return LocalLabeler(
            cache_dir=settings.model_cache_dir,
            max_results=settings.label_max_results,
            min_score=settings.label_min_score,
            faces=FaceDetector() if "faces" in settings.local_features else None,
            reader=reader,
            precision=settings.local_precision,
        )
    if settings.labeler == "vision":
        from imaging.labeling.vision import VisionLabeler

        return VisionLabeler(
            endpoint=settings.vision_api_endpoint,
            max_results=settings.label_max_results,
            min_score=settings.label_min_score,
            timeout=settings.label_timeout,
            safe_search=settings.safe_search,
            features=settings.vision_features,
            **{**stand_in_credentials(settings.vision_api_endpoint), **kwargs},
        )
    return NullLabeler()


def convert_local_model(cache_dir: Path, precision: str = "int8", *, check: bool = True) -> bool:
    """Convert the local labeler's model into ``cache_dir`` (or find it there), as the image
    build does, in a child process (``python -m imaging.labeling.local``), and say whether the
    child succeeded (``check``: raise ``CalledProcessError`` if it did not). A child, so neither
    the converter (onnx, the quantiser: about 100 MB) nor onnxruntime's pages are left in this
    process: a server's master forks its workers from itself, and gives back the pages its own
    load mapped only where no other process maps them (gunicorn.conf.py)."""
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    argv = [sys.executable, "-m", "imaging.labeling.local", str(cache_dir)]
    done = subprocess.run(
        [*argv, "--precision", precision], check=check, env={**os.environ, "PYTHONPATH": path}
    )
    return done.returncode == 0
