"""The settings of where images are kept and how large files reach the bucket (groups ``storage``,
``direct uploads``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imaging.config.checks import (
    AtLeast,
    Between,
    OneOf,
)
from imaging.config.declare import (
    DIRECT,
    STORAGE,
    setting,
)


@dataclass(frozen=True)
class StorageSettings:
    """Where images and their records are kept."""

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


@dataclass(frozen=True)
class DirectUploadSettings:
    """Large files sent by the browser straight to the bucket."""

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
