"""Serves LocalStore's image files (the embedded default); GCS serves its own in production.

Only ``img/`` keys are public: records and index markers are never served. Files go out with
our own Content-Type (they are our re-encoded output), nosniff, and a year-long immutable cache.
"""

from __future__ import annotations

import hashlib

from flask import Blueprint, Response, request
from flask.typing import ResponseReturnValue

from imaging.catalog import IMAGE_PREFIX
from imaging.errors import NotFound
from imaging.storage import IMMUTABLE_CACHE_CONTROL
from imaging.web import services

bp = Blueprint("media", __name__)


@bp.get("/media/<path:key>")
def serve(key: str) -> ResponseReturnValue:
    """One stored image file."""
    store = services().store
    opener = getattr(store, "open_for_serving", None)
    if not key.startswith(IMAGE_PREFIX) or opener is None:
        raise NotFound("No such image file.")
    try:
        path, content_type = opener(key)
        # Read whole (variants are at most MAX_OUTPUT_SIDE px): no file stays open on the
        # response when a browser drops the connection mid-transfer.
        data = path.read_bytes()
    except (ValueError, OSError):
        raise NotFound("No such image file.") from None
    response = Response(data, mimetype=content_type)
    # A key's bytes never change (writes are create-only), so the key itself is the ETag.
    response.set_etag(hashlib.sha256(key.encode()).hexdigest()[:32])
    response.headers["Cache-Control"] = IMMUTABLE_CACHE_CONTROL
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response.make_conditional(request)
