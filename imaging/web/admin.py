"""The admin's doors: list what SafeSearch held back, and approve it into the gallery.

Both need ``Authorization: Bearer <ADMIN_TOKEN>`` (checked before any lookup, so nobody else
learns whether an id exists). A held-back record has ``hidden: true``: it is stored and its
links work for whoever has them (the uploader got the record), but the gallery and
``GET /api/images`` leave it out.

How approval changes a record when the store is create-only: delete ``rec/<id>.json``, then put
the same record with ``hidden: false``. The alternative, an ``approved/<id>`` marker the catalog
checks at read time, would add a read to every hidden record's lookup, a key for ``delete`` and
``sweep`` to know about, and a second place that says whether an image is visible. The record
stays the one source of truth instead, at the price of a moment (two storage calls) with no
record, handled thus:

- a failed put restores the held record (same bytes, so create-only accepts it) and answers 503;
  only if the restore fails too is the record lost, and then its JSON goes to the error log so an
  operator can put it back;
- the approved record is a pure function of the held one (sorted JSON), so two admins approving
  at once both succeed: the second put meets identical bytes, which create-only accepts;
- approving is idempotent: an image that is not hidden is returned unchanged, nothing written.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from imaging.catalog import Catalog, ImageRecord, record_key
from imaging.errors import Forbidden, StorageUnavailable, Unauthorized
from imaging.web import services
from imaging.web.presentation import MAX_PAGE, image_json, page_limit
from imaging.web.security import bearer_token, is_admin

log = logging.getLogger(__name__)

bp = Blueprint("admin", __name__)


def require_admin() -> None:
    """401 without a bearer token, 403 with a wrong one (or when no ADMIN_TOKEN is configured)."""
    settings = services().settings
    if bearer_token() is None:
        raise Unauthorized("This needs the admin token: send 'Authorization: Bearer ...'.")
    if not settings.admin_token:
        raise Forbidden("No admin token is configured on this server (ADMIN_TOKEN).")
    if not is_admin(settings):
        raise Forbidden("That admin token is not valid.")


def approve_record(catalog: Catalog, image_id: str) -> ImageRecord:
    """Rewrite a held-back record with ``hidden=False``; see the module docstring for why so."""
    held = catalog.get(image_id)
    if not held.hidden:
        return held
    approved = replace(held, hidden=False)
    key = record_key(image_id)
    store = catalog.store

    def write(record: ImageRecord) -> None:
        store.put(key, record.to_json(), content_type="application/json", cache_control="no-store")

    store.delete(key)
    try:
        write(approved)
    except Exception as exc:
        try:
            write(held)
        except Exception:
            log.critical(
                "approve %s: the record is gone and could not be restored; put it back at %s: %s",
                image_id,
                key,
                held.to_json().decode(),
            )
        raise StorageUnavailable(
            "Storage failed while approving; the image is still held back. Please retry.",
            detail=f"approve {image_id}: {type(exc).__name__}: {exc}",
        ) from exc
    log.info("approve %s: SafeSearch hold lifted by the admin", image_id)
    return approved


@bp.post("/api/images/<image_id>/approve")
def approve(image_id: str) -> ResponseReturnValue:
    """Let an image SafeSearch held back into the gallery (admin token only)."""
    require_admin()
    return image_json(approve_record(services().catalog, image_id))


@bp.get("/api/admin/held")
def held() -> ResponseReturnValue:
    """Images held back by SafeSearch, newest first, paged like ``/api/images`` (admin only).

    A page scans ``limit`` records of the gallery order and returns the held ones among them, so
    it may be short or even empty while ``next_cursor`` still points further.
    """
    require_admin()
    page = services().catalog.page(
        cursor=request.args.get("cursor") or None, limit=page_limit(MAX_PAGE), include_hidden=True
    )
    return {
        "images": [image_json(r) for r in page.records if r.hidden],
        "next_cursor": page.next_cursor,
    }
