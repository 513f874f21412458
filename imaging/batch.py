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

``run_batch`` is ``flask convert-batch``: a bucket prefix or a local directory, through the
same converter (bucket) or straight through ``pipeline.ingest`` (directory), a few at a time.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import click
from flask.cli import with_appcontext
from google.api_core import exceptions as api_exceptions
from google.auth.exceptions import GoogleAuthError

from imaging.catalog import HASH_PREFIX, IMAGE_PREFIX, LABEL_PREFIX, RECORD_PREFIX, Catalog
from imaging.config import Settings
from imaging.errors import Busy, ImagingError, ObjectExists, Unavailable
from imaging.events import EVENT_PREFIX, EventLedger, Outcome
from imaging.formats import parse_format_list
from imaging.pipeline import Pipeline, UploadOptions
from imaging.sources import BucketSource, ObjectRef, list_directory, parse_gs_url

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Keys the app itself writes: an event or a batch over the app's own bucket must skip them,
#: or every variant written would come back as a new upload. ``tmp/`` and ``upl/`` are the
#: direct-upload door's (imaging/direct.py), which completes its own uploads.
OWN_PREFIXES = (
    IMAGE_PREFIX,
    RECORD_PREFIX,
    LABEL_PREFIX,
    HASH_PREFIX,
    EVENT_PREFIX,
    "tmp/",
    "upl/",
)


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


def with_byte_limit(pipeline: Pipeline, max_bytes: int) -> Pipeline:
    """The pipeline with a larger byte limit: a shallow copy shares the conversion slots,
    pools, store and catalog, and differs only in ``limits``, which ``ingest`` reads per call."""
    if max_bytes <= pipeline.limits.max_bytes:
        return pipeline
    widened = copy.copy(pipeline)
    widened.limits = dataclasses.replace(pipeline.limits, max_bytes=max_bytes)
    return widened


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
        self.pipeline = with_byte_limit(pipeline, self.max_bytes)
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
            result = self.pipeline.ingest(original.data, options)
        except ImagingError as exc:
            if not _permanent(exc):
                raise
            # Acknowledged, not retried: the same bytes would be refused again forever.
            log.warning("refused %s: %s (%s)", ref, exc.code, exc.detail or exc.public_message)
            refusal = Outcome("refused", code=exc.code, reason=exc.public_message)
            return _from_outcome(ref, self.ledger.settle(ref, refusal))
        standing = self.ledger.settle(ref, Outcome("converted", record_id=result.record.id))
        if standing.record_id != result.record.id and not result.duplicate:
            # A worker that took over a stale claim settled first: keep its record, not ours.
            log.warning("%s settled twice; removing the extra record %s", ref, result.record.id)
            self.catalog.delete(result.record.id)
            return _from_outcome(ref, standing)
        status = "existing" if result.duplicate else "converted"
        return Conversion(ref, status, record_id=result.record.id)


def _permanent(exc: ImagingError) -> bool:
    """4xx refusals are about the bytes or their options; 409 and 5xx may pass on a retry."""
    return exc.status < 500 and not isinstance(exc, ObjectExists)


def _from_outcome(ref: ObjectRef, outcome: Outcome) -> Conversion:
    if outcome.status == "refused":
        return Conversion(ref, "refused", code=outcome.code, reason=outcome.reason)
    return Conversion(ref, "existing", record_id=outcome.record_id)


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
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._admission.release()
            raise
        future.add_done_callback(lambda _: self._admission.release())
        return future


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
        self._client: tuple[int, Any] | None = None
        self._lock = threading.Lock()

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
        pid = os.getpid()
        current = self._client
        if current is None or current[0] != pid:
            with self._lock:
                current = self._client
                if current is None or current[0] != pid:
                    current = (pid, self._make_client())
                    self._client = current
        return current[1]

    def _make_client(self) -> Any:
        from google.cloud import tasks_v2  # only deployments with a queue need it

        if not self.endpoint:
            return tasks_v2.CloudTasksClient(transport="rest")
        options: dict[str, Any] = {"api_endpoint": self.endpoint}
        if self.endpoint.startswith("http://"):
            # A plain-http endpoint is a local stand-in: Google's are https only, so no real
            # credentials are ever sent in clear.
            from google.auth.credentials import AnonymousCredentials

            return tasks_v2.CloudTasksClient(
                transport="rest",
                client_options=options,
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            )
        return tasks_v2.CloudTasksClient(transport="rest", client_options=options)


# -- backfill --------------------------------------------------------------------------------
@dataclass
class BatchReport:
    converted: int = 0
    skipped: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (what, why)

    def add(self, conversion: Conversion, label: str) -> None:
        if conversion.status == "converted":
            self.converted += 1
        elif conversion.status == "existing":
            self.skipped += 1
        else:
            self.refused.append((label, f"{conversion.code}: {conversion.reason}"))

    def summary(self) -> str:
        return f"converted {self.converted}, skipped {self.skipped}, refused {len(self.refused)}"


@dataclass(frozen=True)
class BatchItem:
    label: str  # what the report calls it: gs://bucket/name or the file's path
    run: Callable[[], Conversion]


def bucket_items(
    converter: ObjectConverter,
    bucket: str,
    prefix: str,
    formats: tuple[str, ...] | None,
    *,
    retry_refused: bool = False,
) -> Iterator[BatchItem]:
    """One item per live object under the prefix, converted through the ledger."""
    for listed in converter.source.list(bucket, prefix):
        ref = listed.ref
        if is_own_object(converter.settings, ref):
            continue

        def run(ref: ObjectRef = ref) -> Conversion:
            if retry_refused:
                converter.ledger.forget_refusal(ref)
            return converter.convert(ref, formats)

        yield BatchItem(f"gs://{ref.bucket}/{ref.name}", run)


def directory_items(
    pipeline: Pipeline, root: Path, files: Iterable[Path], formats: tuple[str, ...] | None
) -> Iterator[BatchItem]:
    """One item per file; a re-run is skipped by the pipeline's content-hash duplicate index."""
    settings = pipeline.settings
    chosen = formats or settings.default_formats
    max_bytes = batch_byte_limit(settings)
    pipeline = with_byte_limit(pipeline, max_bytes)

    for path in files:

        def run(path: Path = path) -> Conversion:
            ref = ObjectRef("", str(path), "0")
            if path.stat().st_size > max_bytes:
                return Conversion(
                    ref,
                    "refused",
                    code="too_large",
                    reason=f"The file is larger than the {max_bytes // (1024 * 1024)} MB limit.",
                )
            try:
                result = pipeline.ingest(path.read_bytes(), UploadOptions(chosen, name=path.name))
            except ImagingError as exc:
                if not _permanent(exc):
                    raise
                return Conversion(ref, "refused", code=exc.code, reason=exc.public_message)
            status = "existing" if result.duplicate else "converted"
            return Conversion(ref, status, record_id=result.record.id)

        yield BatchItem(
            str(path.relative_to(root)) if path.is_relative_to(root) else str(path), run
        )


def run_batch(
    items: Iterable[BatchItem],
    *,
    workers: int,
    on_done: Callable[[BatchItem, Conversion], None] = lambda item, c: None,
    attempts: int = 3,
    report: BatchReport | None = None,
) -> BatchReport:
    """Run every item, ``workers`` at a time; a transient failure is retried, then raised.

    Retries cover Busy and InProgress; StorageUnavailable after the store's own retries means
    the storage is down, and the whole run stops (a re-run resumes where this one ended).
    """
    report = BatchReport() if report is None else report
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch")

    def attempt(item: BatchItem) -> Conversion:
        for tries in range(attempts):
            try:
                return item.run()
            except (Busy, InProgress):
                if tries == attempts - 1:
                    raise
                threading.Event().wait(1.0 * (tries + 1))
        raise AssertionError("unreachable")

    try:
        pending: set[Future[Conversion]] = set()
        owners: dict[Future[Conversion], BatchItem] = {}
        for item in items:
            future = pool.submit(attempt, item)
            pending.add(future)
            owners[future] = item
            if len(pending) >= workers * 2:  # bounded: a million-object prefix is not a list
                pending = _drain(pending, owners, report, on_done, first_only=True)
        _drain(pending, owners, report, on_done, first_only=False)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return report


def _drain(
    pending: set[Future[Conversion]],
    owners: dict[Future[Conversion], BatchItem],
    report: BatchReport,
    on_done: Callable[[BatchItem, Conversion], None],
    *,
    first_only: bool,
) -> set[Future[Conversion]]:
    done, still = wait(pending, return_when=FIRST_COMPLETED if first_only else ALL_COMPLETED)
    for future in done:
        item = owners.pop(future)
        conversion = future.result()  # a transient failure that outlived its retries stops all
        report.add(conversion, item.label)
        on_done(item, conversion)
    return set(still)


# -- the command -----------------------------------------------------------------------------
@click.command("convert-batch")
@click.argument("source")
@click.option(
    "--formats",
    default="",
    help="Output formats, e.g. webp,avif (default: each object's 'formats' metadata, "
    "else DEFAULT_FORMATS).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Conversions at once (default: CONVERSION_SLOTS).",
)
@click.option("--retry-refused", is_flag=True, help="Try objects refused by an earlier run again.")
@with_appcontext
def convert_batch_command(
    source: str, formats: str, workers: int | None, retry_refused: bool
) -> None:
    """Backfill SOURCE (gs://bucket/prefix or a local directory) into the gallery.

    Resumable: what an earlier run (or a storage event) converted is skipped. Refused files are
    listed with their reason and do not fail the run; storage being down does (exit 1).
    """
    from flask import current_app

    from imaging.web import Services

    svc: Services = current_app.extensions["imaging"]
    try:
        chosen = parse_format_list(formats) if formats.strip() else None
    except ImagingError as exc:
        raise click.BadParameter(exc.public_message, param_hint="--formats") from None
    items = _items_for(svc, source, chosen, retry_refused=retry_refused)
    report = BatchReport()
    try:
        with click.progressbar(
            length=len(items),
            label=f"Converting {len(items)} file(s)",
            file=sys.stderr,  # stdout keeps only the report
        ) as bar:
            report = run_batch(
                items,
                workers=workers or svc.settings.slots,
                on_done=lambda item, conversion: bar.update(1),
                report=report,
            )
    except Unavailable as exc:
        log.warning("convert-batch stopped: %s", exc.detail or exc.public_message)
        _echo_report(report)
        click.echo(f"stopped: {exc.public_message} Run the command again to resume.", err=True)
        raise SystemExit(1) from None
    _echo_report(report)


def _items_for(
    svc: Any, source: str, formats: tuple[str, ...] | None, *, retry_refused: bool
) -> list[BatchItem]:
    converter = ObjectConverter(
        svc.settings, svc.pipeline, svc.catalog, EventLedger(svc.store), BucketSource()
    )
    if source.startswith("gs://"):
        try:
            bucket, prefix = parse_gs_url(source)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="SOURCE") from None
        try:
            return list(
                bucket_items(converter, bucket, prefix, formats, retry_refused=retry_refused)
            )
        except Unavailable as exc:
            click.echo(f"stopped: {exc.public_message}", err=True)
            raise SystemExit(1) from None
    root = Path(source)
    if not root.is_dir():
        raise click.BadParameter(
            "must be gs://bucket/prefix or an existing directory", param_hint="SOURCE"
        )
    return list(directory_items(svc.pipeline, root, list_directory(root), formats))


def _echo_report(report: BatchReport) -> None:
    for label, reason in sorted(report.refused):
        click.echo(f"refused {label}: {reason}")
    click.echo(report.summary())
