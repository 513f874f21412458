"""Prometheus metrics: the counters and histograms the pipeline and error handlers feed, and
their text exposition (which the web layer serves at ``GET /metrics``).

The objects are defined once per process at import. Under gunicorn this package is first
imported in each worker, after gunicorn.conf.py has set PROMETHEUS_MULTIPROC_DIR, so the values
go to files the workers share.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from imaging.observability import context

if TYPE_CHECKING:
    from imaging.catalog import ImageRecord

__all__ = [
    "CONVERSION_SECONDS",
    "ERRORS",
    "IN_FLIGHT",
    "LABELER_SECONDS",
    "SOURCE_BYTES",
    "UPLOADS",
    "VARIANT_BYTES",
    "converting",
    "count_error",
    "count_upload",
    "exposition",
    "record_upload",
]

_BYTES = (16e3, 64e3, 256e3, 1e6, 4e6, 16e6, 64e6)
_CONVERSION_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
_LABEL_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16)

UPLOADS = Counter(
    "uploads",
    "Uploads through the pipeline by outcome: created, duplicate, or the error code.",
    ["outcome"],
)
SOURCE_BYTES = Histogram(
    "upload_source_bytes",
    "Size of each converted upload's original, by its real (sniffed) format.",
    ["source_format"],
    buckets=_BYTES,
)
VARIANT_BYTES = Histogram(
    "variant_bytes",
    "Size of each stored variant (thumbnail included), by source and output format.",
    ["source_format", "output_format"],
    buckets=_BYTES,
)
CONVERSION_SECONDS = Histogram(
    "conversion_seconds",
    "Decode + encode time of one upload inside its conversion slot, by source format.",
    ["source_format"],
    buckets=_CONVERSION_SECONDS,
)
LABELER_SECONDS = Histogram(
    "labeler_seconds",
    "Duration of one labeler call, by labeler and outcome (ok or error).",
    ["labeler", "outcome"],
    buckets=_LABEL_SECONDS,
)
ERRORS = Counter(
    "errors",
    "Error responses by type: the error code, or 'internal' for an unexpected exception.",
    ["type"],
)
IN_FLIGHT = Gauge(
    "conversions_in_flight",
    "Uploads decoding or encoding right now (summed over live workers).",
    multiprocess_mode="livesum",
)


def count_upload(outcome: str) -> None:
    """One upload ended: ``created``, ``duplicate`` or the ImagingError code that stopped it."""
    UPLOADS.labels(outcome).inc()


def record_upload(record: ImageRecord, *, duplicate: bool) -> None:
    """Count a finished upload, measure what it produced and name its image in the request log."""
    count_upload("duplicate" if duplicate else "created")
    if not duplicate:
        SOURCE_BYTES.labels(record.source_format).observe(record.bytes)
        for variant in (*record.variants, record.thumbnail):
            VARIANT_BYTES.labels(record.source_format, variant.format).observe(variant.bytes)
    context.touch_image(record.id)


def count_error(code: str) -> None:
    """An error response went out (called by the web layer's error handlers)."""
    ERRORS.labels(code).inc()


@contextmanager
def converting(source_format: str) -> Iterator[None]:
    """Around the CPU-bound part of an upload: the in-flight gauge and the conversion histogram."""
    started = time.perf_counter()
    IN_FLIGHT.inc()
    try:
        yield
    finally:
        IN_FLIGHT.dec()
        CONVERSION_SECONDS.labels(source_format).observe(time.perf_counter() - started)


def exposition() -> tuple[bytes, str]:
    """``(body, content_type)`` in Prometheus text format: every worker's numbers when gunicorn
    runs several of them."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST
