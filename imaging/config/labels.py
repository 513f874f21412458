"""The settings of who names what is in an image, and what is kept of it (group ``labels``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imaging.config.checks import (
    AtLeast,
    Between,
    OneOf,
    SomeOf,
)
from imaging.config.declare import (
    LABELS,
    _choices,
    _keyword,
    setting,
)


@dataclass(frozen=True)
class LabelSettings:
    """Who names what is in an image, and what is kept of it."""

    labeler: str = setting(
        "local",
        "who labels images: the bundled model (`local`), Cloud Vision (`vision`) or nobody",
        LABELS,
        check=OneOf(("local", "vision", "none")),
    )
    label_max_results: int = setting(5, "most labels kept per image", LABELS, check=AtLeast(1))
    label_min_score: float = setting(
        0.15, "labels scoring below this are dropped", LABELS, check=Between(0, 1)
    )
    label_timeout: float = setting(
        10.0, "seconds an upload waits for labels before saving without them", LABELS
    )
    model_cache_dir: Path = setting(  # noqa: RUF009 (a Path is immutable)
        Path("instance/models"), "where the local labeler caches its ONNX graph", LABELS
    )
    local_features: tuple[str, ...] = setting(
        ("faces", "text"),
        "what the local labeler looks for besides its classes: `faces` (`person`/`people` "
        "labels, a count and the boxes; about 3 ms and 13 MB per worker) and `text` (Tesseract "
        "OCR, only on screenshot- or page-like pictures; 100-400 ms in a subprocess when it runs)",
        LABELS,
        check=SomeOf(("faces", "text"), optional=True),
        parse=_choices,
    )
    local_precision: str = setting(
        "int8",
        "the local classifier's arithmetic: `int8` (quantised with the committed calibration; "
        "half the CPU and memory of `float`; on the evaluation photos the same hits, and no "
        "probability moved by more than 0.14) or `float` (float32)",
        LABELS,
        check=OneOf(("int8", "float")),
    )
    ocr_timeout: float = setting(
        8.0,
        "seconds an upload waits for the text in its picture, the wait for the process's one "
        "OCR slot included, before it is saved without it (`text_status: busy` or `timeout`; "
        "`flask relabel --unread` reads it later); the slot is waited for only while twice "
        "`OCR_CPU_SECONDS` would be left for the read",
        LABELS,
        check=Between(0.5, 30, "seconds"),
    )
    ocr_cpu_seconds: int = setting(
        3,
        "CPU seconds one OCR read may use (the tesseract child's RLIMIT_CPU): a busy machine "
        "slows a read without making it cost more, so this, not the wall clock, is what stops "
        "a picture too hard to read (`text_status: cpu`); the 1280x800 screenshot of "
        "`make bench-peers` takes 2.0-2.2 s",
        LABELS,
        check=Between(1, 30, "seconds"),
    )
    vision_features: tuple[str, ...] = setting(
        ("labels", "text", "faces"),
        "what Cloud Vision is asked for in its one call per image: `labels`, `text` "
        "(TEXT_DETECTION) and `faces` (FACE_DETECTION); each is billed per image "
        "([formats and labels](formats-and-labels.md#cost))",
        LABELS,
        check=SomeOf(("labels", "text", "faces")),
        parse=_choices,
    )
    vision_api_endpoint: str = setting(
        "",
        "Cloud Vision endpoint override (`http://...` uses anonymous credentials: for local "
        "stand-ins)",
        LABELS,
    )
    safe_search: bool = setting(
        False, "also ask Vision for SafeSearch, stored in the record", LABELS
    )
    safe_search_hide: str = setting(
        "",
        "hide images at or above this likelihood until an admin approves them",
        LABELS,
        check=OneOf(("POSSIBLE", "LIKELY", "VERY_LIKELY"), bare=True, optional=True),
        parse=_keyword,
    )
    captioner: str = setting(
        "none",
        "who writes a one-sentence caption (alt text, searchable): nobody, or Gemini (`gemini`; "
        "one billed call per new image, beside the labeler)",
        LABELS,
        check=OneOf(("none", "gemini")),
    )
    gemini_model: str = setting("gemini-2.5-flash", "the Gemini model that writes captions", LABELS)
    gemini_api_key: str = setting(
        "",
        "Gemini API key (AI Studio); without one, captions go through Vertex AI in "
        "`GOOGLE_CLOUD_PROJECT` with the service's own credentials",
        LABELS,
    )
    gemini_location: str = setting(
        "global", "the Vertex AI location captions are asked in (without an API key)", LABELS
    )
    caption_endpoint: str = setting(
        "",
        "Gemini endpoint override (a private endpoint; `http://...` is a local stand-in and "
        "gets no real credentials)",
        LABELS,
    )
    caption_timeout: float = setting(
        8.0,
        "seconds an upload waits for its caption before saving without one",
        LABELS,
        check=Between(0.5, 30, "seconds"),
    )
    near_copy_distance: int = setting(
        8,
        "an upload whose perceptual hash is at most this many bits (of 64) from a stored image's "
        "is warned as a near copy; `0` turns the check (and its storage reads) off",
        LABELS,
        check=Between(0, 16),
    )
