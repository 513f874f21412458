"""Settings: every knob of the app, typed and validated once at start-up.

Each field maps to one environment variable (documented in the README's configuration table).
``Settings.from_env`` is the only place that reads the environment; everything else receives a
``Settings`` value, so tests build exactly the configuration they need.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from imaging.errors import ImagingError
from imaging.formats import OUTPUT_FORMATS, parse_format_list


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


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    secret_key: str = ""
    storage_backend: str = "local"
    media_root: Path = Path("instance/media")
    gcs_bucket: str = ""
    public_base_url: str = ""
    allow_local_storage_on_cloud_run: bool = False
    labeler: str = "local"
    label_max_results: int = 5
    label_min_score: float = 0.15
    label_timeout: float = 10.0
    model_cache_dir: Path = Path("instance/models")
    vision_api_endpoint: str = ""
    safe_search: bool = False
    safe_search_hide: str = ""
    max_upload_mb: int = 20
    direct_upload_threshold_mb: float = 8.0  # 0: the upload page never uses direct uploads
    direct_upload_max_mb: int = 200
    upload_url_ttl: int = 900
    signing_service_account: str = ""
    max_pixels: int = 50_000_000
    max_side: int = WEBP_MAX_SIDE
    max_output_side: int = 4096
    max_frames: int = 100
    default_formats: tuple[str, ...] = ("webp",)
    keep_copyright: bool = False
    background: str = "#ffffff"
    presets: Mapping[str, Preset] = field(default_factory=lambda: dict(DEFAULT_PRESETS))
    conversion_slots: int = 0  # 0 = one per CPU core
    conversion_wait: float = 10.0
    gc_grace_seconds: int = 3600
    log_format: str = "text"
    log_level: str = "INFO"
    google_cloud_project: str = ""  # names the project in log lines' trace field
    trace_exporter: str = "none"
    trace_sample_ratio: float = 0.1
    upload_tokens: tuple[str, ...] = ()
    admin_token: str = ""
    rate_limit: str = ""
    trusted_proxy_hops: int = 0
    uploads_bucket: str = ""  # comma-separated: the buckets whose storage events are converted
    events_audience: str = ""  # the service URL; empty turns /events/storage and /tasks/convert off
    events_service_account: str = ""
    oidc_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    event_workers: int = 2
    tasks_queue: str = ""  # projects/P/locations/L/queues/Q; empty: convert in-process
    tasks_target_url: str = ""  # empty: EVENTS_AUDIENCE + /tasks/convert
    tasks_service_account: str = ""
    tasks_api_endpoint: str = ""
    on_cloud_run: bool = False
    testing: bool = False

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def direct_upload_max_bytes(self) -> int:
        return self.direct_upload_max_mb * 1024 * 1024

    @property
    def direct_upload_threshold_bytes(self) -> int:
        return int(self.direct_upload_threshold_mb * 1024 * 1024)

    @property
    def slots(self) -> int:
        return self.conversion_slots or (os.cpu_count() or 1)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated (handy in tests)."""
        return replace(self, **changes).validated()

    def validated(self) -> Settings:
        problems = []
        if self.storage_backend not in ("local", "gcs"):
            problems.append("STORAGE_BACKEND must be 'local' or 'gcs'")
        if self.storage_backend == "gcs" and not self.gcs_bucket:
            problems.append("GCS_BUCKET is required when STORAGE_BACKEND=gcs")
        if self.labeler not in ("local", "vision", "none"):
            problems.append("LABELER must be 'local', 'vision' or 'none'")
        if not 1 <= self.max_upload_mb <= 1024:
            problems.append("MAX_UPLOAD_MB must be between 1 and 1024")
        if not 1 <= self.direct_upload_max_mb <= 1024:
            problems.append("DIRECT_UPLOAD_MAX_MB must be between 1 and 1024")
        if self.direct_upload_threshold_mb < 0:
            problems.append("DIRECT_UPLOAD_THRESHOLD_MB must not be negative")
        if not 60 <= self.upload_url_ttl <= 7 * 24 * 3600:
            # V4 signed URLs live at most 7 days; under a minute is too short to start a PUT.
            problems.append("UPLOAD_URL_TTL must be between 60 and 604800 seconds")
        if not 1 <= self.max_side <= WEBP_MAX_SIDE:
            problems.append(f"MAX_SIDE must be between 1 and {WEBP_MAX_SIDE} (WebP's limit)")
        if not 1 <= self.max_output_side <= WEBP_MAX_SIDE:
            problems.append(f"MAX_OUTPUT_SIDE must be between 1 and {WEBP_MAX_SIDE}")
        if self.max_pixels < 1:
            problems.append("MAX_PIXELS must be positive")
        if self.max_frames < 1:
            problems.append("MAX_FRAMES must be positive")
        if not 0.0 <= self.label_min_score <= 1.0:
            problems.append("LABEL_MIN_SCORE must be between 0 and 1")
        if self.label_max_results < 1:
            problems.append("LABEL_MAX_RESULTS must be at least 1")
        if self.log_format not in ("text", "json"):
            problems.append("LOG_FORMAT must be 'text' or 'json'")
        if self.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            problems.append("LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        if self.trace_exporter not in ("none", "gcp", "console"):
            problems.append("TRACE_EXPORTER must be 'none', 'gcp' or 'console'")
        if not 0.0 <= self.trace_sample_ratio <= 1.0:
            problems.append("TRACE_SAMPLE_RATIO must be between 0 and 1")
        if self.safe_search_hide and self.safe_search_hide not in (
            "POSSIBLE",
            "LIKELY",
            "VERY_LIKELY",
        ):
            problems.append("SAFE_SEARCH_HIDE must be POSSIBLE, LIKELY or VERY_LIKELY")
        if not self.default_formats:
            problems.append("DEFAULT_FORMATS must name at least one format")
        unknown = [f for f in self.default_formats if f not in OUTPUT_FORMATS]
        if unknown:
            problems.append(f"DEFAULT_FORMATS has unknown formats: {', '.join(unknown)}")
        if (
            self.on_cloud_run
            and self.storage_backend == "local"
            and not self.allow_local_storage_on_cloud_run
        ):
            problems.append(
                "STORAGE_BACKEND=local on Cloud Run would keep images in the instance's memory, "
                "which vanishes when it scales in; set STORAGE_BACKEND=gcs and GCS_BUCKET "
                "(or ALLOW_LOCAL_STORAGE_ON_CLOUD_RUN=1 for a throwaway demo)"
            )
        if self.on_cloud_run and not self.secret_key:
            problems.append(
                "SECRET_KEY is required on Cloud Run: every instance must sign sessions alike"
            )
        problems += self._event_problems()
        if problems:
            raise SettingsError("Invalid configuration: " + "; ".join(problems))
        return self

    def _event_problems(self) -> list[str]:
        problems = []
        if self.events_audience:
            if not self.events_audience.startswith(("https://", "http://")):
                problems.append("EVENTS_AUDIENCE must be the service's URL (https://...)")
            if not self.events_service_account:
                # Anyone with a Google account can mint an ID token for any audience.
                problems.append("EVENTS_AUDIENCE needs EVENTS_SERVICE_ACCOUNT (who may call)")
            if not self.uploads_bucket:
                problems.append("EVENTS_AUDIENCE needs UPLOADS_BUCKET (whose events to convert)")
        if not 1 <= self.event_workers <= 32:
            problems.append("EVENT_WORKERS must be between 1 and 32")
        if self.tasks_queue:
            parts = self.tasks_queue.split("/")
            if len(parts) != 6 or parts[0::2] != ["projects", "locations", "queues"] or "" in parts:
                problems.append("TASKS_QUEUE must be projects/<p>/locations/<l>/queues/<q>")
            if not self.events_audience:
                problems.append("TASKS_QUEUE needs EVENTS_AUDIENCE (/tasks/convert checks tokens)")
            if not self.tasks_service_account:
                problems.append("TASKS_QUEUE needs TASKS_SERVICE_ACCOUNT (the OIDC identity)")
        return problems

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``environ`` (default ``os.environ``) and validate them."""
        env = os.environ if environ is None else environ
        defaults = cls()
        values: dict[str, Any] = {}
        try:
            for f in fields(cls):
                name = f.name.upper()
                if f.name in ("presets", "testing", "on_cloud_run", "upload_tokens"):
                    continue
                raw = env.get(name)
                if raw is None or raw == "":
                    continue
                values[f.name] = _coerce(f.name, raw, getattr(defaults, f.name))
        except ValueError as exc:
            raise SettingsError(f"Invalid configuration: {exc}") from None
        except ImagingError as exc:
            raise SettingsError(f"Invalid configuration: {exc.public_message}") from None
        tokens = env.get("UPLOAD_TOKEN", "")
        values["upload_tokens"] = tuple(t.strip() for t in tokens.split(",") if t.strip())
        values["on_cloud_run"] = bool(env.get("K_SERVICE"))
        settings = replace(defaults, **values)
        if settings.on_cloud_run and "RATE_LIMIT" not in env:
            # On the open internet by default: limit uploads unless told otherwise
            # (RATE_LIMIT= with an empty value turns it off explicitly).
            settings = replace(settings, rate_limit=PRODUCTION_RATE_LIMIT)
        if not settings.secret_key and not settings.on_cloud_run:
            settings = replace(settings, secret_key=_local_secret(settings.media_root.parent))
        return settings.validated()


def _coerce(name: str, raw: str, default: Any) -> Any:
    label = name.upper()
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{label} must be a boolean (1/0, true/false), got {raw!r}")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{label} must be a whole number, got {raw!r}") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{label} must be a number, got {raw!r}") from None
    if isinstance(default, Path):
        return Path(raw)
    if isinstance(default, tuple):
        if name == "default_formats":
            return parse_format_list(raw)
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    if name in ("safe_search_hide", "log_level"):
        return raw.upper()
    return raw


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
