"""The Catalog: records and indexes read and written through an ObjectStore (keys: ``keys``).

A record SafeSearch holds back (``hidden: true``) lives in the private ``held/`` namespace from
the moment it is committed: its record and files sit under ``held/`` + the key they will have
once public, and it has no ``lbl/``, ``idx/`` or ``phash/`` markers. Every listing the gallery,
the label pages, searches and the cursors are built from (``rec/``, ``lbl/``, ``idx/``) therefore
holds visible images only, the media route
(``img/`` only) cannot serve it, and on GCS it stays in the private bucket. The record keeps the
public keys, so approving it (``Catalog.approve``) copies its files to them and changes nothing
else in the record but ``hidden``.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from imaging.catalog import sweep
from imaging.catalog.claims import claim_body, claim_key, claim_owner
from imaging.catalog.keys import (
    HELD_PREFIX,
    HELD_RECORD_PREFIX,
    LABEL_PREFIX,
    RECORD_PREFIX,
    held_key,
    is_valid_id,
    iter_keys,
    label_slug,
    record_key,
)
from imaging.catalog.records import ImageRecord, Page, Scan, Variant
from imaging.errors import (
    ImagingError,
    NotFound,
    ObjectExists,
    ObjectNotFound,
    StorageUnavailable,
    UnreadableRecord,
)
from imaging.storage import IMMUTABLE_CACHE_CONTROL, ObjectStore

log = logging.getLogger(__name__)

#: What parsing a record that is not (or no longer) one this code wrote raises: not JSON, or
#: JSON of another shape (a hand edit, a truncated copy, a shape older than this code).
UNPARSEABLE = (ValueError, TypeError, KeyError, AttributeError, RecursionError)
#: How many unreadable record keys a process remembers having logged (each is logged once).
REPORTED_MAX = 10_000


class Catalog:
    """Reads and writes records and indexes through an ObjectStore."""

    def __init__(self, store: ObjectStore, *, read_workers: int = 24) -> None:
        self.store = store
        # A gallery page reads up to 24 records: one wave of parallel reads on Cloud Storage.
        self._pool = ThreadPoolExecutor(max_workers=read_workers, thread_name_prefix="catalog")
        self._reported: set[str] = set()
        self._reported_lock = threading.Lock()

    # -- writing ---------------------------------------------------------------------------
    def save(self, record: ImageRecord, *, written: list[str] | None = None) -> None:
        """Write the index markers, then the record: the commit point of an upload (a held-back
        record goes to ``held/rec/``, its files having gone to ``held/img/``).

        Each key is appended to ``written`` as its write starts (a write that fails may still
        have landed), so a clean-up removes what was tried and nothing else.
        """
        tried = written if written is not None else []
        markers = record.marker_keys()
        tried.extend(markers)
        self._put_markers(markers)
        tried.append(record.location())
        self._put_record(record)

    # -- the content key's claim -----------------------------------------------------------
    def claim(self, content_key: str, image_id: str) -> bool:
        """Claim ``content_key`` for ``image_id``, create-only: False if another id holds it."""
        try:
            self.store.put(
                claim_key(content_key), claim_body(image_id), content_type="application/json"
            )
        except ObjectExists:
            return False
        return True

    def claimant(self, content_key: str) -> str | None:
        """The id holding ``content_key``'s claim; None if there is no (readable) claim."""
        try:
            return claim_owner(self.store.get(claim_key(content_key)))
        except ObjectNotFound:
            return None

    def release(self, content_key: str, image_id: str) -> bool:
        """Remove ``content_key``'s claim if ``image_id`` still holds it: True if removed."""
        return self.store.delete_if_holds(claim_key(content_key), claim_body(image_id))

    # -- within save -------------------------------------------------------------------------
    def _put_markers(self, keys: Iterable[str]) -> None:
        """Put empty markers in parallel (a dozen per upload: one round trip, not twelve).

        Every put is waited for, failed or not, before the first failure is raised: a caller's
        clean-up must not run while a marker is still in flight (it would land after it).
        """
        puts = [
            self._pool.submit(contextvars.copy_context().run, self._put_marker, key) for key in keys
        ]
        failed = [e for e in (p.exception() for p in puts) if e is not None]
        if failed:
            raise failed[0]

    def _put_marker(self, key: str) -> None:
        self.store.put(key, b"", content_type="application/octet-stream")

    def approve(self, image_id: str) -> ImageRecord:
        """Let a record SafeSearch held back into the gallery: move it out of ``held/``.

        In this order: copy each file from ``held/img/...`` to its public ``img/...`` key, put
        the label markers, then put the record (``hidden: false``) at ``rec/<id>.json``, the
        commit point; only then remove the ``held/`` objects. So:

        - a failure before the commit point removes the public copies made so far and raises
          StorageUnavailable (503): the image stays held and complete, and approving again
          starts over (create-only puts of the same bytes succeed);
        - a failure removing the ``held/`` leftovers costs nothing: the public record wins on
          every read and ``sweep`` removes them;
        - the approved record and files are pure functions of the held ones, so two admins
          approving at once both succeed (create-only accepts identical bytes);
        - approving is idempotent: a record that is not hidden is returned unchanged.
        """
        held = self.get(image_id)
        if not held.hidden:
            return held
        approved = replace(held, hidden=False)
        public = [v.key for v in held.files()]
        markers = approved.public_marker_keys()
        try:
            # Wait for every copy, failed or not, so the clean-up below misses none in flight.
            copies = [self._pool.submit(self._publish, v) for v in held.files()]
            failed = [e for e in (c.exception() for c in copies) if e is not None]
            if failed:
                raise failed[0]
            self._put_markers(markers)
            self._put_record(approved)
        except Exception as exc:
            if not self._committed(image_id):
                self.discard([*public, *markers])
            raise StorageUnavailable(
                "Storage failed while approving; the image is still held back. Please retry.",
                detail=f"approve {image_id}: {type(exc).__name__}: {exc}",
            ) from exc
        self.discard([held.location(), *held.file_keys()])
        log.info("approve %s: SafeSearch hold lifted by the admin", image_id)
        return approved

    def _publish(self, variant: Variant) -> None:
        """Copy one held file to its public key."""
        self.store.put(
            variant.key,
            self.store.get(held_key(variant.key)),
            content_type=variant.content_type,
            cache_control=IMMUTABLE_CACHE_CONTROL,
        )

    def update(self, old: ImageRecord, new: ImageRecord) -> None:
        """Replace a record with a relabelled one of the same id (``flask relabel``).

        The new markers first, then the record, then the markers only the old one had: a
        failure in between leaves extra markers, which searches check against the record and
        ``sweep`` removes, never a record without its markers.
        """
        if (old.id, old.hidden) != (new.id, new.hidden):
            raise ValueError("update keeps the id and the held-back state")
        self._put_markers(new.marker_keys())
        self.store.overwrite(
            new.location(), new.to_json(), content_type="application/json", cache_control="no-store"
        )
        self.discard(set(old.marker_keys()) - set(new.marker_keys()))

    def _committed(self, image_id: str) -> bool:
        """Whether ``rec/<id>.json`` exists; True when that cannot be told (keep, never dangle)."""
        try:
            self.store.get(record_key(image_id))
        except ObjectNotFound:
            return False
        except Exception:
            return True
        return True

    def _put_record(self, record: ImageRecord) -> None:
        self.store.put(
            record.location(),
            record.to_json(),
            content_type="application/json",
            cache_control="no-store",
        )

    def delete(self, image_id: str) -> ImageRecord:
        """Remove a record (first: the image leaves the gallery at once), then what it owned."""
        record = self.get(image_id)
        self.store.delete(record.location())
        leftovers = []
        if record.hidden:
            # What a failed approval may have left public.
            leftovers = [v.key for v in record.files()] + replace(record, hidden=False).keys()
        self.discard(dict.fromkeys([*record.keys(), *leftovers]))
        if record.content_key:
            # So the same bytes may be uploaded anew; a claim left behind is swept later.
            with contextlib.suppress(Exception):
                self.release(record.content_key, record.id)
        return record

    def discard(self, keys: Iterable[str]) -> None:
        """Delete ``keys`` in parallel, best effort: leftovers are invisible and swept later.

        Each delete runs in the caller's context, so within the caller's deadline.
        """
        futures = [
            self._pool.submit(contextvars.copy_context().run, self._delete_quietly, key)
            for key in keys
        ]
        for future in futures:
            future.result()

    def _delete_quietly(self, key: str) -> None:
        with contextlib.suppress(Exception):
            self.store.delete(key)

    # -- reading ---------------------------------------------------------------------------
    def get(self, image_id: str) -> ImageRecord:
        """The record, public or held back (``hidden``): the caller decides who may see which."""
        if not is_valid_id(image_id):
            raise NotFound("No image with that id.")
        for key in (record_key(image_id), held_key(record_key(image_id))):
            try:
                return self.read(key)
            except ObjectNotFound:
                continue
        raise NotFound("No image with that id.")

    def read(self, key: str) -> ImageRecord:
        """The record at ``key``; UnreadableRecord (a 404) when its bytes no longer parse.

        The key is logged once per process, never the bytes: a gallery page that meets the
        same damaged record on every view must not flood the log.
        """
        raw = self.store.get(key)
        try:
            return ImageRecord.from_json(raw)
        except UNPARSEABLE as exc:
            self._report_unreadable(key, exc)
            if key.startswith(HELD_PREFIX):
                raise UnreadableRecord("No image with that id.", private=True) from None
            raise UnreadableRecord(
                "That image's record is damaged in storage and cannot be read."
            ) from None

    def _report_unreadable(self, key: str, exc: BaseException) -> None:
        with self._reported_lock:
            if key in self._reported:
                return
            if len(self._reported) >= REPORTED_MAX:
                self._reported.clear()
            self._reported.add(key)
        log.warning(
            "unreadable record %s (%s): left out of every listing; mend it by hand, or delete "
            "it and `flask gc` removes what it owned",
            key,
            type(exc).__name__,
        )

    def page(self, *, cursor: str | None = None, limit: int = 24, label: str | None = None) -> Page:
        """One gallery page, newest first; ``label`` filters through the label index.

        Both listings (``rec/``, ``lbl/``) hold public images only, so neither a page nor its
        cursor (the last id listed) can name a held-back one.
        """
        if cursor is not None and not is_valid_id(cursor):
            cursor = None
        if label:
            slug = label_slug(label)
            if not slug:
                # "!!!" or "  " names no label ("lbl//" is not even a valid prefix): no images.
                return Page([], None)
            prefix = f"{LABEL_PREFIX}{slug}/"
        else:
            prefix = RECORD_PREFIX
        return self._page(prefix, cursor, limit, self._maybe_get_public)

    def held_page(self, *, cursor: str | None = None, limit: int = 24) -> Page:
        """The held-back records, newest first, listed straight from ``held/rec/``."""
        if cursor is not None and not is_valid_id(cursor):
            cursor = None
        return self._page(HELD_RECORD_PREFIX, cursor, limit, self._maybe_get)

    def _page(
        self,
        prefix: str,
        cursor: str | None,
        limit: int,
        read: Callable[[str], ImageRecord | None],
    ) -> Page:
        suffix = ".json" if prefix.endswith(RECORD_PREFIX) else ""
        start = f"{prefix}{cursor}{suffix}" if cursor else ""
        keys = self.store.list(prefix, start_after=start, limit=limit + 1)
        ids = [k[len(prefix) : len(k) - len(suffix)] for k in keys]
        more = len(ids) > limit
        ids = ids[:limit]
        records = [r for r in self._pool.map(read, ids) if r is not None]
        return Page(records, ids[-1] if more and ids else None)

    def public_records(self, ids: Iterable[str]) -> list[ImageRecord | None]:
        """The public records of ``ids``, read in parallel (None: missing or held back)."""
        return list(self._pool.map(self._maybe_get_public, ids))

    def map(self, function: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """``function`` over ``items`` on the catalog's read pool (storage calls in parallel)."""
        return list(self._pool.map(function, items))

    @staticmethod
    def is_id(text: str) -> bool:
        return is_valid_id(text)

    def _maybe_get_public(self, image_id: str) -> ImageRecord | None:
        try:
            record = self.read(record_key(image_id))
        except ObjectNotFound:
            return None  # a marker whose record was deleted or never committed
        except UnreadableRecord:
            return None  # logged once by read; the listing goes on without it
        # rec/ holds no held-back record since held/ exists; an older one stays out all the same.
        return None if record.hidden else record

    def _maybe_get(self, image_id: str) -> ImageRecord | None:
        try:
            return self.get(image_id)
        except NotFound:
            return None  # deleted, never committed, or unreadable (logged once by read)

    def find(self, image_id: str) -> ImageRecord | None:
        """The record, public or held back; None if it is not (or not yet) committed."""
        return self._maybe_get(image_id)

    def get_many(self, image_ids: Iterable[str]) -> list[ImageRecord | ImagingError]:
        """Each id's record (public or held back) or why not (NotFound, StorageUnavailable), in
        order, read in parallel: one wave of reads, not one round trip per image."""

        def read(image_id: str) -> ImageRecord | ImagingError:
            try:
                return self.get(image_id)
            except ImagingError as why:
                return why

        return list(self._pool.map(read, list(image_ids)))

    def scan(self, *, limit: int) -> Scan:
        """Up to ``limit`` records, the public ones newest first, then the held-back ones:
        one listing call per 1000 keys plus parallel reads, so O(catalog) up to the cap.

        A record that no longer parses (a shape older than this code, a hand-edited file)
        counts as unreadable instead of failing the scan."""
        listed = itertools.chain(
            self._iter_keys(RECORD_PREFIX), self._iter_keys(HELD_RECORD_PREFIX)
        )
        keys = list(itertools.islice(listed, limit + 1))
        complete = len(keys) <= limit

        def read(key: str) -> ImageRecord | str:
            try:
                return self.read(key)
            except ObjectNotFound:
                return "gone"  # deleted since it was listed
            except UnreadableRecord:
                return "unreadable"

        found = list(self._pool.map(read, keys[:limit]))
        records = [r for r in found if isinstance(r, ImageRecord)]
        return Scan(records, unreadable=found.count("unreadable"), complete=complete)

    def iter_ids(self) -> Iterator[str]:
        """Every committed id, newest first (one listing call per 1000)."""
        for key in self._iter_keys(RECORD_PREFIX):
            yield key[len(RECORD_PREFIX) : -len(".json")]

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        return iter_keys(self.store, prefix)

    # -- maintenance -----------------------------------------------------------------------
    def sweep(self, *, grace_seconds: float, now: float | None = None) -> list[str]:
        """Remove what dead uploads left, past the grace period (``sweep.sweep``)."""
        return sweep.sweep(self, grace_seconds=grace_seconds, now=now)

    def unreadable_keys(self) -> Iterator[str]:
        """The key of every record that no longer parses (``sweep.unreadable_keys``)."""
        return sweep.unreadable_keys(self)
