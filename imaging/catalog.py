"""The gallery index, kept in the object store itself: records, newest-first pages, label index.

Every object key the app writes is made here (the same on local disk and in GCS)::

    img/<id>/<variant>.<ext>   the public, immutable image files
    lbl/<label-slug>/<id>      empty marker: the label index
    idx/<word>/<id>            empty marker: the search index (its rules: imaging/search.py)
    phash/<band>/<hex>/<id>    empty marker: a band of the perceptual hash (near copies)
    sha/<content-key>.json     the content key's claim: which upload owns these bytes with these
                               options (the duplicate index); written FIRST, create-only
    rec/<id>.json              the record; written LAST, so it is the commit point
    held/<key>                 a held-back image: ``held/rec/<id>.json``, ``held/img/<id>/...``
    src/<id>/original          the upload's own bytes, kept privately (never in img/, never
                               served) for an image with cover-cropped variants, so its owner
                               can move the focal point later (imaging/refocus.py)
    tmp/<upload-id>            a direct upload's bytes until it is completed (doors/direct)
    upl/<upload-id>[.put]      a direct upload's completion marker and PUT claim
    evt/...                    the storage-event ledger (doors/ledger)

Ids sort newest-first as plain strings (inverted millisecond time + random suffix), so an
ascending listing of ``rec/`` *is* the gallery order and a cursor is just the last id seen: a
page costs one listing call plus ``limit`` parallel record reads, whatever the catalog size, and
new uploads (which sort before every existing id) never shift a cursor.

A marker or variant whose record does not exist is invisible (a reader always goes through the
record) and is removed by ``sweep`` once its id is older than the grace period.

A claim names the id its upload will commit under and the time it was claimed (the id's own
time). While that record does not exist the claim is pending: other uploads of the same bytes
wait for it; once it exists the claim *is* the duplicate index entry, and nothing rewrites it.
A pending claim older than a bound (its owner died) may be taken over, and ``sweep`` removes
one older than the grace period. A claim is only ever removed with ``delete_if_holds``, so
nobody removes a claim that another upload has taken over in the meantime.

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

import builtins
import contextlib
import contextvars
import hashlib
import itertools
import json
import logging
import re
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from imaging.errors import (
    ImagingError,
    NotFound,
    ObjectExists,
    ObjectNotFound,
    StorageUnavailable,
)
from imaging.labeling import Box, Label, LabelResult
from imaging.labeling.caption import clean_caption
from imaging.processing.palette import Appearance, Swatch
from imaging.search import INDEX_PREFIX, PHASH_PREFIX, index_keys
from imaging.storage import IMMUTABLE_CACHE_CONTROL, ObjectStore, SweepsLeftovers
from imaging.untrusted import same_secret

if TYPE_CHECKING:
    from imaging.processing import Probe, Rendition

log = logging.getLogger(__name__)

#: Ids hold (MAX_MS - now_ms) so that newer ids sort first; 13 digits last until the year 2286.
MAX_MS = 10**13 - 1
ID_PATTERN = re.compile(r"^[0-9]{13}[0-9a-f]{8}$")
RECORD_PREFIX, IMAGE_PREFIX, LABEL_PREFIX, HASH_PREFIX = "rec/", "img/", "lbl/", "sha/"
TEMP_PREFIX, UPLOAD_PREFIX, EVENT_PREFIX, HELD_PREFIX = "tmp/", "upl/", "evt/", "held/"
#: The originals kept for re-cropping: private on every backend (only img/ is ever public).
SOURCE_PREFIX = "src/"
#: Where held-back records are listed (the admin's held list): ``held/`` + ``rec/``.
HELD_RECORD_PREFIX = HELD_PREFIX + RECORD_PREFIX
#: Keys the app itself writes: an event or a batch over the app's own bucket must skip them, or
#: every variant written would come back as a new upload.
OWN_PREFIXES = (
    IMAGE_PREFIX,
    RECORD_PREFIX,
    LABEL_PREFIX,
    INDEX_PREFIX,
    PHASH_PREFIX,
    HASH_PREFIX,
    EVENT_PREFIX,
    TEMP_PREFIX,
    UPLOAD_PREFIX,
    HELD_PREFIX,
    SOURCE_PREFIX,
)


def record_key(image_id: str) -> str:
    return f"{RECORD_PREFIX}{image_id}.json"


def variant_key(image_id: str, variant: str, ext: str, revision: str = "") -> str:
    """A variant's key; a re-crop's files get a ``revision`` (``new_revision``) in their name,
    so a URL never changes what it shows (caches and CDNs keep files a year)."""
    name = f"{variant}-{revision}" if revision else variant
    return f"{IMAGE_PREFIX}{image_id}/{name}.{ext}"


def new_revision(now: float | None = None) -> str:
    """A fresh revision: the time in milliseconds (13 digits) and 6 random hex digits."""
    return f"{int((time.time() if now is None else now) * 1000):013d}{secrets.token_hex(3)}"


def revision_time(key: str) -> float | None:
    """When a revision-named variant key (``img/<id>/webp-<revision>.webp``) was made."""
    stem = key.rsplit("/", 1)[-1].split(".", 1)[0]
    revision = stem.rsplit("-", 1)[-1] if "-" in stem else ""
    if len(revision) != 19 or not revision[:13].isdigit():
        return None
    return int(revision[:13]) / 1000


def source_key(image_id: str) -> str:
    """Where an image's original is kept for re-cropping (private: never under ``img/``)."""
    return f"{SOURCE_PREFIX}{image_id}/original"


def claim_key(content_key: str) -> str:
    """The one key all uploads of the same bytes with the same options compete for."""
    return f"{HASH_PREFIX}{content_key}.json"


def claim_body(image_id: str) -> builtins.bytes:
    """What a claim holds: the owner's id and the claim time, which is the id's own time.

    A pure function of the id, so whoever knows the record can tell (and remove) its claim.
    """
    claimed_at = datetime.fromtimestamp(id_time(image_id), UTC).isoformat(timespec="milliseconds")
    return json.dumps({"claimed_at": claimed_at, "id": image_id}, sort_keys=True).encode()


def claim_owner(body: builtins.bytes) -> str | None:
    """The id a claim names (None when it is not a claim this module wrote)."""
    try:
        image_id = json.loads(body)["id"]
    except (ValueError, KeyError, TypeError):
        return None
    return image_id if isinstance(image_id, str) and is_valid_id(image_id) else None


def held_key(key: str) -> str:
    """Where ``key`` (a record or a variant) is kept while its image is held back."""
    return f"{HELD_PREFIX}{key}"


def new_delete_key() -> str:
    """A fresh delete key: shown once to the uploader, while the record keeps only its hash."""
    return secrets.token_urlsafe(24)


def hash_delete_key(delete_key: str) -> str:
    """What a record keeps of the delete key shown once to the uploader."""
    return hashlib.sha256(delete_key.encode()).hexdigest()


def iter_keys(store: ObjectStore, prefix: str) -> Iterator[str]:
    """Every key under ``prefix``, ascending, one listing call per 1000."""
    start = ""
    while True:
        keys = store.list(prefix, start_after=start, limit=1000)
        # A listing that does not move forward would loop forever: stop instead.
        if not keys or keys[-1] <= start:
            return
        yield from keys
        start = keys[-1]


_last_ms = 0
_id_lock = threading.Lock()


def new_id(now: float | None = None) -> str:
    """A fresh id; within a process, each is strictly newer than the last (even in one ms)."""
    global _last_ms
    ms = int((time.time() if now is None else now) * 1000)
    if now is None:
        with _id_lock:
            ms = max(ms, _last_ms + 1)
            _last_ms = ms
    return f"{MAX_MS - ms:013d}{secrets.token_hex(4)}"


def id_time(image_id: str) -> float:
    """The Unix time an id was minted at."""
    return (MAX_MS - int(image_id[:13])) / 1000


def is_valid_id(image_id: str) -> bool:
    return bool(ID_PATTERN.match(image_id))


def label_slug(description: str) -> str:
    """``'Tabby cat'`` -> ``'tabby-cat'``: the label index key and the ``?label=`` value."""
    text = unicodedata.normalize("NFKD", description).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:64]


@dataclass(frozen=True)
class Variant:
    name: str  # "webp", "jpeg", ..., or "thumb"
    format: str
    key: str
    content_type: str
    bytes: int
    width: int
    height: int
    frames: int = 1


@dataclass(frozen=True)
class ImageRecord:
    id: str
    name: str
    created_at: str
    source_format: str
    width: int
    height: int
    bytes: int
    variants: tuple[Variant, ...]
    thumbnail: Variant
    labels: tuple[Label, ...] = ()
    label_status: str = "off"  # ok | empty | error | off
    safe_search: dict[str, str] = field(default_factory=dict)
    hidden: bool = False
    content_key: str = ""
    delete_key_hash: str = ""
    warnings: tuple[str, ...] = ()
    receipt: dict[str, Any] = field(default_factory=dict)
    thumbhash: str = ""  # base64 ThumbHash painted while the thumbnail loads; "" on old records
    camera: dict[str, Any] = field(default_factory=dict)  # processing.Camera's fields; never GPS
    people: int = 0  # faces found by the labeler
    faces: tuple[Box, ...] = ()  # the best of their boxes, fractions of width and height
    text: str = ""  # text read in the picture, capped
    colours: tuple[Swatch, ...] = ()  # dominant colours, largest share first
    phash: str = ""  # 64-bit dHash as 16 hex digits; "" in records from before hashing
    caption: str = ""  # the captioner's sentence (untrusted model output, cleaned and capped)
    #: The kept original, for re-cropping (never in the API): {"key", "bytes", "options"}, the
    #: options being the upload's own (width, height, fit, quality, lossless); {} when none.
    original: dict[str, Any] = field(default_factory=dict)

    def files(self) -> tuple[Variant, ...]:
        """Every image file of the record: the requested variants, then the thumbnail."""
        return (*self.variants, self.thumbnail)

    def stored_key(self, key: str) -> str:
        """Where one of this record's keys is kept now: under ``held/`` while it is hidden."""
        return held_key(key) if self.hidden else key

    def location(self) -> str:
        """The key this record itself is kept at: ``rec/<id>.json`` or ``held/rec/<id>.json``."""
        return self.stored_key(record_key(self.id))

    def file_keys(self) -> list[str]:
        """Where this record's image files are kept now."""
        return [self.stored_key(v.key) for v in self.files()]

    def keys(self) -> list[str]:
        """Every object this record owns besides itself and its claim."""
        return self.file_keys() + self.marker_keys() + self.source_keys()

    def source_keys(self) -> list[str]:
        """The kept original's key, if one was kept (private, whether held back or not)."""
        key = self.original.get("key")
        return [key] if isinstance(key, str) and key else []

    def marker_keys(self) -> list[str]:
        """The label, search and hash-band markers ``save`` writes (the claim was written
        before the files); none while the image is held back."""
        return [] if self.hidden else self.public_marker_keys()

    def public_marker_keys(self) -> list[str]:
        """The label, search and hash-band markers a record has while it is public.

        A held-back image has none: label pages and searches list markers, so it must not
        appear there, not even as an id.
        """
        slugs = dict.fromkeys(label_slug(label.description) for label in self.labels)
        return [f"{LABEL_PREFIX}{slug}/{self.id}" for slug in slugs if slug] + index_keys(self)

    def accepts_delete_key(self, delete_key: str) -> bool:
        """Whether ``delete_key`` is the one this record's uploader was given (constant time)."""
        return bool(self.delete_key_hash) and same_secret(
            hash_delete_key(delete_key), self.delete_key_hash
        )

    def to_json(self) -> builtins.bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: builtins.bytes) -> ImageRecord:
        data = json.loads(raw)
        data["variants"] = tuple(Variant(**v) for v in data["variants"])
        data["thumbnail"] = Variant(**data["thumbnail"])
        data["labels"] = tuple(Label(**label) for label in data.get("labels", ()))
        data["warnings"] = tuple(data.get("warnings", ()))
        data["faces"] = tuple(Box(**face) for face in data.get("faces", ()))
        data["colours"] = tuple(Swatch(**swatch) for swatch in data.get("colours", ()))
        return cls(**data)

    def public(self, url_for_key: Callable[[str], str]) -> dict[str, Any]:
        """The JSON the API returns (and the pages render): no storage internals, no secrets."""

        def variant(v: Variant) -> dict[str, Any]:
            return {
                "name": v.name,
                "format": v.format,
                "url": url_for_key(v.key),
                "content_type": v.content_type,
                "bytes": v.bytes,
                "width": v.width,
                "height": v.height,
                "frames": v.frames,
            }

        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "source_format": self.source_format,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "variants": [variant(v) for v in self.variants],
            "thumbnail": variant(self.thumbnail),
            "labels": [
                {
                    "description": label.description,
                    "score": round(label.score, 4),
                    "source": label.source,
                    "slug": label_slug(label.description),
                }
                for label in self.labels
            ],
            "label_status": self.label_status,
            "safe_search": dict(self.safe_search),
            "hidden": self.hidden,
            "warnings": list(self.warnings),
            "receipt": dict(self.receipt),
            "thumbhash": self.thumbhash,
            "camera": dict(self.camera),
            "people": self.people,
            "faces": [asdict(face) for face in self.faces],
            "text": self.text,
            "colours": [{"hex": s.hex, "name": s.name, "share": s.share} for s in self.colours],
            "phash": self.phash,
            "caption": self.caption,
        }


def new_record(
    source: Probe,
    renditions: Mapping[str, Rendition],
    *,
    labels: LabelResult,
    label_status: str,
    hidden: bool,
    name: str,
    content_key: str,
    delete_key: str,
    conversion: Mapping[str, Any],
    warnings: Iterable[str] = (),
    image_id: str | None = None,
    thumbhash: str = "",
    camera: Mapping[str, Any] | None = None,
    appearance: Appearance | None = None,
    caption: str = "",
) -> ImageRecord:
    """The record of a new upload under ``image_id`` (the one its claim names; default: a fresh
    id), with its variants' keys laid out.

    ``renditions`` maps each variant's name to its bytes; ``"thumb"`` is the gallery thumbnail.
    ``conversion`` is what decoding did (orientation, colour profile, ...); the receipt adds the
    source's figures and every variant's size to it. Only the delete key's hash is kept.
    ``thumbhash`` and ``camera`` are what the render step read of the pixels and the EXIF.
    """
    image_id = image_id or new_id()
    variants = {
        variant: Variant(
            name=variant,
            format=r.format,
            key=variant_key(image_id, variant, r.ext),
            content_type=r.mime,
            bytes=len(r.data),
            width=r.width,
            height=r.height,
            frames=r.frames,
        )
        for variant, r in renditions.items()
    }
    receipt = {
        **conversion,
        "source_format": source.format,
        "source_width": source.width,
        "source_height": source.height,
        "source_bytes": source.bytes,
        "source_frames": source.frames,
        "bytes": {variant: v.bytes for variant, v in variants.items()},
    }
    return ImageRecord(
        id=image_id,
        name=display_name(name),
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        source_format=source.format,
        width=source.width,
        height=source.height,
        bytes=source.bytes,
        variants=tuple(v for variant, v in variants.items() if variant != "thumb"),
        thumbnail=variants["thumb"],
        labels=labels.labels,
        label_status=label_status,
        safe_search=dict(labels.safe_search),
        hidden=hidden,
        content_key=content_key,
        delete_key_hash=hash_delete_key(delete_key),
        warnings=tuple(dict.fromkeys(warnings)),
        receipt=receipt,
        thumbhash=thumbhash,
        camera=dict(camera or {}),
        people=labels.people,
        faces=labels.faces,
        text=labels.text,
        colours=appearance.colours if appearance else (),
        phash=appearance.phash if appearance else "",
        caption=clean_caption(caption),
    )


def display_name(name: str) -> str:
    """A display name only: never a path. Control characters go, length is capped."""
    cleaned = "".join(ch for ch in name if ch.isprintable()).strip()
    return cleaned[:200] or "untitled"


@dataclass(frozen=True)
class Page:
    records: list[ImageRecord]
    next_cursor: str | None


@dataclass(frozen=True)
class Scan:
    """What ``Catalog.scan`` read: the records, how many would not parse, and whether it read
    every record there is (False: it stopped at its cap)."""

    records: list[ImageRecord]
    unreadable: int
    complete: bool


class Catalog:
    """Reads and writes records and indexes through an ObjectStore."""

    def __init__(self, store: ObjectStore, *, read_workers: int = 24) -> None:
        self.store = store
        # A gallery page reads up to 24 records: one wave of parallel reads on Cloud Storage.
        self._pool = ThreadPoolExecutor(max_workers=read_workers, thread_name_prefix="catalog")

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
                return ImageRecord.from_json(self.store.get(key))
            except ObjectNotFound:
                continue
        raise NotFound("No image with that id.")

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
            record = ImageRecord.from_json(self.store.get(record_key(image_id)))
        except ObjectNotFound:
            return None  # a marker whose record was deleted or never committed
        # rec/ holds no held-back record since held/ exists; an older one stays out all the same.
        return None if record.hidden else record

    def _maybe_get(self, image_id: str) -> ImageRecord | None:
        try:
            return self.get(image_id)
        except NotFound:
            return None  # a marker whose record was deleted or never committed

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
                return ImageRecord.from_json(self.store.get(key))
            except ObjectNotFound:
                return "gone"  # deleted since it was listed
            except (ValueError, TypeError, KeyError, AttributeError):
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
        """Remove variants and markers that have no record and are older than the grace period.

        They are what an upload leaves when its process dies between the first write and the
        commit. Younger ones may belong to an upload in flight, so they are left alone. A store
        whose writers leave debris outside its keys (LocalStore's ``.tmp-*`` files and empty
        directories after a kill -9 or a full disk) sweeps that too.
        """
        now = time.time() if now is None else now
        public = set(self.iter_ids())
        held = {
            key[len(HELD_RECORD_PREFIX) : -len(".json")]
            for key in self._iter_keys(HELD_RECORD_PREFIX)
        }
        removed: list[str] = []
        for key in list(self._iter_keys(HASH_PREFIX)):
            if self._sweep_claim(key, public | held, grace_seconds=grace_seconds, now=now):
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
            for key in list(self._iter_keys(prefix)):
                image_id = _owner_id(key)
                if image_id is None:
                    continue
                # A held/ key of a public id is what an approval left: the record replaced it.
                approved = key.startswith(HELD_PREFIX) and image_id in public
                if not approved and (
                    image_id in public
                    or image_id in held
                    or now - id_time(image_id) < grace_seconds
                ):
                    continue
                self.store.delete(key)
                removed.append(key)
        removed += self._sweep_replaced_files(public | held, grace_seconds=grace_seconds, now=now)
        if isinstance(self.store, SweepsLeftovers):
            removed += self.store.sweep_leftovers(grace_seconds=grace_seconds, now=now)
        return removed

    def _sweep_replaced_files(
        self, live: set[str], *, grace_seconds: float, now: float
    ) -> list[str]:
        """Remove the files of a live image that its record no longer names: what a re-crop
        replaced but could not delete, or what the loser of two re-crops at once wrote.

        Only an image with a kept original (``src/``) can be re-cropped, so only those records
        are read. A file younger than the grace period may belong to a re-crop in flight.
        """
        owners = {_owner_id(key) for key in self._iter_keys(SOURCE_PREFIX)}
        ids = sorted(i for i in owners if i is not None and i in live)
        removed: list[str] = []
        for record in self.map(self._maybe_get, ids):
            if record is None:
                continue
            # Both forms of each file: an approval in flight is copying held/img/ to img/.
            named = {key for v in record.files() for key in (v.key, held_key(v.key))}
            own = f"{IMAGE_PREFIX}{record.id}/"
            for prefix in (own, held_key(own)):
                for key in list(self._iter_keys(prefix)):
                    made = revision_time(key) or id_time(record.id)
                    if key in named or now - made < grace_seconds:
                        continue
                    self.store.delete(key)
                    removed.append(key)
        return removed

    def _sweep_claim(
        self, key: str, committed: set[str], *, grace_seconds: float, now: float
    ) -> bool:
        """Remove a claim whose upload never committed, once past the grace period."""
        if not key.endswith(".json"):
            return False  # sha/<content-key>/<id>: the older marker layout, swept by id below
        try:
            body = self.store.get(key)
        except ObjectNotFound:
            return False
        image_id = claim_owner(body)
        if image_id in committed:
            return False
        if image_id is not None and now - id_time(image_id) < grace_seconds:
            return False  # maybe still in flight
        return self.store.delete_if_holds(key, body)


def _owner_id(key: str) -> str | None:
    """The id a key belongs to: ``img/<id>/x.webp``, ``src/<id>/original``, ``lbl/<slug>/<id>``,
    ``idx/<word>/<id>``, ``phash/<band>/<hex>/<id>``, ``held/rec/<id>.json``."""
    if key.startswith(HELD_PREFIX):
        key = key[len(HELD_PREFIX) :].removesuffix(".json")
    parts = key.split("/")
    owned = key.startswith((IMAGE_PREFIX, SOURCE_PREFIX)) and len(parts) >= 3
    candidate = parts[1] if owned else parts[-1]
    return candidate if is_valid_id(candidate) else None
