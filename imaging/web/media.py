"""Serves the image files of a store whose public URLs point at the app (LocalStore, the embedded
default); GCS serves its own in production, so its ``read_for_serving`` answers ObjectNotFound.

Only ``img/`` keys are public: records and index markers are never served. Files go out with
our own Content-Type (they are our re-encoded output), nosniff, a year-long immutable cache and
``FILE_POLICY``: an SVG opened on its own (not through ``<img>``) may run nothing and load nothing.
A single byte range is answered with a 206, as GCS does.
"""

from __future__ import annotations

import hashlib

from flask import Blueprint, Response, request
from flask.typing import ResponseReturnValue
from werkzeug.http import parse_range_header

from imaging.catalog import IMAGE_PREFIX
from imaging.errors import NotFound
from imaging.storage import IMMUTABLE_CACHE_CONTROL
from imaging.web import FILE_POLICY, services

bp = Blueprint("media", __name__)


@bp.get("/media/<path:key>")
def serve(key: str) -> ResponseReturnValue:
    """One stored image file."""
    if not key.startswith(IMAGE_PREFIX):
        raise NotFound("No such image file.")
    try:
        data, content_type = services().store.read_for_serving(key)
    except ValueError:  # a malformed key: it came from the URL
        raise NotFound("No such image file.") from None
    response = Response(data, mimetype=content_type)
    # A key's bytes never change (writes are create-only), so the key itself is the ETag.
    response.set_etag(hashlib.sha256(key.encode()).hexdigest()[:32])
    response.headers["Cache-Control"] = IMMUTABLE_CACHE_CONTROL
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = FILE_POLICY
    response.headers["Accept-Ranges"] = "bytes"
    # One byte range, as GCS answers it (a resumed download, a reader seeking): a 206, or a 416
    # beyond the end. A Range that does not parse, asks for several ranges or in other units is
    # ignored and the whole file goes out, as RFC 9110 lets a server do.
    wanted = parse_range_header(request.headers.get("Range"))
    one_range = wanted is not None and wanted.units == "bytes" and len(wanted.ranges) == 1
    return response.make_conditional(
        request, accept_ranges=one_range, complete_length=len(data) if one_range else None
    )
