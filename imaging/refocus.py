"""Moving an image's focal point after upload: its cover crops cut again from the kept original.

An upload whose cover output was cropped keeps its own bytes privately (``src/<id>/original``,
pipeline step 4). ``Refocus.refocus(record, point)`` cuts every cropped variant again from them,
centred on ``point``, in this order:

1. read the original and render the cropped variants again (the upload's own options, the same
   decode, under a conversion slot), all within UPLOAD_DEADLINE;
2. write them create-only under NEW keys (``img/<id>/<variant>-<revision>.<ext>``): a URL never
   changes what it shows, so no cache or CDN can serve a stale crop;
3. commit: overwrite the record (``Catalog.update``), the receipt saying ``crop: focus`` and the
   point;
4. delete the files the old record named (best effort: ``flask gc`` removes what is missed).

A failure before the commit removes the new files and leaves the old record and its files as
they were; a commit whose outcome cannot be told leaves both sets of files (the record names one
of them, ``flask gc`` removes the other). No Flask here.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import threading
import zlib
from collections.abc import Iterator
from typing import Any, NoReturn

from imaging import processing, storage
from imaging.catalog import ImageRecord, Variant, new_revision, variant_key
from imaging.errors import (
    Busy,
    Conflict,
    ImagingError,
    ObjectNotFound,
    StorageUnavailable,
)
from imaging.pipeline import CLEANUP_SECONDS, Pipeline, UploadOptions
from imaging.processing import Focus, Rendition
from imaging.storage import IMMUTABLE_CACHE_CONTROL

log = logging.getLogger(__name__)

NOT_CROPPED = (
    "This image has no cropped variants (fit=cover cutting part of the picture away), "
    "so a focal point would change nothing."
)
NOT_KEPT = (
    "The original of this image was not kept (it was uploaded before originals were kept "
    "for re-cropping), so its crop cannot be moved. Upload it again with focus=x,y."
)
UNCHANGED = "Storage is unavailable; the image is unchanged. Please retry shortly."
UNSURE = (
    "Storage failed while saving the new crop; it may or may not have been saved. "
    "Reload the image to see which."
)
#: Re-crops of one image in this process go one at a time (striped locks: bounded memory).
LOCK_STRIPES = 64


class Refocus:
    """Cuts a cover-cropped image's variants again around a new focal point."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.store = pipeline.store
        self.catalog = pipeline.catalog
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]

    def refocus(self, record: ImageRecord, point: tuple[float, float]) -> ImageRecord:
        """``record`` with its cropped variants cut again around ``point`` (x, y in 0..1),
        committed; Conflict (409) when it has no cropped variants or no kept original."""
        check_refocusable(record)
        with storage.within(self.settings.upload_deadline), self._one_at_a_time(record.id):
            current = self.catalog.get(record.id)  # the newest, now that no re-crop races us
            check_refocusable(current)
            data = self._original(current)
            renditions = self._render(current, data, point)
            new = refocused(current, renditions, point, revision=new_revision())
            written: list[str] = []
            try:
                self._store(new, renditions, written)
            except BaseException as exc:
                self._discard(written)
                _raise_unchanged(exc)
            self._commit(current, new, written)
        old = set(current.file_keys()) - set(new.file_keys())
        with storage.within(CLEANUP_SECONDS, retries=False):
            self.catalog.discard(old)
        log.info("refocus %s: cropped again around %s", new.id, point)
        return new

    @contextlib.contextmanager
    def _one_at_a_time(self, image_id: str) -> Iterator[None]:
        lock = self._locks[zlib.crc32(image_id.encode()) % LOCK_STRIPES]
        deadline = storage.current_deadline()
        wait = max(0.0, deadline.remaining()) if deadline is not None else -1
        if not lock.acquire(timeout=wait):
            raise Busy("This image is being cropped again already. Please retry.", retry_after=5)
        try:
            yield
        finally:
            lock.release()

    def _original(self, record: ImageRecord) -> bytes:
        try:
            return self.store.get(record.source_keys()[0])
        except ObjectNotFound:
            raise Conflict(NOT_KEPT, detail=f"{record.id}: the kept original is gone") from None
        except ImagingError:
            raise
        except Exception as exc:
            _raise_unchanged(exc)

    def _render(
        self, record: ImageRecord, data: bytes, point: tuple[float, float]
    ) -> dict[str, Rendition]:
        """The cropped variants again, as the upload made them but centred on ``point``."""
        pipeline = self.pipeline
        recipe: dict[str, Any] = dict(record.original.get("options") or {})
        options = UploadOptions.from_recipe(tuple(v.name for v in record.variants), recipe)
        # The upload passed its own byte limit (a direct upload's may be higher): the same bytes
        # pass again; every other limit is the configured one.
        probed = pipeline._probe(data, max(len(data), pipeline.limits.max_bytes))
        specs = pipeline._specs(options)
        with pipeline.conversion_slot():
            decoded = pipeline._decode(data, probed, specs)
            framed, framing = processing.frame(
                decoded, specs, max_side=self.settings.max_output_side, focus=Focus(*point)
            )
            if framing is None:  # the crop settings changed since: nothing is cut now
                raise Conflict(NOT_CROPPED, detail=f"{record.id}: no output cuts anything now")
            cropped = [name for name, spec in framed.items() if spec.focus is not None]
            return {name: pipeline._encode(decoded, framed[name]) for name in cropped}

    def _store(
        self, record: ImageRecord, renditions: dict[str, Rendition], written: list[str]
    ) -> None:
        """Write the new files create-only, in parallel, each key added to ``written`` first."""
        files = [v for v in record.files() if v.name in renditions]

        def put(variant: Variant) -> None:
            rendition = renditions[variant.name]
            self.store.put(
                record.stored_key(variant.key),
                rendition.data,
                content_type=rendition.mime,
                cache_control=IMMUTABLE_CACHE_CONTROL,
            )

        written.extend(record.stored_key(v.key) for v in files)
        pool = self.pipeline._write_pool
        futures = [pool.submit(contextvars.copy_context().run, put, v) for v in files]
        errors = [f.exception() for f in futures]  # wait for all: none may land after clean-up
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    def _commit(self, old: ImageRecord, new: ImageRecord, written: list[str]) -> None:
        """Overwrite the record; on failure, keep the new files only if it may have landed."""
        try:
            self.catalog.update(old, new)
        except BaseException as exc:
            with storage.within(CLEANUP_SECONDS, retries=False):
                try:
                    landed = self.store.get(new.location()) == new.to_json()
                except Exception:
                    raise StorageUnavailable(UNSURE, detail=f"refocus {new.id}: {exc}") from exc
                if landed:
                    return
                self.catalog.discard(written)
            _raise_unchanged(exc)

    def _discard(self, keys: list[str]) -> None:
        with storage.within(CLEANUP_SECONDS, retries=False):
            self.catalog.discard(keys)


def check_refocusable(record: ImageRecord) -> None:
    """Conflict (409) unless ``record`` has cropped variants and a kept original."""
    if "crop" not in record.receipt:
        raise Conflict(NOT_CROPPED)
    if not record.source_keys():
        raise Conflict(NOT_KEPT)


def refocusable(record: ImageRecord) -> bool:
    """Whether ``refocus`` can move this record's crop (what the pages offer)."""
    return "crop" in record.receipt and bool(record.source_keys())


def refocused(
    record: ImageRecord,
    renditions: dict[str, Rendition],
    point: tuple[float, float],
    *,
    revision: str,
) -> ImageRecord:
    """``record`` naming ``renditions`` (new files under ``revision`` keys) instead of its
    variants of the same names, the receipt saying the crop follows ``point``."""

    def swap(v: Variant) -> Variant:
        r = renditions.get(v.name)
        if r is None:
            return v
        return Variant(
            name=v.name,
            format=r.format,
            key=variant_key(record.id, v.name, r.ext, revision),
            content_type=r.mime,
            bytes=len(r.data),
            width=r.width,
            height=r.height,
            frames=r.frames,
        )

    variants = tuple(swap(v) for v in record.variants)
    thumbnail = swap(record.thumbnail)
    receipt = dict(record.receipt)
    receipt["crop"], receipt["focus"] = "focus", [point[0], point[1]]
    receipt["bytes"] = {
        **dict(receipt.get("bytes") or {}),
        **{v.name: v.bytes for v in (*variants, thumbnail) if v.name in renditions},
    }
    return dataclasses.replace(record, variants=variants, thumbnail=thumbnail, receipt=receipt)


def _raise_unchanged(exc: BaseException) -> NoReturn:
    """Raise ``exc`` as the owner must hear it: a storage failure says nothing changed."""
    if isinstance(exc, StorageUnavailable):
        raise StorageUnavailable(UNCHANGED, detail=exc.detail, retry_after=exc.retry_after) from exc
    if isinstance(exc, ImagingError) or not isinstance(exc, Exception):
        raise exc
    raise StorageUnavailable(UNCHANGED, detail=f"{type(exc).__name__}: {exc}") from exc


__all__ = ["NOT_CROPPED", "NOT_KEPT", "Refocus", "check_refocusable", "refocusable", "refocused"]
