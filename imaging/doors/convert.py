"""One converter for originals nobody waits for at a browser: bucket objects and local files.

``ObjectConverter.convert`` is the one path for an object already sitting in a bucket (storage
events, Cloud Tasks, ``flask convert-batch gs://...``): look up the ledger (done before? answer
that), claim the object generation, read it with its metadata, run it through
``pipeline.ingest`` (the same path as every upload), and settle the outcome in the ledger. It is
idempotent, so Pub/Sub, Eventarc and Cloud Tasks may deliver as often as they like.
``ObjectConverter.convert_file`` is the same reading, options and refusals for a file on disk
(``flask convert-batch <directory>``), without the ledger: a plain disk has no generation to
remember an outcome by, and the content-hash duplicate index finds a re-run's records.

Fan-out without a task queue (imaging/doors/tasks.py) is ``WorkerPool``: a small in-process
pool; the request that delivered the event waits for its conversion (on Cloud Run, CPU is only
certain while a request is open), and a full pool answers 503 so the sender retries later
instead of queueing without bound.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from imaging.catalog import OWN_PREFIXES, Catalog
from imaging.config import Settings
from imaging.doors.ledger import EventLedger, Outcome
from imaging.doors.sources import BucketSource, ObjectRef, SourceObject, file_ref, read_file
from imaging.errors import Busy, Forbidden, ImagingError, ObjectExists, Unavailable
from imaging.formats import parse_format_list
from imaging.pipeline import Pipeline, UploadOptions

log = logging.getLogger(__name__)

T = TypeVar("T")


class InProgress(Unavailable):
    """Another worker holds this object's claim: retry later, by then it will have settled."""

    code = "in_progress"


@dataclass(frozen=True)
class Conversion:
    """What one original came to: ``converted`` (a new record), ``duplicate`` (settled before,
    or the same bytes and options already had a record) or ``refused`` (permanently: why)."""

    ref: ObjectRef
    status: str  # "converted" | "duplicate" | "refused"
    record_id: str = ""
    code: str = ""
    reason: str = ""
    earlier: bool = False  # settled by an earlier delivery or run, not by this call

    def to_json(self) -> dict[str, Any]:
        # Senders and scripts read "existing" for a duplicate: the wire word stays.
        status = "existing" if self.status == "duplicate" else self.status
        body: dict[str, Any] = {"status": status, "object": str(self.ref)}
        if self.record_id:
            body["record_id"] = self.record_id
        if self.status == "refused":
            body.update(code=self.code, reason=self.reason)
        return body


def formats_for(metadata: dict[str, str], settings: Settings) -> tuple[str, ...]:
    """The ``formats`` custom metadata (``x-goog-meta-formats: webp,avif``), else the default."""
    raw = metadata.get("formats", "").strip()
    return parse_format_list(raw) if raw else settings.default_formats


def batch_byte_limit(settings: Settings) -> int:
    """Originals read from a bucket or a disk never pass through a request (Cloud Run's 32 MiB
    cap): they may be as large as a direct upload."""
    return max(settings.max_upload_bytes, settings.direct_upload_max_bytes)


def is_own_object(settings: Settings, ref: ObjectRef) -> bool:
    """Whether ``ref`` is something the app wrote itself, never an original to convert: a key
    of its own in its private bucket, or anything at all in its public bucket (which holds
    nothing but the variants it made; converting them would loop)."""
    if settings.gcs_public_bucket and ref.bucket == settings.gcs_public_bucket:
        return True
    return ref.bucket == settings.gcs_bucket and ref.name.startswith(OWN_PREFIXES)


class ObjectConverter:
    """Turns one original into exactly one gallery record (or one refusal)."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        catalog: Catalog,
        ledger: EventLedger,
        source: BucketSource,
    ) -> None:
        self.settings = settings
        self.max_bytes = batch_byte_limit(settings)
        self.pipeline = pipeline
        self.catalog = catalog
        self.ledger = ledger
        self.source = source

    def convert(self, ref: ObjectRef, formats: tuple[str, ...] | None = None) -> Conversion:
        """Convert ``ref`` unless it was settled before; raise Unavailable (503) to be retried.

        ``formats`` None means: the object's ``formats`` metadata, else DEFAULT_FORMATS. An
        object in the public bucket is refused (403) whatever door passed it on: everything
        there is the app's own output (the doors skip it before they get here).
        """
        if self.settings.gcs_public_bucket and ref.bucket == self.settings.gcs_public_bucket:
            raise Forbidden(
                "Objects in the public bucket are the app's own variants, never originals.",
                detail=f"{ref} is in GCS_PUBLIC_BUCKET",
            )
        settled = self.ledger.outcome(ref)
        if settled is not None:
            return _from_outcome(ref, settled)
        token = self.ledger.claim(ref)
        if token is None:
            raise InProgress(
                "This object is being converted right now. Please retry shortly.",
                detail=f"{ref} is claimed by another worker",
                retry_after=30,
            )
        try:
            settled = self.ledger.outcome(ref)  # settled between our first look and our claim
            if settled is not None:
                return _from_outcome(ref, settled)
            return self._convert_claimed(ref, formats)
        finally:
            self.ledger.release(ref, token)

    def convert_file(self, path: Path, formats: tuple[str, ...] | None = None) -> Conversion:
        """Convert a file on disk: the same reading and refusals as ``convert``, no ledger."""
        return self._ingest(
            file_ref(path), lambda: read_file(path, max_bytes=self.max_bytes), formats
        )

    def _convert_claimed(self, ref: ObjectRef, formats: tuple[str, ...] | None) -> Conversion:
        conversion = self._ingest(
            ref, lambda: self.source.read(ref, max_bytes=self.max_bytes), formats
        )
        if conversion.status == "refused":
            # Acknowledged, not retried: the same bytes would be refused again forever.
            refusal = Outcome("refused", code=conversion.code, reason=conversion.reason)
            standing = self.ledger.settle(ref, refusal)
            if standing != refusal:
                return _from_outcome(ref, standing)  # a concurrent worker settled it first
            return conversion
        standing = self.ledger.settle(ref, Outcome("converted", record_id=conversion.record_id))
        if standing.record_id != conversion.record_id and conversion.status != "duplicate":
            # A worker that took over a stale claim settled first: keep its record, not ours.
            log.warning("%s settled twice; removing the extra record %s", ref, conversion.record_id)
            self.catalog.delete(conversion.record_id)
            return _from_outcome(ref, standing)
        return conversion

    def _ingest(
        self, ref: ObjectRef, read: Callable[[], SourceObject], formats: tuple[str, ...] | None
    ) -> Conversion:
        """Read the original and run it through the pipeline; a permanent refusal is returned,
        anything a retry may cure (5xx, 409) is raised."""
        try:
            original = read()
            options = UploadOptions(
                formats=formats or formats_for(original.metadata, self.settings),
                name=original.metadata.get("name") or PurePosixPath(ref.name).name,
            )
            result = self.pipeline.ingest(original.data, options, max_bytes=self.max_bytes)
        except ImagingError as exc:
            if not permanent(exc):
                raise
            log.warning("refused %s: %s (%s)", ref, exc.code, exc.detail or exc.public_message)
            return Conversion(ref, "refused", code=exc.code, reason=exc.public_message)
        status = "duplicate" if result.duplicate else "converted"
        return Conversion(ref, status, record_id=result.record.id)


def permanent(exc: ImagingError) -> bool:
    """4xx refusals are about the bytes or their options; 409 and 5xx may pass on a retry."""
    return exc.status < 500 and not isinstance(exc, ObjectExists)


def _from_outcome(ref: ObjectRef, outcome: Outcome) -> Conversion:
    if outcome.status == "refused":
        return Conversion(ref, "refused", code=outcome.code, reason=outcome.reason, earlier=True)
    return Conversion(ref, "duplicate", record_id=outcome.record_id, earlier=True)


# -- fan-out ---------------------------------------------------------------------------------
class WorkerPool:
    """At most ``workers`` conversions at once, at most ``backlog`` more waiting; then Busy."""

    def __init__(self, workers: int, *, backlog: int | None = None) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convert")
        self._admission = threading.BoundedSemaphore(
            workers + (workers if backlog is None else backlog)
        )

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the pool and wait for it (the caller's request stays open)."""
        future = self.submit(fn, *args)
        return future.result()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        if not self._admission.acquire(blocking=False):
            raise Busy("Every conversion worker is busy. Please retry shortly.", retry_after=10)

        def job() -> T:
            try:
                return fn(*args)
            finally:
                # Before the result is published, so a caller that saw it may submit again.
                self._admission.release()

        try:
            return self._executor.submit(job)
        except BaseException:
            self._admission.release()
            raise
