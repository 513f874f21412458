"""The JSON API for scripts and curl: upload, list, show and delete images.

It never reads cookies, so a cross-site form cannot drive it (no CSRF surface).
"""

from __future__ import annotations

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from imaging.formats import describe_outputs
from imaging.web import services
from imaging.web.presentation import image_json, ingest_request, page_limit, upload_response
from imaging.web.security import authorize_delete, require_api_upload

bp = Blueprint("api", __name__)


@bp.post("/api/images")
def create() -> ResponseReturnValue:
    """Upload one or more images (multipart field ``image``); 201 with the record(s)."""
    require_api_upload(services().settings)
    return upload_response(ingest_request())


@bp.post("/convert")
def convert() -> ResponseReturnValue:
    """The seed tool's form (``name``, ``format``, ``image``): same pipeline, same answer."""
    require_api_upload(services().settings)
    return upload_response(ingest_request())


@bp.get("/api/images")
def index() -> ResponseReturnValue:
    """Gallery order, newest first: ``?cursor=``, ``?limit=`` (max 100), ``?label=``."""
    page = services().catalog.page(
        cursor=request.args.get("cursor") or None,
        limit=page_limit(24),
        label=request.args.get("label") or None,
    )
    return {
        "images": [image_json(r) for r in page.records],
        "next_cursor": page.next_cursor,
    }


@bp.get("/api/images/<image_id>")
def show(image_id: str) -> ResponseReturnValue:
    """One image's record."""
    return image_json(services().catalog.get(image_id))


@bp.delete("/api/images/<image_id>")
def delete(image_id: str) -> ResponseReturnValue:
    """Remove the record and every variant. Needs the image's delete key or the admin token."""
    catalog = services().catalog
    record = catalog.get(image_id)
    authorize_delete(
        services().settings,
        record,
        request.headers.get("X-Delete-Key") or request.args.get("key"),
    )
    catalog.delete(image_id)
    return "", 204


@bp.get("/api/formats")
def formats() -> ResponseReturnValue:
    """The output format registry (what ``format=`` accepts)."""
    return {"formats": describe_outputs()}
