"""Every object key the app writes, and the ids they are built around (local disk and GCS alike)::

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
record) and is removed by ``Catalog.sweep`` once its id is older than the grace period.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import unicodedata
from collections.abc import Iterator

from imaging.search import INDEX_PREFIX, PHASH_PREFIX
from imaging.storage import ObjectStore

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


def held_key(key: str) -> str:
    """Where ``key`` (a record or a variant) is kept while its image is held back."""
    return f"{HELD_PREFIX}{key}"


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
