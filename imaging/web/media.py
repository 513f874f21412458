"""Serves LocalStore's image files (the embedded default); GCS serves its own in production.

Only ``img/`` keys are public: records and index markers are never served. Files go out with
our own Content-Type (they are our re-encoded output), nosniff, and a year-long immutable cache.
"""

from __future__ import annotations

from flask import Blueprint, send_file
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
    except (ValueError, FileNotFoundError, OSError):
        raise NotFound("No such image file.") from None
    response = send_file(path, mimetype=content_type, conditional=True, max_age=31536000)
    response.headers["Cache-Control"] = IMMUTABLE_CACHE_CONTROL
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
