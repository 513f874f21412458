"""ingest(): THE path every upload takes, whatever door it came through.

probe -> (duplicate?) -> decode + render under a conversion slot, labeling the small copy
concurrently -> store the variants (create-only) -> save the record LAST (the commit point).
If anything fails before the commit point, every object already written is removed and the
caller gets a clear error; a record never points at a missing object.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import secrets
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime

from imaging import observability, processing
from imaging.catalog import Catalog, ImageRecord, Variant, hash_delete_key, new_id, variant_key
from imaging.config import Settings
from imaging.errors import (
    BadRequest,
    Busy,
    ImagingError,
    LabelerUnavailable,
    StorageUnavailable,
)
from imaging.formats import OUTPUT_FORMATS
from imaging.labeling import Labeler, LabelResult
from imaging.processing import Limits, RenderSpec, Rendition
from imaging.storage import IMMUTABLE_CACHE_CONTROL, ObjectStore

log = logging.getLogger(__name__)

FIT_MODES = processing.FIT_MODES
QUALITY_RANGE = (1, 100)
LIKELIHOODS = ("UNKNOWN", "VERY_UNLIKELY", "UNLIKELY", "POSSIBLE", "LIKELY", "VERY_LIKELY")


@dataclass(frozen=True)
class UploadOptions:
    """What the uploader asked for. Limits are never options: they come from Settings."""

    formats: tuple[str, ...]
    width: int | None = None
    height: int | None = None
    fit: str = "contain"
    quality: int | None = None
    lossless: bool = False
    name: str = ""

    def content_key(self, data: bytes) -> str:
        """Same bytes + same conversion options = same key (the name does not matter)."""
        digest = hashlib.sha256(data)
        options = [list(self.formats), self.width, self.height, self.fit, self.quality]
        digest.update(json.dumps([*options, self.lossless]).encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class IngestResult:
    record: ImageRecord
    duplicate: bool = False
    delete_key: str | None = None  # shown to the uploader once; only its hash is stored
    renditions: dict[str, Rendition] = field(default_factory=dict)


class Pipeline:
    def __init__(
        self, settings: Settings, store: ObjectStore, labeler: Labeler, catalog: Catalog
    ) -> None:
        self.settings = settings
        self.store = store
        self.labeler = labeler
        self.catalog = catalog
        self.limits = Limits(
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_pixels,
            max_side=settings.max_side,
            max_frames=settings.max_frames,
        )
        # The CPU-bound work (decode + encode) runs in at most `slots` threads per process, so
        # extra requests queue here instead of oversubscribing the cores.
        self._slots = threading.BoundedSemaphore(settings.slots)
        self._label_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="label")
        self._write_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="store")

    def ingest(
        self, data: bytes, options: UploadOptions, *, max_bytes: int | None = None
    ) -> IngestResult:
        """Convert, label, store and catalog one upload; return its committed record.

        ``max_bytes`` raises the file-size limit for doors that bypass the request cap
        (direct uploads); every other limit stays the configured one.
        """
        try:
            result = self._ingest(data, options, max_bytes)
        except ImagingError as exc:
            observability.count_upload(exc.code)
            raise
        except Exception:
            observability.count_upload("internal")
            raise
        observability.record_upload(result.record, duplicate=result.duplicate)
        return result

    def _ingest(self, data: bytes, options: UploadOptions, max_bytes: int | None) -> IngestResult:
        limits = self.limits
        if max_bytes is not None:
            limits = dataclasses.replace(limits, max_bytes=max_bytes)
        probed = processing.probe(data, limits)
        content_key = options.content_key(data)
        existing = self.catalog.find_duplicate(content_key)
        if existing is not None:
            return IngestResult(existing, duplicate=True)

        image_id = new_id()
        specs = self._specs(options)
        label_future: Future[LabelResult] | None = None
        renditions: dict[str, Rendition] = {}
        started = time.monotonic()
        with self._conversion_slot(), observability.converting(probed.format):
            decoded = observability.traced("decode", processing.decode)(
                data,
                probed,
                specs=list(specs.values()),
                max_side=self.settings.max_output_side,
                keep_copyright=self.settings.keep_copyright,
            )
            # When every output fits one box, scale to it once and render from there: the
            # thumbnail and the label copy then resample the small pixels, not the source.
            box = _shared_box([spec for name, spec in specs.items() if name != "thumb"])
            if box is not None:
                decoded = processing.shrink(decoded, box, max_side=self.settings.max_output_side)
            if self.labeler.name != "none":
                # Label the small copy while the variants encode: labels cost no extra latency.
                label_copy = self._render(decoded, self._preset_spec("label", "jpeg"))
                label_future = self._label_pool.submit(
                    observability.timed_label(self.labeler), label_copy.data
                )
            for name, spec in specs.items():
                renditions[name] = self._render(decoded, spec)
            receipt = decoded.receipt()
            warnings = list(decoded.warnings)
            del decoded  # the full-size pixels are the biggest thing we hold: free them now
        warnings += [r.warning for r in renditions.values() if r.warning]
        result, label_status = self._collect_labels(label_future, started)

        variants = {
            name: Variant(
                name=name,
                format=r.format,
                key=variant_key(image_id, name, r.ext),
                content_type=r.mime,
                bytes=len(r.data),
                width=r.width,
                height=r.height,
                frames=r.frames,
            )
            for name, r in renditions.items()
        }
        receipt.update(
            source_format=probed.format,
            source_width=probed.width,
            source_height=probed.height,
            source_bytes=probed.bytes,
            source_frames=probed.frames,
            bytes={name: v.bytes for name, v in variants.items()},
        )
        delete_key = secrets.token_urlsafe(24)
        record = ImageRecord(
            id=image_id,
            name=_display_name(options.name),
            created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            source_format=probed.format,
            width=probed.width,
            height=probed.height,
            bytes=probed.bytes,
            variants=tuple(v for name, v in variants.items() if name != "thumb"),
            thumbnail=variants["thumb"],
            labels=result.labels,
            label_status=label_status,
            safe_search=dict(result.safe_search),
            hidden=self._held_back(result),
            content_key=content_key,
            delete_key_hash=hash_delete_key(delete_key),
            warnings=tuple(dict.fromkeys(warnings)),
            receipt=receipt,
        )
        objects = {variants[n].key: r for n, r in renditions.items()}
        observability.traced("store", self._commit)(record, objects)
        return IngestResult(record, delete_key=delete_key, renditions=renditions)

    # -- steps -----------------------------------------------------------------------------
    def _specs(self, options: UploadOptions) -> dict[str, RenderSpec]:
        if not options.formats:
            raise BadRequest("Ask for at least one output format.")
        if options.fit not in FIT_MODES:
            raise BadRequest(f"fit must be one of: {', '.join(FIT_MODES)}.")
        specs = {
            fmt: RenderSpec(
                format=fmt,
                width=options.width,
                height=options.height,
                fit=options.fit,
                quality=options.quality if OUTPUT_FORMATS[fmt].default_quality else None,
                lossless=options.lossless and fmt == "webp",
            )
            for fmt in options.formats
        }
        specs["thumb"] = self._preset_spec("thumb", "webp")
        return specs

    def _preset_spec(self, preset: str, fmt: str) -> RenderSpec:
        p = self.settings.presets[preset]
        return RenderSpec(format=fmt, width=p.width, height=p.height, fit=p.fit, animate=False)

    def _render(self, decoded: processing.Decoded, spec: RenderSpec) -> Rendition:
        return observability.traced("encode", processing.render, format=spec.format)(
            decoded,
            spec,
            max_side=self.settings.max_output_side,
            background=self.settings.background,
        )

    def _conversion_slot(self) -> Slot:
        return Slot(self._slots, self.settings.conversion_wait)

    def _collect_labels(
        self, future: Future[LabelResult] | None, started: float
    ) -> tuple[LabelResult, str]:
        if future is None:
            return LabelResult(), "off"
        remaining = max(0.0, self.settings.label_timeout - (time.monotonic() - started))
        try:
            result = future.result(timeout=remaining)
        except FutureTimeout:
            future.cancel()
            log.warning("labeler %s timed out after %.1fs", self.labeler.name, remaining)
            return LabelResult(), "error"
        except LabelerUnavailable as exc:
            log.warning("labeler %s failed: %s", self.labeler.name, exc)
            return LabelResult(), "error"
        except Exception:  # a labeler bug must not cost the user their upload
            log.exception("labeler %s raised unexpectedly", self.labeler.name)
            return LabelResult(), "error"
        return result, ("ok" if result.labels else "empty")

    def _held_back(self, result: LabelResult) -> bool:
        threshold = self.settings.safe_search_hide
        if not threshold or not result.safe_search:
            return False
        level = LIKELIHOODS.index(threshold)
        return any(
            LIKELIHOODS.index(result.safe_search.get(category, "UNKNOWN")) >= level
            for category in ("adult", "violence", "racy")
            if result.safe_search.get(category, "UNKNOWN") in LIKELIHOODS
        )

    def _commit(self, record: ImageRecord, objects: dict[str, Rendition]) -> None:
        """Write every variant, then the record; on any failure remove what was written."""
        written: list[str] = []
        lock = threading.Lock()

        def put(item: tuple[str, Rendition]) -> None:
            key, rendition = item
            self.store.put(
                key,
                rendition.data,
                content_type=rendition.mime,
                cache_control=IMMUTABLE_CACHE_CONTROL,
            )
            with lock:
                written.append(key)

        try:
            futures = [self._write_pool.submit(put, item) for item in objects.items()]
            errors = [f.exception() for f in futures]
            first = next((e for e in errors if e is not None), None)
            if first is not None:
                raise first
            self.catalog.save(record)
        except BaseException as exc:
            self.catalog.discard([*written, *record.marker_keys()])
            if isinstance(exc, ImagingError):
                raise
            if isinstance(exc, Exception):
                raise StorageUnavailable(
                    "Storage is unavailable; nothing was saved. Please retry shortly.",
                    detail=f"{type(exc).__name__}: {exc}",
                ) from exc
            raise


class Slot:
    """A conversion slot: waits up to ``wait`` seconds, then refuses with 503 Retry-After."""

    def __init__(self, semaphore: threading.BoundedSemaphore, wait: float) -> None:
        self._semaphore = semaphore
        self._wait = wait

    def __enter__(self) -> None:
        if not self._semaphore.acquire(timeout=self._wait):
            raise Busy(
                "Every conversion slot is busy. Please retry in a few seconds.", retry_after=5
            )

    def __exit__(self, *exc: object) -> None:
        self._semaphore.release()


def _shared_box(specs: list[RenderSpec]) -> tuple[int, int] | None:
    """The one box every output fits into, when all are ``contain`` fits with a box."""
    if not specs or any(s.fit != "contain" or s.upscale for s in specs):
        return None
    if any(s.width is None and s.height is None for s in specs):
        return None  # a full-size output needs the full pixels
    big = 1 << 30  # a missing side does not constrain
    return (
        max(s.width or big for s in specs),
        max(s.height or big for s in specs),
    )


def _display_name(name: str) -> str:
    """A display name only: never a path. Control characters go, length is capped."""
    cleaned = "".join(ch for ch in name if ch.isprintable()).strip()
    return cleaned[:200] or "untitled"
