"""Acting on several images at once: delete them, or download them as one ZIP.

- ``POST /api/images/delete`` (scripts; reads no cookie, so no CSRF surface) and
  ``POST /images/delete`` (the gallery's door: the session's CSRF token in ``X-CSRF-Token``)
  take ``{"ids": [...], "keys": {"<id>": "<delete key>"}}``. The admin (the bearer token on
  either, an admin-unlocked session on the page door) needs no keys. Each id answers for
  itself in ``results``, in order: 204 deleted, 401 no key, 403 not its key, 404 not there (or
  held back from this caller), 503 storage failed; one bad id never stops the others, so the
  request itself is a 200.
- ``GET /api/images.zip?ids=a,b`` (or ``ids`` repeated): each image's main variant (the first
  format asked for) as one ZIP, streamed: entries are ZIP_STORED (images are compressed
  already) and written 64 KiB at a time from one image's bytes, so the archive is never held in
  memory. Public images only, and held-back ones only with the admin bearer token; ids it
  cannot give are left out and counted in ``X-Skipped-Images`` (404 when none is left).

Both name at most MAX_BULK_IMAGES ids: more is a 400 before any image is read.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, request
from flask.typing import ResponseReturnValue

from imaging.catalog import ImageRecord
from imaging.config import Settings
from imaging.errors import BadRequest, ImagingError, NotFound
from imaging.formats import OUTPUT_FORMATS
from imaging.storage import ObjectStore
from imaging.web import check_csrf, services
from imaging.web.security import admin_session, authorize_delete, is_admin, visible_record

log = logging.getLogger(__name__)

bp = Blueprint("bulk", __name__)

#: How much of an image one write of the ZIP stream carries.
ZIP_CHUNK = 64 * 1024


# -- what a bulk request names -----------------------------------------------------------------
def read_ids(settings: Settings, values: Iterable[str]) -> list[str]:
    """The ids named (commas or repeats, blanks and repeats dropped), at most MAX_BULK_IMAGES."""
    ids = list(dict.fromkeys(i.strip() for v in values for i in v.split(",") if i.strip()))
    if not ids:
        raise BadRequest("Name at least one image: ids=<id>,<id>,...")
    if len(ids) > settings.max_bulk_images:
        raise BadRequest(
            f"This request names {len(ids)} images; this server takes at most "
            f"{settings.max_bulk_images} at once. Send them in smaller groups."
        )
    return ids


def read_delete_body(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """``{"ids": [...], "keys": {id: key}}``: the ids, and the delete keys by id."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest('Send a JSON object: {"ids": [...], "keys": {"<id>": "<delete key>"}}.')
    ids, keys = body.get("ids"), body.get("keys") or {}
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadRequest("ids must be a list of image ids.")
    if not isinstance(keys, dict) or not all(isinstance(k, str) for k in keys.values()):
        raise BadRequest("keys must map image ids to their delete keys.")
    return read_ids(settings, ids), keys


# -- deleting ----------------------------------------------------------------------------------
def delete_each(ids: list[str], keys: dict[str, str], *, admin: bool) -> ResponseReturnValue:
    """Delete every id it may, each on its own: the answer lists each one's own verdict."""
    svc = services()
    results: list[dict[str, Any]] = []
    for image_id, found in zip(ids, svc.catalog.get_many(ids), strict=True):
        key = keys.get(image_id) or None
        try:
            if isinstance(found, ImagingError):
                raise found
            record = visible_record(svc.settings, found, key, admin=admin)
            authorize_delete(svc.settings, record, key, admin=admin)
            svc.catalog.delete(image_id)
        except ImagingError as exc:
            results.append(
                {
                    "id": image_id,
                    "status": exc.status,
                    "error": exc.code,
                    "message": exc.public_message,
                }
            )
        else:
            results.append({"id": image_id, "status": 204})
    deleted = sum(1 for r in results if r["status"] == 204)
    log.info("bulk delete: %d of %d deleted", deleted, len(ids))
    return {"results": results, "deleted": deleted}


@bp.post("/api/images/delete")
def delete_api() -> ResponseReturnValue:
    """Delete several images: each needs its delete key in ``keys``, or the admin token."""
    settings = services().settings
    ids, keys = read_delete_body(settings)
    return delete_each(ids, keys, admin=is_admin(settings))


@bp.post("/images/delete")
def delete_page() -> ResponseReturnValue:
    """The gallery's bulk delete: the keys this browser holds, or an admin-unlocked session."""
    check_csrf()
    settings = services().settings
    ids, keys = read_delete_body(settings)
    return delete_each(ids, keys, admin=admin_session(settings))


# -- downloading -------------------------------------------------------------------------------
class Sink(io.RawIOBase):
    """Where zipfile writes: it keeps what was written until the stream takes it. Not
    seekable, so zipfile writes each entry's sizes after its data (a data descriptor) and never
    seeks back: the archive can go out as it is made."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(self.parts[-1])

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def entry_name(record: ImageRecord, ext: str, taken: set[str]) -> str:
    """``<name>.<ext>`` from the display name, never a path; ``<name>-2.<ext>`` on a clash."""
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", str(record.name))
    stem = re.sub(r"[^\w .()-]+", "_", stem).strip(" ._")[:80] or "image"
    name, n = f"{stem}.{ext}", 1
    while name.lower() in taken:
        n += 1
        name = f"{stem}-{n}.{ext}"
    taken.add(name.lower())
    return name


def made_at(record: ImageRecord) -> tuple[int, int, int, int, int, int]:
    try:
        when = datetime.strptime(record.created_at, "%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError):
        when = datetime.now(UTC)
    return (max(when.year, 1980), when.month, when.day, when.hour, when.minute, when.second)


def zip_stream(store: ObjectStore, records: list[ImageRecord]) -> Iterator[bytes]:
    """The ZIP of each record's main variant, chunk by chunk; one image in memory at a time."""
    sink = Sink()
    taken: set[str] = set()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        for record in records:
            variant = record.variants[0] if record.variants else record.thumbnail
            try:
                data = store.get(record.stored_key(variant.key))
            except Exception:
                # The status line is long gone: cutting the stream short (no ZIP end record,
                # no final chunk) is how the client learns the download failed.
                log.warning("zip: reading %s failed; download cut short", record.id)
                raise
            ext = OUTPUT_FORMATS[variant.format].ext if variant.format in OUTPUT_FORMATS else "bin"
            info = zipfile.ZipInfo(entry_name(record, ext, taken), date_time=made_at(record))
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = len(data)
            with archive.open(info, "w") as entry:
                view = memoryview(data)
                for start in range(0, len(view), ZIP_CHUNK):
                    entry.write(view[start : start + ZIP_CHUNK])
                    yield sink.take()
            del data, view
            yield sink.take()
    yield sink.take()  # the central directory


@bp.get("/api/images.zip")
def download() -> ResponseReturnValue:
    """Several images' main variants as one ZIP, streamed (``?ids=a,b``)."""
    svc = services()
    ids = read_ids(svc.settings, request.args.getlist("ids"))
    admin = is_admin(svc.settings)
    records: list[ImageRecord] = []
    for found in svc.catalog.get_many(ids):
        if isinstance(found, ImageRecord):
            if admin or not found.hidden:
                records.append(found)
        elif not isinstance(found, NotFound):
            raise found  # storage failed: a 503, not a ZIP quietly missing images
    if not records:
        raise NotFound("None of those images can be downloaded.")
    headers = {
        "Content-Disposition": f'attachment; filename="images-{len(records)}.zip"',
        "Cache-Control": "no-store",
    }
    if len(records) < len(ids):
        headers["X-Skipped-Images"] = str(len(ids) - len(records))
    return Response(zip_stream(svc.store, records), mimetype="application/zip", headers=headers)
