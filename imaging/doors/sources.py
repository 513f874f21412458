"""Where originals come from for events and batch runs: GCS buckets (any, not only ours) and disks.

The app's own ObjectStore only knows its bucket and keys it made itself. Storage events and
``convert-batch gs://...`` read *other* objects: the uploads bucket's, with their generation and
custom metadata (``x-goog-meta-formats: webp,avif`` arrives as ``metadata["formats"]``). That is
what ``BucketSource`` does, on one lazily made ``google.cloud.storage`` client per process (with
STORAGE_EMULATOR_HOST honoured, like GCSStore). A missing object is ObjectNotFound; anything
between us and the bucket failing is StorageUnavailable (503: a retry may succeed).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imaging.errors import ObjectNotFound, StorageUnavailable, TooLarge, limit_message
from imaging.gclients import PerProcess

if TYPE_CHECKING:
    from google.cloud.storage import Client


@dataclass(frozen=True)
class ObjectRef:
    """One generation of one object: what a storage event names and what a task carries."""

    bucket: str
    name: str
    generation: str  # GCS generations are int64s; JSON carries them as strings

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.name}#{self.generation}"


@dataclass(frozen=True)
class SourceObject:
    """An original's bytes and what its uploader said about it (custom metadata)."""

    ref: ObjectRef
    data: bytes
    content_type: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


def parse_gs_url(url: str) -> tuple[str, str]:
    """``gs://bucket/some/prefix`` -> ``("bucket", "some/prefix")``; raise ValueError if not."""
    if not url.startswith("gs://"):
        raise ValueError(f"not a gs:// URL: {url!r}")
    bucket, _, prefix = url[len("gs://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r}")
    return bucket, prefix


class BucketSource:
    """Reads originals from any GCS bucket the service account may read. Thread-safe."""

    def __init__(
        self,
        *,
        client: Client | None = None,
        timeout: float = 10,
        deadline: float = 30,
    ) -> None:
        self._client = PerProcess(lambda: client or _default_client())
        self._timeout = timeout
        self._deadline = deadline

    @functools.cached_property
    def _retry(self) -> Any:
        # Google's storage client (about 32 MB per process) is imported by the first read or
        # listing of a bucket, not by every process that could make one: on LocalStore, with no
        # event door and no batch over a bucket, nothing here ever runs.
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self._deadline)

    def read(self, ref: ObjectRef, *, max_bytes: int) -> SourceObject:
        """That generation's bytes and metadata; TooLarge (without downloading) over max_bytes."""
        from google.api_core import exceptions as api_exceptions

        with self._unavailable_on_failure("read", ref):
            bucket = self._client_for_process().bucket(ref.bucket)
            try:
                blob = bucket.get_blob(
                    ref.name,
                    generation=int(ref.generation),
                    timeout=self._timeout,
                    retry=self._retry,
                )
            except api_exceptions.NotFound:
                blob = None  # the bucket itself is gone
            if blob is None:
                raise ObjectNotFound("No such object.", detail=f"{ref} not found")
            if blob.size is not None and int(blob.size) > max_bytes:
                raise TooLarge(limit_message(max_bytes), detail=f"{ref} has {blob.size} bytes")
            try:
                # The blob carries its generation, so this reads exactly that version even if
                # the name has been overwritten since the event.
                data = blob.download_as_bytes(timeout=self._timeout, retry=self._retry)
            except api_exceptions.NotFound:
                raise ObjectNotFound("No such object.", detail=f"{ref} vanished") from None
            return SourceObject(
                ref=ref,
                data=bytes(data),
                content_type=str(blob.content_type or ""),
                metadata=dict(blob.metadata or {}),
            )

    def list(self, bucket: str, prefix: str) -> Iterator[ObjectRef]:
        """Every object under ``prefix`` (live generations only), in name order, paged."""
        with self._unavailable_on_failure("list", ObjectRef(bucket, prefix, "0")):
            blobs = self._client_for_process().list_blobs(
                bucket,
                prefix=prefix or None,
                fields="items(name,generation),nextPageToken",
                timeout=self._timeout,
                retry=self._retry,
            )
            for blob in blobs:
                name = str(blob.name)
                if name.endswith("/"):
                    continue  # a "folder" placeholder the console makes, not an image
                yield ObjectRef(bucket, name, str(blob.generation))

    def _client_for_process(self) -> Client:
        return self._client.get()

    @contextmanager
    def _unavailable_on_failure(self, action: str, ref: ObjectRef) -> Iterator[None]:
        from imaging.storage.gcs import UNAVAILABLE_ERRORS

        try:
            yield
        except UNAVAILABLE_ERRORS as exc:
            raise StorageUnavailable(
                "The uploads bucket is unavailable. Please retry shortly.",
                detail=f"gcs {action} {ref} failed: {exc!r}",
            ) from exc


def list_directory(root: Path) -> list[Path]:
    """Every regular file under ``root``, recursively, in a stable (sorted) order."""
    if not root.is_dir():
        raise ValueError(f"not a directory: {root}")
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def file_ref(path: Path) -> ObjectRef:
    """What a file on disk is called where a bucket object would be named (logs, reports)."""
    return ObjectRef("", str(path), "0")


def read_file(path: Path, *, max_bytes: int) -> SourceObject:
    """A file's bytes; TooLarge (without reading it) over max_bytes. A file has no metadata."""
    size = path.stat().st_size
    if size > max_bytes:
        raise TooLarge(limit_message(max_bytes), detail=f"{path} has {size} bytes")
    return SourceObject(ref=file_ref(path), data=path.read_bytes())


def _default_client() -> Client:
    from imaging.storage.gcs import default_client

    return default_client()
