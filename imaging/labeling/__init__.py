"""The labeling seam: the Labeler contract, the null labeler, and the mapping from LABELER to one.

A labeler receives the upload's small copy (``imaging.processing.LabelImage``, made from the
pixels already decoded) and reads it in the form it needs: raw RGB pixels for a classifier, a JPEG
for a web API. It returns labels best first. Any failure is ``LabelerUnavailable``: the pipeline
then keeps the upload and records ``label_status: "error"``, so "labeling off" and "labeler down"
are the same simple path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
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
    "Box",
    "FindsFaces",
    "Label",
    "LabelResult",
    "Labeler",
    "LabelerUnavailable",
    "NullLabeler",
    "build_labeler",
    "people_labels",
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
    characters), ``""`` when none was found or looked for.
    """

    labels: tuple[Label, ...] = ()
    safe_search: dict[str, str] = field(default_factory=dict)
    faces: tuple[Box, ...] = ()
    people: int = 0
    text: str = ""


#: Face boxes kept per image: enough for a group photo's crop, small enough for every record.
MAX_FACES = 20
#: Characters of recognised text kept per image.
MAX_TEXT = 1000


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
    source: str,
) -> LabelResult:
    """``result`` with the faces and text found: their labels first, the boxes and text kept
    within ``MAX_FACES`` and ``MAX_TEXT``."""
    text = "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())
    text = text[:MAX_TEXT]
    found = people_labels(faces, source)
    if text:
        found += (Label("text", text_score, source),)
    taken = {label.description for label in found}
    labels = found + tuple(label for label in result.labels if label.description not in taken)
    return replace(result, labels=labels, faces=faces[:MAX_FACES], people=len(faces), text=text)


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
            reader = TextReader(timeout=settings.ocr_timeout)
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
