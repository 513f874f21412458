"""Direct uploads over HTTP: tickets, the app's own PUT endpoint, completion (doors/direct.py).

Two doors to the same three steps, like the rest of the app:

- the API (``/api/uploads...``) never reads cookies: the upload token comes as a bearer header;
- the upload page (``/upload/direct...``) uses its session and CSRF token, like ``/upload``.

``PUT /api/uploads/<id>/data?token=...`` is where LocalStore uploads go (GCS uploads go to the
bucket instead); the signed token is its only credential, as a signed URL is GCS's.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import click
from flask import Blueprint, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import CombinedMultiDict, MultiDict

from imaging.errors import BadRequest
from imaging.web import services
from imaging.web.forms import read_options
from imaging.web.presentation import request_body, upload_response
from imaging.web.security import require_api_upload, require_page_upload

bp = Blueprint("uploads", __name__, cli_group="uploads")


@bp.app_context_processor
def direct_upload_settings() -> dict[str, Any]:
    """What the upload page's script needs to pick the direct path for big files."""
    settings = services().settings
    return {
        "direct_upload": {
            "threshold": settings.direct_upload_threshold_bytes,
            "max_bytes": settings.direct_upload_max_bytes,
        }
    }


# -- the API -----------------------------------------------------------------------------------
@bp.post("/api/uploads")
def create() -> ResponseReturnValue:
    """Start a direct upload: ``content_type``, ``size`` (bytes), optional ``name``; 201 ticket."""
    require_api_upload(services().settings)
    return ticket_response("uploads.complete")


@bp.put("/api/uploads/<upload_id>/data")
def receive(upload_id: str) -> ResponseReturnValue:
    """The PUT a ticket points at when the store cannot sign URLs (LocalStore): single use."""
    uploads = services().uploads
    grant = uploads.grant_put(upload_id, request.args.get("token", ""))
    uploads.check_put(
        grant,
        content_type=request.headers.get("Content-Type", ""),
        content_length=request.content_length,
    )
    # This body may be larger than MAX_UPLOAD_MB (the app-wide cap): the ticket bounds it, and
    # receive() enforces that bound exactly while streaming it to disk. Werkzeug's own cap
    # stays one byte looser: under gunicorn (wsgi.input_terminated) its stream raises 413 on
    # the read after the limit is reached, so a cap of exactly the announced size refused
    # every exact-size PUT (the dev server hid it). One byte over the ticket is still refused,
    # by receive().
    request.max_content_length = grant.max_bytes + 1
    size = uploads.receive(grant, request.stream, content_length=request.content_length)
    return {"upload_id": upload_id, "bytes": size}, 201


@bp.post("/api/uploads/<upload_id>/complete")
def complete(upload_id: str) -> ResponseReturnValue:
    """Convert the uploaded file (same options as ``POST /api/images``); 201, or 200 on repeat."""
    require_api_upload(services().settings)
    return completion_response(upload_id)


# -- the upload page's doors ---------------------------------------------------------------------
@bp.post("/upload/direct")
def page_create() -> ResponseReturnValue:
    """The page's ticket request (session + CSRF token, like the page's form post)."""
    require_page_upload(services().settings)
    return ticket_response("uploads.page_complete")


@bp.post("/upload/direct/<upload_id>/complete")
def page_complete(upload_id: str) -> ResponseReturnValue:
    """The page's completion (session + CSRF token)."""
    require_page_upload(services().settings)
    return completion_response(upload_id)


# -- shared --------------------------------------------------------------------------------------
def ticket_response(complete_endpoint: str) -> ResponseReturnValue:
    body = request_body()
    size_raw = body.get("size", "")
    try:
        size = int(size_raw)
    except ValueError:
        raise BadRequest("size must be the file's size in bytes (a whole number).") from None
    ticket = services().uploads.create(
        content_type=body.get("content_type", ""),
        size=size,
        app_put_url=lambda upload_id, token: url_for(
            "uploads.receive", upload_id=upload_id, token=token, _external=True
        ),
    )
    complete_url = url_for(complete_endpoint, upload_id=ticket.upload_id, _external=True)
    if name := body.get("name", "").strip():
        # The name rides on the completion URL, so completing needs nothing remembered here;
        # a name in the completion's own body still wins.
        complete_url += "?" + urlencode({"name": name[:200]})
    data = ticket.public()
    data["complete_url"] = complete_url
    # The URL is a credential for its lifetime: no cache may keep it.
    return data, 201, {"Cache-Control": "no-store"}


def completion_response(upload_id: str) -> ResponseReturnValue:
    settings = services().settings
    # A JSON body feeds the options too, and the body wins over the query string (where the
    # ticket's name rides).
    values = MultiDict(CombinedMultiDict([request_body(), request.args]))
    # The ticket's secret: a header, or a field of the body (never the query string, which logs
    # and the ticket's complete_url carry).
    completion_key = request.headers.get("X-Completion-Key") or request_body().get(
        "completion_key", ""
    )
    result = services().uploads.complete(
        upload_id, read_options(settings, values=values), completion_key=completion_key
    )
    return upload_response([result])


@bp.cli.command("sweep")
def sweep() -> None:
    """Remove temporary uploads and markers past their completion window (LocalStore)."""
    removed = services().uploads.sweep()
    for key in removed:
        click.echo(f"removed {key}")
    click.echo(f"{len(removed)} expired direct-upload object(s) removed.")
