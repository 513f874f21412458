"""The rules between settings: each says when it is broken, what the error says, and what the
docs say."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imaging.config.settings import Settings


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
        "ocr_timeout",
        "less than `LABEL_TIMEOUT`, as is `OCR_CPU_SECONDS`, when the local labeler reads text",
        # Else a read still under way when the labels are collected costs every label.
        lambda s: (
            s.labeler == "local"
            and "text" in s.local_features
            and max(s.ocr_timeout, s.ocr_cpu_seconds) >= s.label_timeout
        ),
        "OCR_TIMEOUT and OCR_CPU_SECONDS must be less than LABEL_TIMEOUT when LOCAL_FEATURES "
        "has text (a read still under way would cost the image every label)",
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
