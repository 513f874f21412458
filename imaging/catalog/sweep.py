"""The sweep of leftovers (``flask gc``): variants, markers and claims without a record.

A marker or variant whose record does not exist is invisible (a reader always goes through the
record); once its id is older than the grace period it is what a dead upload left, and goes.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from imaging.catalog.claims import claim_owner
from imaging.catalog.keys import (
    HASH_PREFIX,
    HELD_PREFIX,
    HELD_RECORD_PREFIX,
    IMAGE_PREFIX,
    LABEL_PREFIX,
    RECORD_PREFIX,
    SOURCE_PREFIX,
    held_key,
    id_time,
    is_valid_id,
    iter_keys,
    revision_time,
)
from imaging.errors import ObjectNotFound, UnreadableRecord
from imaging.search import INDEX_PREFIX, PHASH_PREFIX
from imaging.storage import ObjectStore, SweepsLeftovers

if TYPE_CHECKING:
    from imaging.catalog.index import Catalog


def sweep(catalog: Catalog, *, grace_seconds: float, now: float | None = None) -> list[str]:
    """Remove variants and markers that have no record and are older than the grace period.

    They are what an upload leaves when its process dies between the first write and the
    commit. Younger ones may belong to an upload in flight, so they are left alone. A store
    whose writers leave debris outside its keys (LocalStore's ``.tmp-*`` files and empty
    directories after a kill -9 or a full disk) sweeps that too.
    """
    now = time.time() if now is None else now
    public = set(catalog.iter_ids())
    held = {
        key[len(HELD_RECORD_PREFIX) : -len(".json")]
        for key in iter_keys(catalog.store, HELD_RECORD_PREFIX)
    }
    removed: list[str] = []
    for key in list(iter_keys(catalog.store, HASH_PREFIX)):
        if _sweep_claim(catalog.store, key, public | held, grace_seconds=grace_seconds, now=now):
            removed.append(key)
    for prefix in (
        IMAGE_PREFIX,
        LABEL_PREFIX,
        INDEX_PREFIX,
        PHASH_PREFIX,
        HASH_PREFIX,
        HELD_PREFIX,
        SOURCE_PREFIX,
    ):
        for key in list(iter_keys(catalog.store, prefix)):
            image_id = _owner_id(key)
            if image_id is None:
                continue
            # A held/ key of a public id is what an approval left: the record replaced it.
            approved = key.startswith(HELD_PREFIX) and image_id in public
            if not approved and (
                image_id in public or image_id in held or now - id_time(image_id) < grace_seconds
            ):
                continue
            catalog.store.delete(key)
            removed.append(key)
    removed += _sweep_replaced_files(catalog, public | held, grace_seconds=grace_seconds, now=now)
    if isinstance(catalog.store, SweepsLeftovers):
        removed += catalog.store.sweep_leftovers(grace_seconds=grace_seconds, now=now)
    return removed


def _sweep_replaced_files(
    catalog: Catalog, live: set[str], *, grace_seconds: float, now: float
) -> list[str]:
    """Remove the files of a live image that its record no longer names: what a re-crop
    replaced but could not delete, or what the loser of two re-crops at once wrote.

    Only an image with a kept original (``src/``) can be re-cropped, so only those records
    are read. A file younger than the grace period may belong to a re-crop in flight.
    """
    owners = {_owner_id(key) for key in iter_keys(catalog.store, SOURCE_PREFIX)}
    ids = sorted(i for i in owners if i is not None and i in live)
    removed: list[str] = []
    for record in catalog.map(catalog.find, ids):
        if record is None:
            continue
        # Both forms of each file: an approval in flight is copying held/img/ to img/.
        named = {key for v in record.files() for key in (v.key, held_key(v.key))}
        own = f"{IMAGE_PREFIX}{record.id}/"
        for prefix in (own, held_key(own)):
            for key in list(iter_keys(catalog.store, prefix)):
                made = revision_time(key) or id_time(record.id)
                if key in named or now - made < grace_seconds:
                    continue
                catalog.store.delete(key)
                removed.append(key)
    return removed


def _sweep_claim(
    store: ObjectStore, key: str, committed: set[str], *, grace_seconds: float, now: float
) -> bool:
    """Remove a claim whose upload never committed, once past the grace period."""
    if not key.endswith(".json"):
        return False  # sha/<content-key>/<id>: the older marker layout, swept by id below
    try:
        body = store.get(key)
    except ObjectNotFound:
        return False
    image_id = claim_owner(body)
    if image_id in committed:
        return False
    if image_id is not None and now - id_time(image_id) < grace_seconds:
        return False  # maybe still in flight
    return store.delete_if_holds(key, body)


def unreadable_keys(catalog: Catalog) -> Iterator[str]:
    """The key of every record, public or held back, that no longer parses: one listing call
    and one parallel wave of reads per 1000 records (``flask gc --check-records``)."""
    listed = itertools.chain(
        iter_keys(catalog.store, RECORD_PREFIX), iter_keys(catalog.store, HELD_RECORD_PREFIX)
    )
    while chunk := list(itertools.islice(listed, 1000)):
        found = catalog.map(functools.partial(_is_unreadable, catalog), chunk)
        yield from (key for key, bad in zip(chunk, found, strict=True) if bad)


def _is_unreadable(catalog: Catalog, key: str) -> bool:
    try:
        catalog.read(key)
    except UnreadableRecord:
        return True
    except ObjectNotFound:
        pass  # deleted since it was listed
    return False


def _owner_id(key: str) -> str | None:
    """The id a key belongs to: ``img/<id>/x.webp``, ``src/<id>/original``, ``lbl/<slug>/<id>``,
    ``idx/<word>/<id>``, ``phash/<band>/<hex>/<id>``, ``held/rec/<id>.json``."""
    if key.startswith(HELD_PREFIX):
        key = key[len(HELD_PREFIX) :].removesuffix(".json")
    parts = key.split("/")
    owned = key.startswith((IMAGE_PREFIX, SOURCE_PREFIX)) and len(parts) >= 3
    candidate = parts[1] if owned else parts[-1]
    return candidate if is_valid_id(candidate) else None
