"""The JSON API for scripts and curl: upload, list, show, re-crop and delete images.

It never reads cookies, so a cross-site form cannot drive it (no CSRF surface).
"""

from __future__ import annotations

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from imaging.formats import describe_outputs
from imaging.web import services
from imaging.web.forms import required_focus
from imaging.web.presentation import (
    gallery_page,
    image_json,
    ingest_request,
    page_limit,
    request_body,
    upload_response,
)
from imaging.web.security import authorize_delete, require_api_upload, visible_record

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
    """Gallery order, newest first: ``?cursor=``, ``?limit=`` (max 100), ``?label=``, and
    ``?q=`` (images found by every word, through the search index)."""
    page = gallery_page(limit=page_limit(24))
    return {
        "images": [image_json(r) for r in page.records],
        "next_cursor": page.next_cursor,
    }


@bp.get("/api/images/<image_id>")
def show(image_id: str) -> ResponseReturnValue:
    """One image's record; a held-back one only with its delete key or the admin token."""
    record = services().catalog.get(image_id)
    return image_json(visible_record(services().settings, record, delete_key()))


@bp.delete("/api/images/<image_id>")
def delete(image_id: str) -> ResponseReturnValue:
    """Remove the record and every variant. Needs the image's delete key or the admin token."""
    catalog = services().catalog
    settings = services().settings
    record = visible_record(settings, catalog.get(image_id), delete_key())
    authorize_delete(settings, record, delete_key())
    catalog.delete(image_id)
    return "", 204


@bp.post("/api/images/<image_id>/focus")
def focus(image_id: str) -> ResponseReturnValue:
    """Move the focal point of a cover-cropped image (``focus=x,y`` in 0..1, form or JSON):
    its cropped variants are cut again, under new URLs. Authorised like delete."""
    svc = services()
    record = visible_record(svc.settings, svc.catalog.get(image_id), delete_key())
    authorize_delete(svc.settings, record, delete_key())
    point = required_focus(request_body())
    return image_json(svc.refocus.refocus(record, point))


def delete_key() -> str | None:
    return request.headers.get("X-Delete-Key") or request.args.get("key")


@bp.get("/api/formats")
def formats() -> ResponseReturnValue:
    """The output format registry (what ``format=`` accepts)."""
    return {"formats": describe_outputs()}
