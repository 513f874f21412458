"""The JSON API for scripts and curl: upload, list, show and delete images.

It never reads cookies, so a cross-site form cannot drive it (no CSRF surface).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

from flask import Blueprint, Response, request, url_for
from flask.typing import ResponseReturnValue

from imaging.catalog import ImageRecord
from imaging.errors import BadRequest, Forbidden, Unauthorized
from imaging.formats import OUTPUT_FORMATS, describe_outputs
from imaging.pipeline import IngestResult
from imaging.web import services
from imaging.web.forms import read_files, read_options
from imaging.web.security import is_admin, require_api_upload

bp = Blueprint("api", __name__)

MAX_PAGE = 100


def image_json(record: ImageRecord) -> dict[str, Any]:
    """A record as clients see it, with absolute public URLs and its page."""
    store = services().store

    def public_url(key: str) -> str:
        # LocalStore's URLs are paths on this app; clients (curl) need them absolute.
        return urljoin(request.host_url, store.public_url(key))

    data = record.public(public_url)
    data["detail_url"] = url_for("pages.detail", image_id=record.id, _external=True)
    return data


def result_json(result: IngestResult) -> dict[str, Any]:
    data = image_json(result.record)
    data["duplicate"] = result.duplicate
    if result.delete_key:
        data["delete_key"] = result.delete_key
    return data


def ingest_request(*, api: bool = True) -> list[IngestResult]:
    """Run every file of the current request through the pipeline (shared by all doors)."""
    svc = services()
    if api:
        require_api_upload(svc.settings)
    files = read_files(svc.settings)
    results = []
    for upload in files:
        options = read_options(svc.settings, filename=upload.filename)
        results.append(svc.pipeline.ingest(upload.data, options))
    return results


def upload_response(results: list[IngestResult]) -> ResponseReturnValue:
    if request.args.get("inline") in ("1", "true"):
        return inline_response(results)
    status = 201 if any(not r.duplicate for r in results) else 200
    if len(results) == 1:
        body = result_json(results[0])
        return body, status, {"Location": url_for("api.show", image_id=results[0].record.id)}
    return {"images": [result_json(r) for r in results]}, status


def inline_response(results: list[IngestResult]) -> Response:
    """``?inline=1``: answer with the converted bytes of the one format asked for."""
    if len(results) != 1 or len(results[0].record.variants) != 1:
        raise BadRequest("inline=1 needs exactly one file and one output format.")
    result = results[0]
    variant = result.record.variants[0]
    rendition = result.renditions.get(variant.name)
    data = rendition.data if rendition is not None else services().store.get(variant.key)
    return Response(
        data,
        status=201 if not result.duplicate else 200,
        mimetype=variant.content_type,
        headers={
            "X-Image-Id": result.record.id,
            "Location": url_for("api.show", image_id=result.record.id),
            "Content-Disposition": f'inline; filename="{result.record.id}.{_ext(variant.format)}"',
        },
    )


def _ext(fmt: str) -> str:
    return OUTPUT_FORMATS[fmt].ext


@bp.post("/api/images")
def create() -> ResponseReturnValue:
    """Upload one or more images (multipart field ``image``); 201 with the record(s)."""
    return upload_response(ingest_request())


@bp.post("/convert")
def convert() -> ResponseReturnValue:
    """The seed tool's form (``name``, ``format``, ``image``): same pipeline, same answer."""
    return upload_response(ingest_request())


@bp.get("/api/images")
def index() -> ResponseReturnValue:
    """Gallery order, newest first: ``?cursor=``, ``?limit=`` (max 100), ``?label=``."""
    try:
        limit = min(MAX_PAGE, max(1, int(request.args.get("limit", "24"))))
    except ValueError:
        raise BadRequest("limit must be a whole number.") from None
    page = services().catalog.page(
        cursor=request.args.get("cursor") or None,
        limit=limit,
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
    authorize_delete(record, request.headers.get("X-Delete-Key") or request.args.get("key"))
    catalog.delete(image_id)
    return "", 204


def authorize_delete(record: ImageRecord, delete_key: str | None) -> None:
    """Only the uploader (the delete key shown once at upload) or the admin may delete."""
    if is_admin(services().settings):
        return
    if not delete_key:
        raise Unauthorized("Send the image's delete key (X-Delete-Key) or the admin token.")
    if not record.accepts_delete_key(delete_key):
        raise Forbidden("That delete key does not belong to this image.")


@bp.get("/api/formats")
def formats() -> ResponseReturnValue:
    """The output format registry (what ``format=`` accepts)."""
    return {"formats": describe_outputs()}
