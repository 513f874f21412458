"""The admin's doors: list what SafeSearch held back, and approve it into the gallery.

Both need ``Authorization: Bearer <ADMIN_TOKEN>`` (checked before any lookup, so nobody else
learns whether an id exists). A held-back record has ``hidden: true`` and lives under the
private ``held/`` namespace (catalog.py): no listing, label page, cursor or media URL reaches it,
and ``GET /api/images/<id>`` answers 404 to all but the admin and the uploader's delete key.

Approval itself is ``Catalog.approve``: how it rewrites a record in a create-only store, and
what happens when storage fails halfway, is written there.
"""

from __future__ import annotations

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from imaging.errors import Forbidden, Unauthorized
from imaging.web import services
from imaging.web.presentation import MAX_PAGE, image_json, page_limit
from imaging.web.security import bearer_token, is_admin

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


@bp.post("/api/images/<image_id>/approve")
def approve(image_id: str) -> ResponseReturnValue:
    """Let an image SafeSearch held back into the gallery (admin token only)."""
    require_admin()
    return image_json(services().catalog.approve(image_id))


@bp.get("/api/admin/held")
def held() -> ResponseReturnValue:
    """Images held back by SafeSearch, newest first, paged like ``/api/images`` (admin only):
    a listing of ``held/rec/`` itself, so every page is full."""
    require_admin()
    page = services().catalog.held_page(
        cursor=request.args.get("cursor") or None, limit=page_limit(MAX_PAGE)
    )
    return {
        "images": [image_json(r) for r in page.records],
        "next_cursor": page.next_cursor,
    }
