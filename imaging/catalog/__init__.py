"""The gallery index, kept in the object store itself: records, newest-first pages, label index.

There is no database: every record, marker and claim is an object in the store.

- ``keys``: every object key the app writes (``img/``, ``rec/``, ``lbl/``, ``sha/``, ``held/``,
  ...) and the newest-first ids they are built around;
- ``claims``: the content key's claim, the duplicate index;
- ``records``: ``ImageRecord`` and its ``Variant`` files, and how a new record is built;
- ``index``: ``Catalog``, which saves (the commit point), approves, relabels, deletes, pages
  and scans records through an ``ObjectStore``;
- ``sweep``: what ``flask gc`` removes (variants, markers and claims without a record).

Everything public is re-exported here: ``from imaging.catalog import Catalog``.
"""

from __future__ import annotations

from imaging.catalog.claims import claim_body, claim_key, claim_owner
from imaging.catalog.index import Catalog
from imaging.catalog.keys import (
    EVENT_PREFIX,
    HASH_PREFIX,
    HELD_PREFIX,
    HELD_RECORD_PREFIX,
    ID_PATTERN,
    IMAGE_PREFIX,
    LABEL_PREFIX,
    MAX_MS,
    OWN_PREFIXES,
    RECORD_PREFIX,
    SOURCE_PREFIX,
    TEMP_PREFIX,
    UPLOAD_PREFIX,
    held_key,
    id_time,
    is_valid_id,
    iter_keys,
    label_slug,
    new_id,
    new_revision,
    record_key,
    revision_time,
    source_key,
    variant_key,
)
from imaging.catalog.records import (
    ImageRecord,
    Page,
    Scan,
    Variant,
    display_name,
    hash_delete_key,
    new_delete_key,
    new_record,
)

__all__ = [
    "EVENT_PREFIX",
    "HASH_PREFIX",
    "HELD_PREFIX",
    "HELD_RECORD_PREFIX",
    "ID_PATTERN",
    "IMAGE_PREFIX",
    "LABEL_PREFIX",
    "MAX_MS",
    "OWN_PREFIXES",
    "RECORD_PREFIX",
    "SOURCE_PREFIX",
    "TEMP_PREFIX",
    "UPLOAD_PREFIX",
    "Catalog",
    "ImageRecord",
    "Page",
    "Scan",
    "Variant",
    "claim_body",
    "claim_key",
    "claim_owner",
    "display_name",
    "hash_delete_key",
    "held_key",
    "id_time",
    "is_valid_id",
    "iter_keys",
    "label_slug",
    "new_delete_key",
    "new_id",
    "new_record",
    "new_revision",
    "record_key",
    "revision_time",
    "source_key",
    "variant_key",
]
