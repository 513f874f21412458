"""The labeling seam: the Labeler contract, the null labeler, and the mapping from LABELER to one.

A labeler receives the upload's small copy (``imaging.processing.LabelImage``, made from the
pixels already decoded) and reads it in the form it needs: raw RGB pixels for a classifier, a JPEG
for a web API. It returns labels best first. Any failure is ``LabelerUnavailable``: the pipeline
then keeps the upload and records ``label_status: "error"``, so "labeling off" and "labeler down"
are the same simple path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from imaging.errors import LabelerUnavailable
from imaging.gclients import stand_in_credentials

if TYPE_CHECKING:
    from imaging.config import Settings
    from imaging.processing import LabelImage

__all__ = ["Label", "LabelResult", "Labeler", "LabelerUnavailable", "NullLabeler", "build_labeler"]


@dataclass(frozen=True)
class Label:
    description: str
    score: float  # 0..1
    source: str  # the labeler's name: "local", "vision"


@dataclass(frozen=True)
class LabelResult:
    """What a labeler found; ``safe_search`` maps a category to a likelihood name when asked for."""

    labels: tuple[Label, ...] = ()
    safe_search: dict[str, str] = field(default_factory=dict)


class Labeler(Protocol):
    name: str

    def label(self, image: LabelImage) -> LabelResult:
        """Labels for an image, best first; raise LabelerUnavailable on any failure."""

    def check(self) -> None:
        """Raise LabelerUnavailable unless ready to label (readiness probe)."""


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
        from imaging.labeling.local import LocalLabeler

        return LocalLabeler(
            cache_dir=settings.model_cache_dir,
            max_results=settings.label_max_results,
            min_score=settings.label_min_score,
        )
    if settings.labeler == "vision":
        from imaging.labeling.vision import VisionLabeler

        return VisionLabeler(
            endpoint=settings.vision_api_endpoint,
            max_results=settings.label_max_results,
            min_score=settings.label_min_score,
            timeout=settings.label_timeout,
            safe_search=settings.safe_search,
            **{**stand_in_credentials(settings.vision_api_endpoint), **kwargs},
        )
    return NullLabeler()
