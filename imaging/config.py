"""Settings: every knob of the app, declared once with its meaning, typed and validated at start-up.

Each field is one environment variable, declared with ``setting(default, meaning, group, ...)``:
its allowed values are a ``Check`` beside it, the rules between settings are ``RULES``, and
docs/configuration.md is generated from these declarations (``python -m imaging.config``).
``Settings.from_env`` is the only place that reads the environment; everything else receives a
``Settings`` value, so tests build exactly the configuration they need.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from limits import parse_many

from imaging.errors import ImagingError
from imaging.formats import DEFAULT_EFFORT, EFFORTS, OUTPUT_FORMATS, parse_format_list


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message says which and why."""


#: The per-client upload limit on Cloud Run when RATE_LIMIT is not set at all.
PRODUCTION_RATE_LIMIT = "30/minute"

#: WebP cannot encode a side longer than this, so it caps MAX_SIDE.
WEBP_MAX_SIDE = 16383


@dataclass(frozen=True)
class Preset:
    """A named box an image is fitted into (the gallery thumbnail, the labeler's copy, ...)."""

    width: int
    height: int
    fit: str = "contain"


DEFAULT_PRESETS: Mapping[str, Preset] = {
    "thumb": Preset(480, 480, "contain"),
    "medium": Preset(1024, 1024, "contain"),
    "large": Preset(2048, 2048, "contain"),
    # Cloud Vision recommends about 640x480 for label detection; the local model needs 224.
    "label": Preset(640, 640, "contain"),
}

#: The groups settings are documented in, in the docs' order, each with what it is about.
GROUPS: Mapping[str, str] = {
    "limits": "What one upload may be, and how much work a process takes on at once.",
    "output": "What the renditions are when a request does not say.",
    "storage": "Where images and their records are kept.",
    "labels": "Who names what is in an image, and what is kept of it.",
    "security": "Who may upload, delete and approve, and how often.",
    "direct uploads": "Large files sent by the browser straight to the bucket.",
    "events": "Conversions started by storage events and Cloud Tasks.",
    "ops": "Serving, logs, traces and maintenance.",
}


# -- allowed values, as data ---------------------------------------------------------------


class Check(Protocol):
    """The values one setting may take: what is wrong with a value, and how the docs say it."""

    def problems(self, env: str, value: Any) -> list[str]: ...

    def allowed(self) -> str: ...


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _either(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


@dataclass(frozen=True)
class OneOf:
    """One of ``values``; ``bare`` writes keywords (DEBUG, LIKELY) without quotes."""

    values: tuple[str, ...]
    bare: bool = False
    optional: bool = False  # empty is allowed too: the feature is off

    def problems(self, env: str, value: Any) -> list[str]:
        if value in self.values or (self.optional and not value):
            return []
        shown = list(self.values) if self.bare else [repr(v) for v in self.values]
        return [f"{env} must be {_either(shown)}"]

    def allowed(self) -> str:
        words = [f"`{v}`" for v in self.values] + (["empty (off)"] if self.optional else [])
        return _either(words)


@dataclass(frozen=True)
class Between:
    """A number from ``low`` to ``high``, both included; ``unit`` ends the message."""

    low: float
    high: float
    unit: str = ""

    def problems(self, env: str, value: Any) -> list[str]:
        if self.low <= value <= self.high:
            return []
        unit = f" {self.unit}" if self.unit else ""
        return [f"{env} must be between {_number(self.low)} and {_number(self.high)}{unit}"]

    def allowed(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{_number(self.low)} to {_number(self.high)}{unit}"


@dataclass(frozen=True)
class AtLeast:
    """A number no smaller than ``low``; ``words`` says it when "at least N" reads badly."""

    low: float
    words: str = ""

    def problems(self, env: str, value: Any) -> list[str]:
        if value >= self.low:
            return []
        if self.words:
            return [f"{env} must be {self.words}"]
        if self.low == 0:
            return [f"{env} must not be negative"]
        return [f"{env} must be at least {_number(self.low)}"]

    def allowed(self) -> str:
        return f"{_number(self.low)} or more"


@dataclass(frozen=True)
class Shaped:
    """Empty (off), or text that passes ``test``: it ``must be`` this, as the docs ``show``."""

    test: Callable[[str], bool]
    must_be: str
    show: str

    def problems(self, env: str, value: Any) -> list[str]:
        return [f"{env} must be {self.must_be}"] if value and not self.test(value) else []

    def allowed(self) -> str:
        return self.show


@dataclass(frozen=True)
class SomeOf:
    """A comma-separated choice among ``values``; ``optional``: none at all is allowed too."""

    values: tuple[str, ...]
    optional: bool = False

    def problems(self, env: str, value: Any) -> list[str]:
        unknown = [word for word in value if word not in self.values]
        if unknown:
            return [f"{env} has unknown values: {', '.join(unknown)}"]
        if not value and not self.optional:
            return [f"{env} must name at least one of {', '.join(self.values)}"]
        return []

    def allowed(self) -> str:
        words = ", ".join(f"`{v}`" for v in self.values)
        return f"comma-separated, from {words}" + (", or `none`" if self.optional else "")


@dataclass(frozen=True)
class KnownFormats:
    """At least one format, each one the registry can write."""

    def problems(self, env: str, value: Any) -> list[str]:
        if not value:
            return [f"{env} must name at least one format"]
        unknown = [f for f in value if f not in OUTPUT_FORMATS]
        return [f"{env} has unknown formats: {', '.join(unknown)}"] if unknown else []

    def allowed(self) -> str:
        return "comma-separated, from " + ", ".join(f"`{name}`" for name in OUTPUT_FORMATS)


def _is_url(value: str) -> bool:
    return value.startswith(("https://", "http://"))


def _is_rate_limit(value: str) -> bool:
    try:
        return bool(parse_many(value))
    except ValueError:
        return False


#: The storages flask-limiter may count in here: one process, or Redis shared by all.
LIMITER_STORAGE_SCHEMES = ("memory://", "redis://", "rediss://")


def _is_limiter_storage(value: str) -> bool:
    return value == "memory://" or (
        value.startswith(LIMITER_STORAGE_SCHEMES[1:]) and len(value.split("://", 1)[1]) > 0
    )


def _is_origin(value: str) -> bool:
    scheme, _, rest = value.partition("://")
    host = rest.removesuffix("/")
    return scheme in ("https", "http") and bool(host) and not any(c in host for c in "/?#@ ")


def _is_queue_name(value: str) -> bool:
    parts = value.split("/")
    return (
        len(parts) == 6 and parts[0::2] == ["projects", "locations", "queues"] and "" not in parts
    )


# -- reading values from text ----------------------------------------------------------------


def _boolean(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be a boolean (1/0, true/false), got {raw!r}")


def _whole(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"must be a whole number, got {raw!r}") from None


def _decimal(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"must be a number, got {raw!r}") from None


def _words(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


#: How a value is read from its text, by the type of its default (bool before int: it is one),
#: with how the docs describe such values.
READERS: tuple[tuple[type, Callable[[str], Any], str], ...] = (
    (bool, _boolean, "`1` or `0` (also true/false, yes/no, on/off)"),
    (int, _whole, "whole number"),
    (float, _decimal, "number"),
    (Path, Path, "path"),
    (tuple, _words, "comma-separated list"),
    (str, str, ""),
)


def _reader(default: object) -> tuple[Callable[[str], Any], str]:
    for kind, read, described in READERS:
        if isinstance(default, kind):
            return read, described
    raise TypeError(f"no reader for a {type(default).__name__} setting")


# -- declarations --------------------------------------------------------------------------


@dataclass(frozen=True)
class Definition:
    """One setting as declared: its variable, default, meaning, group and allowed values."""

    default: Any
    doc: str
    group: str
    env: str = ""  # the variable; the field's name in upper case unless declared otherwise
    name: str = ""  # the field's name, filled in from the dataclass
    shown: str = ""  # the default as the docs show it, when the value alone would mislead
    allows: str = ""  # the allowed values as the docs say them, when check and type cannot
    check: Check | None = None
    parse: Callable[[str], Any] | None = None  # reads the variable's text; by type if None

    def read(self, raw: str) -> Any:
        return (self.parse or _reader(self.default)[0])(raw)

    def shown_default(self) -> str:
        if self.shown:
            return self.shown
        value = self.default
        if isinstance(value, bool):
            return f"`{int(value)}`"
        if isinstance(value, Path):
            return f"`{value}`" if value.is_absolute() else f"`./{value}`"
        if isinstance(value, float):
            return f"`{_number(value)}`"
        if isinstance(value, tuple):
            return f"`{','.join(value)}`" if value else ""
        return f"`{value}`" if value != "" else ""

    def allowed(self) -> str:
        if self.allows:
            return self.allows
        return self.check.allowed() if self.check else _reader(self.default)[1]


_DEFINITION = "definition"
_INTERNAL = "internal"
T = TypeVar("T")


def setting(
    default: T,
    doc: str,
    group: str,
    *,
    check: Check | None = None,
    env: str = "",
    shown: str = "",
    allows: str = "",
    parse: Callable[[str], Any] | None = None,
) -> T:
    """Declare a setting: its default, one line of meaning, its group and its allowed values."""
    definition = Definition(
        default, doc, group, env=env, shown=shown, allows=allows, check=check, parse=parse
    )
    declared: T = field(default=default, metadata={_DEFINITION: definition})
    return declared


def _choices(raw: str) -> tuple[str, ...]:
    """``'Faces, text'`` -> ``('faces', 'text')``; ``'none'`` -> ``()`` (an empty variable
    keeps the default, so "none at all" needs a word)."""
    words = _words(raw.lower())
    return () if words == ("none",) else words


def _keyword(raw: str) -> str:
    return raw.upper()


def _present(raw: str) -> bool:
    return True  # any value: Cloud Run sets K_SERVICE to the service's name


LIMITS, OUTPUT, STORAGE, LABELS = "limits", "output", "storage", "labels"
SECURITY, DIRECT, EVENTS, OPS = "security", "direct uploads", "events", "ops"


@dataclass(frozen=True)
class Settings:
    host: str = setting("127.0.0.1", "address `make run` listens on", OPS)
    port: int = setting(8080, "port to listen on (Cloud Run sets it)", OPS)
    secret_key: str = setting(
        "",
        "signs sessions and CSRF tokens",
        SECURITY,
        shown="generated into `instance/secret_key`",
    )
    storage_backend: str = setting(
        "local",
        "where images and records live: files under `MEDIA_ROOT` (`local`) or a bucket (`gcs`)",
        STORAGE,
        check=OneOf(("local", "gcs")),
    )
    media_root: Path = setting(  # noqa: RUF009 (a Path is immutable)
        Path("instance/media"), "where LocalStore keeps images and the catalog", STORAGE
    )
    min_free_disk_mb: int = setting(
        64,
        "free space LocalStore's disk must keep; below it `/readyz` answers 503 "
        "(a full disk fails uploads part-way)",
        STORAGE,
        check=AtLeast(0),
    )
    gcs_bucket: str = setting(
        "",
        "the private bucket for `STORAGE_BACKEND=gcs`: records, markers, held-back images, "
        "direct uploads, everything but the public variants (public access prevention on)",
        STORAGE,
    )
    gcs_public_bucket: str = setting(
        "",
        "the public bucket for `STORAGE_BACKEND=gcs`: approved variants (`img/`) only, readable "
        "by anyone object by object (`roles/storage.legacyObjectReader`, no listing)",
        STORAGE,
    )
    public_base_url: str = setting(
        "",
        "URL prefix for public image URLs (a CDN or load balancer in front of the bucket)",
        STORAGE,
    )
    allow_local_storage_on_cloud_run: bool = setting(
        False,
        "let LocalStore start on Cloud Run (its disk is memory and vanishes: demos only)",
        STORAGE,
    )
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
        "OCR, only on screenshot-like pictures; 100-300 ms in a subprocess when it runs)",
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
        3.0,
        "seconds one OCR run may take before the image is saved without its text",
        LABELS,
        check=Between(0.5, 30, "seconds"),
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
    max_upload_mb: int = setting(
        20,
        "largest file accepted (below Cloud Run's 32 MiB request cap)",
        LIMITS,
        check=Between(1, 1024),
    )
    direct_upload_threshold_mb: float = setting(
        8.0,
        "the upload page sends files above this straight to storage; `0` turns that off",
        DIRECT,
        check=AtLeast(0),
    )
    direct_upload_max_mb: int = setting(
        200,
        "largest direct upload (it skips Cloud Run's request cap, so it may exceed "
        "`MAX_UPLOAD_MB`)",
        DIRECT,
        check=Between(1, 1024),
    )
    direct_upload_max_puts: int = setting(
        4,
        "direct-upload PUTs received at once per process (LocalStore; each holds a thread while "
        "its client sends); one more gets 503 with `Retry-After`",
        DIRECT,
        check=Between(1, 64),
    )
    direct_upload_tmp_max_mb: int = setting(
        1024,
        "most that direct uploads waiting for completion may take on LocalStore's disk "
        "(`tmp/`, PUTs in flight counted at their announced size); a PUT past it gets 503 "
        "with `Retry-After`",
        DIRECT,
        check=AtLeast(1),
    )
    upload_url_ttl: int = setting(
        900,
        "seconds a direct-upload URL stays valid for starting its PUT",
        DIRECT,
        # V4 signed URLs live at most 7 days; under a minute is too short to start a PUT.
        check=Between(60, 7 * 24 * 3600, "seconds"),
    )
    signing_service_account: str = setting(
        "",
        "service account whose key signs GCS upload URLs through the IAM signBlob API",
        DIRECT,
        shown="(the runtime service account)",
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
    smart_crop: str = setting(
        "on",
        "where a `fit=cover` crop's window goes: `on` keeps the faces found, else the part with "
        "the most detail (an owner's `focus` wins either way); `off` always cuts the centre",
        OUTPUT,
        check=OneOf(("on", "off")),
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
    gc_grace_seconds: int = setting(
        3600, "age after which `flask gc` removes objects without a record", OPS
    )
    log_format: str = setting(
        "text",
        "log line format",
        OPS,
        check=OneOf(("text", "json")),
        shown="`text` (`json` on Cloud Run)",
    )
    log_level: str = setting(
        "INFO",
        "least severe level logged",
        OPS,
        check=OneOf(("DEBUG", "INFO", "WARNING", "ERROR"), bare=True),
        parse=_keyword,
    )
    google_cloud_project: str = setting(
        "",
        "project id, used in log lines' trace field (`projects/<id>/traces/<trace>`) and by "
        "Cloud Trace",
        OPS,
    )
    trace_exporter: str = setting(
        "none",
        "where traces go: nowhere, Cloud Trace (`gcp`) or stderr (`console`)",
        OPS,
        check=OneOf(("none", "gcp", "console")),
    )
    trace_sample_ratio: float = setting(
        0.1,
        "share of requests traced when the caller made no sampling decision",
        OPS,
        check=Between(0, 1),
    )
    upload_tokens: tuple[str, ...] = setting(
        (),
        "comma-separated tokens; when set, uploading needs one",
        SECURITY,
        env="UPLOAD_TOKEN",
    )
    admin_token: str = setting("", "may delete any image and approve held-back ones", SECURITY)
    rate_limit: str = setting(
        "",
        "upload work per client, e.g. `30/minute`: each upload costs files × formats, from one "
        "budget shared by every upload door; other writes (and all of admin) count requests "
        "per route; empty turns it off",
        SECURITY,
        shown=f"(none; `{PRODUCTION_RATE_LIMIT}` on Cloud Run)",
        check=Shaped(_is_rate_limit, "a limit such as 30/minute", "`<n>/<period>`, `;`-separated"),
    )
    rate_limit_storage_uri: str = setting(
        "memory://",
        "where rate-limit budgets are counted: `memory://` keeps one per process; "
        "`redis://host:6379/0` (or `rediss://`) shares one across every process and instance",
        SECURITY,
        check=Shaped(
            _is_limiter_storage,
            "memory:// or a redis:// or rediss:// URI",
            "`memory://`, `redis://...`, `rediss://...`",
        ),
    )
    trusted_proxy_hops: int = setting(
        0,
        "proxies in front whose `X-Forwarded-For` and `-Proto` are trusted (`X-Forwarded-Host` "
        "never is): 1 on Cloud Run, 2 behind a load balancer in front of Cloud Run",
        SECURITY,
        shown="`0` (1 on Cloud Run)",
    )
    public_url: str = setting(
        "",
        "this service's own URL (`https://host`): every absolute URL in an answer is built from "
        "it, whatever `Host` or `X-Forwarded-Host` a request carries",
        SECURITY,
        shown="(the request's `Host`; `EVENTS_AUDIENCE` on Cloud Run when set)",
        check=Shaped(
            _is_origin,
            "an origin such as https://images.example.com (no path)",
            "an `https://` origin, no path",
        ),
    )
    metrics_token: str = setting(
        "",
        "when set, `GET /metrics` needs `Authorization: Bearer <token>` (401 without, 403 wrong)",
        SECURITY,
    )
    uploads_bucket: str = setting(
        "",
        "comma-separated buckets whose storage events are converted; events from any other "
        "bucket get 403",
        EVENTS,
    )
    events_audience: str = setting(
        "",
        "this service's URL: the audience of the OIDC tokens on `/events/storage` and "
        "`/tasks/convert`; empty turns both off (404)",
        EVENTS,
        check=Shaped(_is_url, "the service's URL (https://...)", "an `https://` URL"),
    )
    events_service_account: str = setting(
        "",
        "the only service account (token `email`) allowed to deliver storage events",
        EVENTS,
    )
    oidc_certs_url: str = setting(
        "https://www.googleapis.com/oauth2/v1/certs",
        "where the token-signing certificates come from (tests point it at a local issuer)",
        EVENTS,
    )
    event_workers: int = setting(
        2,
        "conversions from storage events at once per process, without `TASKS_QUEUE` (as many "
        "again may wait; beyond that 503)",
        EVENTS,
        check=Between(1, 32),
    )
    tasks_queue: str = setting(
        "",
        "hand each event's conversion to this Cloud Tasks queue instead of converting in the "
        "event's request",
        EVENTS,
        check=Shaped(
            _is_queue_name,
            "projects/<p>/locations/<l>/queues/<q>",
            "`projects/P/locations/L/queues/Q`",
        ),
    )
    tasks_target_url: str = setting(
        "", "the URL Cloud Tasks calls", EVENTS, shown="`EVENTS_AUDIENCE` + `/tasks/convert`"
    )
    tasks_service_account: str = setting(
        "",
        "service account whose OIDC token Cloud Tasks sends (and the only one `/tasks/convert` "
        "accepts)",
        EVENTS,
    )
    tasks_api_endpoint: str = setting(
        "",
        "Cloud Tasks endpoint override (`http://...` uses anonymous credentials: for local "
        "stand-ins)",
        EVENTS,
    )
    on_cloud_run: bool = setting(
        False,
        "set by Cloud Run itself, never by hand: any value turns on the Cloud Run defaults "
        "and rules",
        OPS,
        env="K_SERVICE",
        shown="(set by Cloud Run)",
        allows="any (Cloud Run sets the service's name)",
        parse=_present,
    )
    # Not a variable: the test suite's apps set it.
    testing: bool = field(default=False, metadata={_INTERNAL: True})

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def direct_upload_max_bytes(self) -> int:
        return self.direct_upload_max_mb * 1024 * 1024

    @property
    def direct_upload_tmp_max_bytes(self) -> int:
        return self.direct_upload_tmp_max_mb * 1024 * 1024

    @property
    def direct_upload_threshold_bytes(self) -> int:
        return int(self.direct_upload_threshold_mb * 1024 * 1024)

    @property
    def event_buckets(self) -> tuple[str, ...]:
        """The buckets UPLOADS_BUCKET names, whose storage events are converted."""
        return tuple(b.strip() for b in self.uploads_bucket.split(",") if b.strip())

    @property
    def slots(self) -> int:
        return self.conversion_slots or (os.cpu_count() or 1)

    @property
    def public_origin(self) -> str:
        """Where clients reach this service, or "" to take the request's Host header.

        On Cloud Run, EVENTS_AUDIENCE is the service's URL already; without either, Cloud Run's
        front end sets Host itself (it routes by it), so only a self-hosted server needs one.
        """
        origin = self.public_url or (self.events_audience if self.on_cloud_run else "")
        return origin.rstrip("/")

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated (handy in tests)."""
        return replace(self, **changes).validated()

    def validated(self) -> Settings:
        """``self``, once every setting's check and every rule in ``RULES`` holds."""
        problems = [
            problem
            for definition in DEFINITIONS
            if definition.check is not None
            for problem in definition.check.problems(definition.env, getattr(self, definition.name))
        ]
        problems += [rule.problem for rule in RULES if rule.broken(self)]
        if problems:
            raise SettingsError("Invalid configuration: " + "; ".join(problems))
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``environ`` (default ``os.environ``) and validate them."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for definition in DEFINITIONS:
            raw = env.get(definition.env)
            if raw is None or raw == "":
                continue  # unset and empty alike keep the default
            try:
                values[definition.name] = definition.read(raw)
            except ValueError as exc:
                raise SettingsError(f"Invalid configuration: {definition.env} {exc}") from None
            except ImagingError as exc:
                raise SettingsError(f"Invalid configuration: {exc.public_message}") from None
        settings = replace(cls(), **values)
        if settings.on_cloud_run and "RATE_LIMIT" not in env:
            # On the open internet by default: limit uploads unless told otherwise
            # (RATE_LIMIT= with an empty value turns it off explicitly).
            settings = replace(settings, rate_limit=PRODUCTION_RATE_LIMIT)
        if not settings.secret_key and not settings.on_cloud_run:
            settings = replace(settings, secret_key=_local_secret(settings.media_root.parent))
        return settings.validated()


#: Every declared setting, in the order of its fields.
DEFINITIONS: tuple[Definition, ...] = tuple(
    replace(f.metadata[_DEFINITION], name=f.name, env=f.metadata[_DEFINITION].env or f.name.upper())
    for f in fields(Settings)
    if _DEFINITION in f.metadata
)


@dataclass(frozen=True)
class Rule:
    """A rule between settings: ``broken`` tells, ``problem`` explains, ``says`` is for docs."""

    setting: str  # the field whose docs row states the rule
    says: str
    broken: Callable[[Settings], bool]
    problem: str


RULES: tuple[Rule, ...] = (
    Rule(
        "gcs_bucket",
        "required when `STORAGE_BACKEND=gcs`",
        lambda s: s.storage_backend == "gcs" and not s.gcs_bucket,
        "GCS_BUCKET is required when STORAGE_BACKEND=gcs",
    ),
    Rule(
        "gcs_public_bucket",
        "required when `STORAGE_BACKEND=gcs`",
        lambda s: s.storage_backend == "gcs" and not s.gcs_public_bucket,
        "GCS_PUBLIC_BUCKET is required when STORAGE_BACKEND=gcs: approved variants are served "
        "from it, and nothing else may be public",
    ),
    Rule(
        "gcs_public_bucket",
        "not `GCS_BUCKET`",
        lambda s: bool(s.gcs_public_bucket) and s.gcs_public_bucket == s.gcs_bucket,
        "GCS_PUBLIC_BUCKET must not be GCS_BUCKET: the public bucket would expose the records, "
        "the originals and the held-back images",
    ),
    Rule(
        "storage_backend",
        "`local` on Cloud Run only with `ALLOW_LOCAL_STORAGE_ON_CLOUD_RUN=1`",
        lambda s: (
            s.on_cloud_run
            and s.storage_backend == "local"
            and not s.allow_local_storage_on_cloud_run
        ),
        "STORAGE_BACKEND=local on Cloud Run would keep images in the instance's memory, "
        "which vanishes when it scales in; set STORAGE_BACKEND=gcs and GCS_BUCKET "
        "(or ALLOW_LOCAL_STORAGE_ON_CLOUD_RUN=1 for a throwaway demo)",
    ),
    Rule(
        "direct_upload_tmp_max_mb",
        "at least `DIRECT_UPLOAD_MAX_MB` with `STORAGE_BACKEND=local`",
        lambda s: (
            s.storage_backend == "local" and s.direct_upload_tmp_max_mb < s.direct_upload_max_mb
        ),
        "DIRECT_UPLOAD_TMP_MAX_MB must be at least DIRECT_UPLOAD_MAX_MB with "
        "STORAGE_BACKEND=local, or the largest direct upload could never be received",
    ),
    Rule(
        "secret_key",
        "**required on Cloud Run**",
        lambda s: s.on_cloud_run and not s.secret_key,
        "SECRET_KEY is required on Cloud Run: every instance must sign sessions alike",
    ),
    Rule(
        "events_service_account",
        "required with `EVENTS_AUDIENCE`",
        # Anyone with a Google account can mint an ID token for any audience.
        lambda s: bool(s.events_audience) and not s.events_service_account,
        "EVENTS_AUDIENCE needs EVENTS_SERVICE_ACCOUNT (who may call)",
    ),
    Rule(
        "uploads_bucket",
        "required with `EVENTS_AUDIENCE`",
        lambda s: bool(s.events_audience) and not s.uploads_bucket,
        "EVENTS_AUDIENCE needs UPLOADS_BUCKET (whose events to convert)",
    ),
    Rule(
        "uploads_bucket",
        "never `GCS_PUBLIC_BUCKET`",
        lambda s: bool(s.gcs_public_bucket) and s.gcs_public_bucket in s.event_buckets,
        "UPLOADS_BUCKET must not name GCS_PUBLIC_BUCKET: originals dropped there would be "
        "public, and its events are the app's own variants",
    ),
    Rule(
        "events_audience",
        "required with `TASKS_QUEUE`",
        lambda s: bool(s.tasks_queue) and not s.events_audience,
        "TASKS_QUEUE needs EVENTS_AUDIENCE (/tasks/convert checks tokens)",
    ),
    Rule(
        "tasks_service_account",
        "required with `TASKS_QUEUE`",
        lambda s: bool(s.tasks_queue) and not s.tasks_service_account,
        "TASKS_QUEUE needs TASKS_SERVICE_ACCOUNT (the OIDC identity)",
    ),
    Rule(
        "captioner",
        "`gemini` needs `GEMINI_API_KEY` or `GOOGLE_CLOUD_PROJECT`",
        lambda s: s.captioner == "gemini" and not (s.gemini_api_key or s.google_cloud_project),
        "CAPTIONER=gemini needs GEMINI_API_KEY (the Gemini API) or GOOGLE_CLOUD_PROJECT "
        "(Vertex AI)",
    ),
    Rule(
        "upload_deadline",
        "more than `CONVERSION_WAIT` + `CAPTION_TIMEOUT` with a captioner",
        lambda s: (
            s.captioner != "none" and s.upload_deadline <= s.conversion_wait + s.caption_timeout
        ),
        "UPLOAD_DEADLINE must be more than CONVERSION_WAIT + CAPTION_TIMEOUT "
        "(waiting for a slot and for the caption would spend it)",
    ),
    Rule(
        "upload_deadline",
        "more than `CONVERSION_WAIT` + `LABEL_TIMEOUT`",
        # Else an upload that waited for its slot and then for its labels has no time to save.
        lambda s: s.upload_deadline <= s.conversion_wait + s.label_timeout,
        "UPLOAD_DEADLINE must be more than CONVERSION_WAIT + LABEL_TIMEOUT "
        "(waiting for a slot and for labels would spend it)",
    ),
)


def _local_secret(instance_dir: Path) -> str:
    """A secret kept beside the local media: sessions survive restarts and workers agree."""
    path = instance_dir / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    instance_dir.mkdir(parents=True, exist_ok=True)
    candidate = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker won the race
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(candidate)
    return candidate


# -- the generated docs --------------------------------------------------------------------

DOCS_COMMAND = "python -m imaging.config > docs/configuration.md"


def configuration_markdown() -> str:
    """docs/configuration.md: every setting by group, from the declarations above."""
    lines = [
        "# Configuration",
        "",
        "Generated from the declarations in `imaging/config.py`; after changing a setting there,",
        f"run `{DOCS_COMMAND}` (`tests/test_config.py` fails while this file is stale).",
        "",
        "Every setting is an environment variable; outside tests a `.env` file fills in those",
        "not set. Settings are checked once at start-up: with any value out of bounds the app",
        "does not start, and its error names every problem at once.",
    ]
    rules: dict[str, list[str]] = {}
    for rule in RULES:
        rules.setdefault(rule.setting, []).append(rule.says)
    for group, about in GROUPS.items():
        lines += [
            "",
            f"## {group.capitalize()}",
            "",
            about,
            "",
            "| variable | default | meaning | allowed values |",
            "|---|---|---|---|",
        ]
        for d in DEFINITIONS:
            if d.group == group:
                allowed = "; ".join(filter(None, [d.allowed(), *rules.get(d.name, [])]))
                lines.append(f"| `{d.env}` | {d.shown_default()} | {d.doc} | {allowed} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(configuration_markdown(), end="")
