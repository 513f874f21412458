"""The settings of what one upload may be and what its renditions are (``limits``, ``output``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from imaging.config.checks import (
    AtLeast,
    Between,
    KnownFormats,
    OneOf,
)
from imaging.config.declare import (
    _INTERNAL,
    DEFAULT_PRESETS,
    LIMITS,
    OUTPUT,
    WEBP_MAX_SIDE,
    Preset,
    setting,
)
from imaging.formats import DEFAULT_EFFORT, EFFORTS, parse_format_list


@dataclass(frozen=True)
class LimitSettings:
    """What one upload may be, and how much work a process takes on at once."""

    max_upload_mb: int = setting(
        20,
        "largest file accepted (below Cloud Run's 32 MiB request cap)",
        LIMITS,
        check=Between(1, 1024),
    )
    max_pixels: int = setting(
        50_000_000,
        "largest image, in pixels, checked before decoding",
        LIMITS,
        check=AtLeast(1, "positive"),
    )
    max_side: int = setting(
        WEBP_MAX_SIDE,
        "longest side, in pixels (WebP's own limit)",
        LIMITS,
        check=Between(1, WEBP_MAX_SIDE, "(WebP's limit)"),
    )
    max_output_side: int = setting(
        4096,
        "longest side of any output; bigger sources are scaled down to it (memory: see the "
        "benchmarks)",
        LIMITS,
        check=Between(1, WEBP_MAX_SIDE),
    )
    max_frames: int = setting(
        100, "most frames in an animation", LIMITS, check=AtLeast(1, "positive")
    )
    max_files_per_request: int = setting(
        10,
        "most files one upload request may carry (page form, `POST /api/images`, `/convert`); "
        "more is a 413 before any conversion",
        LIMITS,
        # Werkzeug's MAX_FORM_PARTS (64) bounds the parts of any form anyway.
        check=Between(1, 60),
    )
    max_bulk_images: int = setting(
        100,
        "most images one bulk request may name (`POST /api/images/delete`, "
        "`GET /api/images.zip`); more is a 400 before any image is read",
        LIMITS,
        check=Between(1, 1000),
    )
    stats_max_records: int = setting(
        5000,
        "most records the admin's stats page reads (newest first); past it the page says it "
        "counted only these",
        LIMITS,
        check=Between(1, 1_000_000),
    )
    svg_trace_side: int = setting(
        1024,
        "longest side of the copy an `svg` output is traced from (the tracer's time grows with "
        "it); the SVG still declares the size asked for",
        LIMITS,
        check=Between(16, 4096),
    )
    svg_max_kb: int = setting(
        2048,
        "largest traced SVG, in KiB; a picture that traces into more (a photo) is a 422",
        LIMITS,
        check=Between(1, 65536),
    )
    # Not a variable: tests and the benchmarks change the boxes.
    presets: Mapping[str, Preset] = field(
        default_factory=lambda: dict(DEFAULT_PRESETS), metadata={_INTERNAL: True}
    )
    conversion_slots: int = setting(
        0,
        "conversions running at once per process; `0`: one per CPU core",
        LIMITS,
        shown="`0` (= CPU cores; under gunicorn, 2 × cores ÷ workers)",
    )
    conversion_wait: float = setting(
        10.0, "seconds a request may wait for a slot before 503", LIMITS
    )
    upload_deadline: float = setting(
        30.0,
        "seconds one file's upload may take in all, from its first check to its record "
        "(storage retries and waiting for an identical upload included), before 503; the "
        "clean-up after a failure gets 2 s more",
        LIMITS,
        check=Between(1, 600, "seconds"),
    )


@dataclass(frozen=True)
class OutputSettings:
    """What the renditions are when a request does not say."""

    default_formats: tuple[str, ...] = setting(
        ("webp",),
        "output formats when a request names none",
        OUTPUT,
        check=KnownFormats(),
        parse=parse_format_list,
    )
    keep_copyright: bool = setting(
        False,
        "keep EXIF Artist and Copyright in variants (everything else is always removed)",
        OUTPUT,
    )
    background: str = setting(
        "#ffffff", "colour transparent pixels are flattened onto for JPEG", OUTPUT
    )
    encoder_effort: str = setting(
        DEFAULT_EFFORT,
        "encoder effort for the variants: `fast` (WebP method 2: about 2x less CPU for 3-4 % "
        "more bytes) or `smallest` (the slower settings, smallest files); thumbnails are always "
        "`fast`",
        OUTPUT,
        check=OneOf(EFFORTS),
    )
    resampler: str = setting(
        "vips",
        "what scales the variants down: `vips` (libvips' lanczos3, about half the CPU of "
        "Pillow's Lanczos, same sharpness; Pillow's where libvips cannot load) or `pillow`",
        OUTPUT,
        check=OneOf(("vips", "pillow")),
    )
    smart_crop: str = setting(
        "on",
        "where a `fit=cover` crop's window goes: `on` keeps the faces found, else the part with "
        "the most detail (an owner's `focus` wins either way); `off` always cuts the centre",
        OUTPUT,
        check=OneOf(("on", "off")),
    )
