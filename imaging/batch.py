"""Conversions nobody waits for at a browser: storage events, Cloud Tasks, and backfills.

``ObjectConverter.convert`` is the one path for an object already sitting in a bucket: look up
the ledger (done before? answer that), claim the object generation, read it with its metadata,
run it through ``pipeline.ingest`` (the same path as every upload), and settle the outcome in
the ledger. It is idempotent, so Pub/Sub, Eventarc and Cloud Tasks may deliver as often as
they like.

Fan-out has two shapes:

- ``TaskQueue`` (TASKS_QUEUE set): one Cloud Tasks HTTP task per object generation, to this
  same service's ``/tasks/convert``, with an OIDC token; the task name is a hash of
  bucket/object/generation, so Cloud Tasks itself drops a redelivered event's second task.
  One task per object, not per format: a record is written once, last, with every variant
  (the pipeline's commit point), so per-format tasks would need a second, mutable record write
  and a join, and could leave a record pointing at variants a failed task never wrote.
- ``WorkerPool`` (no queue): a small in-process pool; the request that delivered the event
  waits for its conversion (on Cloud Run, CPU is only certain while a request is open), and a
  full pool answers 503 so the sender retries later instead of queueing without bound.

``flask convert-batch`` (imaging/backfill.py) runs a bucket prefix through the same converter.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, TypeVar

from google.api_core import exceptions as api_exceptions
from google.auth.exceptions import GoogleAuthError

from imaging.catalog import OWN_PREFIXES, Catalog
from imaging.config import Settings
from imaging.errors import Busy, ImagingError, ObjectExists, Unavailable
from imaging.events import EventLedger, Outcome
from imaging.formats import parse_format_list
from imaging.gclients import PerProcess, stand_in_credentials
from imaging.pipeline import Pipeline, UploadOptions
from imaging.sources import BucketSource, ObjectRef

log = logging.getLogger(__name__)

T = TypeVar("T")


class InProgress(Unavailable):
    """Another worker holds this object's claim: retry later, by then it will have settled."""

    code = "in_progress"


@dataclass(frozen=True)
class Conversion:
    """What one object came to: ``converted`` (a new record), ``existing`` (settled before, or
    the same bytes and options already had a record) or ``refused`` (permanently: why)."""

    ref: ObjectRef
    status: str
    record_id: str = ""
    code: str = ""
    reason: str = ""
    earlier: bool = False  # settled by an earlier delivery or run, not by this call

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "object": str(self.ref)}
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
    return ref.bucket == settings.gcs_bucket and ref.name.startswith(OWN_PREFIXES)


class ObjectConverter:
    """Turns one object generation into exactly one gallery record (or one refusal)."""

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

        ``formats`` None means: the object's ``formats`` metadata, else DEFAULT_FORMATS.
        """
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

    def _convert_claimed(self, ref: ObjectRef, formats: tuple[str, ...] | None) -> Conversion:
        try:
            original = self.source.read(ref, max_bytes=self.max_bytes)
            options = UploadOptions(
                formats=formats or formats_for(original.metadata, self.settings),
                name=original.metadata.get("name") or PurePosixPath(ref.name).name,
            )
            result = self.pipeline.ingest(original.data, options, max_bytes=self.max_bytes)
        except ImagingError as exc:
            if not permanent(exc):
                raise
            # Acknowledged, not retried: the same bytes would be refused again forever.
            log.warning("refused %s: %s (%s)", ref, exc.code, exc.detail or exc.public_message)
            refusal = Outcome("refused", code=exc.code, reason=exc.public_message)
            standing = self.ledger.settle(ref, refusal)
            if standing != refusal:
                return _from_outcome(ref, standing)  # a concurrent worker settled it first
            return Conversion(ref, "refused", code=exc.code, reason=exc.public_message)
        standing = self.ledger.settle(ref, Outcome("converted", record_id=result.record.id))
        if standing.record_id != result.record.id and not result.duplicate:
            # A worker that took over a stale claim settled first: keep its record, not ours.
            log.warning("%s settled twice; removing the extra record %s", ref, result.record.id)
            self.catalog.delete(result.record.id)
            return _from_outcome(ref, standing)
        status = "existing" if result.duplicate else "converted"
        return Conversion(ref, status, record_id=result.record.id)


def permanent(exc: ImagingError) -> bool:
    """4xx refusals are about the bytes or their options; 409 and 5xx may pass on a retry."""
    return exc.status < 500 and not isinstance(exc, ObjectExists)


def _from_outcome(ref: ObjectRef, outcome: Outcome) -> Conversion:
    if outcome.status == "refused":
        return Conversion(ref, "refused", code=outcome.code, reason=outcome.reason, earlier=True)
    return Conversion(ref, "existing", record_id=outcome.record_id, earlier=True)


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


def task_id(ref: ObjectRef) -> str:
    """A task name Cloud Tasks de-duplicates on: the same object generation, the same name.

    A hash rather than the object name: names may hold any character, and Cloud Tasks spreads
    load best over ids without a common prefix.
    """
    return hashlib.sha256(f"{ref.bucket}\n{ref.name}\n{ref.generation}".encode()).hexdigest()


class TaskQueue:
    """Enqueues ``POST /tasks/convert`` HTTP tasks on a Cloud Tasks queue (REST transport)."""

    def __init__(
        self,
        *,
        queue: str,
        target_url: str,
        service_account: str,
        audience: str,
        endpoint: str = "",
        timeout: float = 10,
    ) -> None:
        self.queue = queue
        self.target_url = target_url
        self.service_account = service_account
        self.audience = audience
        self.endpoint = endpoint
        self._timeout = timeout
        self._client = PerProcess(self._make_client)

    def enqueue(self, ref: ObjectRef, formats: tuple[str, ...] | None = None) -> str:
        """The task's full name; an existing task of that name counts as enqueued."""
        from google.cloud import tasks_v2  # only deployments with a queue need it

        name = f"{self.queue}/tasks/{task_id(ref)}"
        body = {
            "bucket": ref.bucket,
            "name": ref.name,
            "generation": ref.generation,
            "formats": list(formats) if formats else None,
        }
        task = tasks_v2.Task(
            name=name,
            http_request=tasks_v2.HttpRequest(
                url=self.target_url,
                http_method=tasks_v2.HttpMethod.POST,
                headers={"Content-Type": "application/json"},
                body=json.dumps(body).encode(),
                # The audience is the service URL, the same one storage events are checked
                # against, rather than the default (the full task URL).
                oidc_token=tasks_v2.OidcToken(
                    service_account_email=self.service_account, audience=self.audience
                ),
            ),
        )
        try:
            self._client_for_process().create_task(
                parent=self.queue, task=task, timeout=self._timeout
            )
        except api_exceptions.Conflict:
            log.info("task %s exists already: the event was delivered before", name)
        except (api_exceptions.GoogleAPIError, GoogleAuthError, OSError) as exc:
            raise Unavailable(
                "The task queue is unavailable. Please retry shortly.",
                detail=f"create_task {name} failed: {exc!r}",
            ) from exc
        return name

    def _client_for_process(self) -> Any:
        return self._client.get()

    def _make_client(self) -> Any:
        from google.cloud import tasks_v2  # only deployments with a queue need it

        if not self.endpoint:
            return tasks_v2.CloudTasksClient(transport="rest")
        return tasks_v2.CloudTasksClient(
            transport="rest",
            client_options={"api_endpoint": self.endpoint},
            **stand_in_credentials(self.endpoint),
        )
