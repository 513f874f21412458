"""``flask convert-batch``: backfill existing images from a bucket prefix or a local directory.

Both go through the app's one ``ObjectConverter`` (imaging/doors/convert.py). A bucket's objects
take the same path and the same ``evt/`` ledger as storage events: an object an event already
converted, or an earlier run converted or refused, is skipped without being downloaded, so a run
stopped halfway resumes where it ended. A directory's files take the same reading and refusals
without the ledger; the content-hash duplicate index makes a re-run find the records it made
(refused files are checked again: a plain disk has no generation to remember them by).

A few conversions run at once (CONVERSION_SLOTS by default), with at most twice that many in
flight: the listing is held (names, for the progress bar), originals' bytes only while in
flight. A refused file is reported and the run goes on (exit 0); storage being unreachable
stops it (exit 1).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from imaging.doors.convert import Conversion, InProgress, ObjectConverter, is_own_object
from imaging.doors.sources import ObjectRef, list_directory, parse_gs_url
from imaging.errors import Busy, ImagingError, Unavailable
from imaging.formats import parse_format_list
from imaging.services import services_of

log = logging.getLogger(__name__)


# -- backfill --------------------------------------------------------------------------------
@dataclass
class BatchReport:
    converted: int = 0
    skipped: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    refused_before: int = 0  # skipped because an earlier run refused them

    def add(self, conversion: Conversion, label: str) -> None:
        if conversion.status == "converted":
            self.converted += 1
        elif conversion.status == "duplicate":
            self.skipped += 1
        elif conversion.earlier:
            self.skipped += 1
            self.refused_before += 1
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
    for ref in converter.source.list(bucket, prefix):
        if is_own_object(converter.settings, ref):
            continue

        def run(ref: ObjectRef = ref) -> Conversion:
            if retry_refused:
                converter.ledger.forget_refusal(ref)
            return converter.convert(ref, formats)

        yield BatchItem(f"gs://{ref.bucket}/{ref.name}", run)


def directory_items(
    converter: ObjectConverter, root: Path, files: Iterable[Path], formats: tuple[str, ...] | None
) -> Iterator[BatchItem]:
    """One item per file; a re-run is skipped by the pipeline's content-hash duplicate index."""
    for path in files:

        def run(path: Path = path) -> Conversion:
            return converter.convert_file(path, formats)

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
            if len(pending) >= workers * 2:  # bounded: only these hold an original's bytes
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
    svc = services_of(current_app)
    try:
        chosen = parse_format_list(formats) if formats.strip() else None
    except ImagingError as exc:
        raise click.BadParameter(exc.public_message, param_hint="--formats") from None
    items = _items_for(svc.converter, source, chosen, retry_refused=retry_refused)
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
    converter: ObjectConverter,
    source: str,
    formats: tuple[str, ...] | None,
    *,
    retry_refused: bool,
) -> list[BatchItem]:
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
    return list(directory_items(converter, root, list_directory(root), formats))


def _echo_report(report: BatchReport) -> None:
    for label, reason in sorted(report.refused):
        click.echo(f"refused {label}: {reason}")
    if report.refused_before:
        click.echo(
            f"({report.refused_before} of the skipped were refused by an earlier run; "
            "--retry-refused tries them again)"
        )
    click.echo(report.summary())
