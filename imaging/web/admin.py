"""The admin's doors: list what SafeSearch held back, approve it into the gallery, see the stats.

The API doors need ``Authorization: Bearer <ADMIN_TOKEN>`` (checked before any lookup, so nobody
else learns whether an id exists). The pages (``/admin/stats``, and the gallery's bulk delete in
bulk.py) also take a browser session unlocked once at ``/admin/unlock``: the session keeps only
an HMAC of the token (security.py), and every page door that changes anything checks CSRF.

A held-back record has ``hidden: true`` and lives under the private ``held/`` namespace
(imaging/catalog/index.py): no listing, label page, cursor or media URL reaches it, and
``GET /api/images/<id>`` answers 404 to all but the admin and the uploader's delete key.

Approval itself is ``Catalog.approve``: how it rewrites a record in a create-only store, and
what happens when storage fails halfway, is written there.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from imaging import observability
from imaging.errors import Forbidden, Unauthorized
from imaging.stats import CatalogStats, summarize
from imaging.web import check_csrf, services, wants_json
from imaging.web.presentation import MAX_PAGE, image_json, page_limit
from imaging.web.security import (
    admin_session,
    bearer_token,
    is_admin,
    lock_admin_session,
    unlock_admin_session,
)

bp = Blueprint("admin", __name__)


@bp.app_context_processor
def admin_globals() -> dict[str, Any]:
    """What every page may ask of the admin: is this session unlocked, and the bulk limit."""
    settings = services().settings
    return {
        "admin_session": lambda: admin_session(settings),
        "max_bulk_images": settings.max_bulk_images,
    }


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


def require_admin_page() -> None:
    """A page's admin check: an admin-unlocked session, or the bearer token as for the API."""
    if not admin_session(services().settings):
        require_admin()


@bp.route("/admin/unlock", methods=["GET", "POST"])
def unlock() -> ResponseReturnValue:
    """Ask once for the admin token; the session keeps only its HMAC."""
    error = None
    if request.method == "POST":
        check_csrf()
        try:
            unlock_admin_session(services().settings, request.form.get("token", ""))
        except Forbidden as exc:
            error = exc.public_message
        else:
            return redirect(url_for("admin.stats"), 303)
    return render_unlock(error), 403 if error else 200


def render_unlock(error: str | None) -> str:
    return render_template(
        "unlock.html",
        title="Admin token",
        intro="The admin may see the stats and delete any image. Enter the admin token once; "
        "this browser session remembers it until you sign out.",
        action=url_for("admin.unlock"),
        error=error,
    )


@bp.post("/admin/lock")
def lock() -> ResponseReturnValue:
    """Sign this browser session out of the admin's rights."""
    check_csrf()
    lock_admin_session()
    return redirect(url_for("pages.gallery"), 303)


def current_stats() -> CatalogStats:
    svc = services()
    limit = svc.settings.stats_max_records
    return summarize(svc.catalog.scan(limit=limit), limit=limit)


@bp.get("/admin/stats")
def stats() -> ResponseReturnValue:
    """The admin's stats page: uploads per day, bytes, formats, label sources, as SVG charts."""
    try:
        require_admin_page()
    except Unauthorized as exc:
        if wants_json():
            raise
        # A browser without the token: the way in, with the status that says why.
        observability.count_error(exc.code)
        return render_unlock("This page is for the admin: enter the admin token first."), 401
    if wants_json():
        return stats_json(current_stats())
    figures = current_stats()
    return render_template(
        "stats.html", stats=figures, peak=max((n for _, n in figures.uploads_per_day), default=0)
    )


@bp.get("/api/admin/stats")
def stats_api() -> ResponseReturnValue:
    """The stats page's figures as JSON (admin token only)."""
    require_admin()
    return stats_json(current_stats())


def stats_json(figures: CatalogStats) -> dict[str, Any]:
    return {
        "images": figures.images,
        "held": figures.held,
        "unreadable": figures.unreadable,
        "complete": figures.complete,
        "limit": figures.limit,
        "uploads_per_day": [
            {"date": day.isoformat(), "uploads": n} for day, n in figures.uploads_per_day
        ],
        "bytes_original": figures.bytes_original,
        "bytes_stored": figures.bytes_stored,
        "bytes_saved": figures.bytes_saved,
        "formats": dict(figures.formats),
        "label_sources": dict(figures.label_sources),
    }
