"""The HTTP edge: blueprints, the one content-negotiated error handler, security headers, CSRF.

The web layer parses requests, checks who may do what and renders answers; it knows nothing of
Pillow or of a storage backend's internals. Everything else happens in ``pipeline.ingest``.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from flask import Flask, current_app, render_template, request, session
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import MIMEAccept
from werkzeug.exceptions import HTTPException

from imaging import observability
from imaging.catalog import TEMP_PREFIX
from imaging.config import Settings
from imaging.errors import Forbidden, ImagingError, limit_message
from imaging.services import Services, services_of
from imaging.untrusted import same_secret

log = logging.getLogger(__name__)

#: Where GCSStore's public URLs and signed upload URLs point (without PUBLIC_BASE_URL).
GCS_ENDPOINT = "https://storage.googleapis.com"


def image_sources(settings: Settings) -> list[str]:
    """Where pages load images from besides us: the CDN in front, or the public bucket alone
    (a path, not the whole storage host: no other bucket's objects)."""
    if settings.public_base_url:
        return [settings.public_base_url.rstrip("/") + "/"]
    if settings.storage_backend == "gcs":
        return [f"{GCS_ENDPOINT}/{settings.gcs_public_bucket}/"]
    return []


def upload_sources(settings: Settings) -> list[str]:
    """Where pages send direct uploads besides us: signed URLs into the private bucket's tmp/."""
    if settings.storage_backend == "gcs":
        return [f"{GCS_ENDPOINT}/{settings.gcs_bucket}/{TEMP_PREFIX}"]
    return []


def content_security_policy(settings: Settings) -> str:
    """Scripts, styles and frames only from us; images only from us and the public bucket (or
    its CDN), fetches only to us and the private bucket's upload prefix (not every https: host,
    so an injected tag can neither show nor send anything elsewhere)."""
    images = "".join(f" {source}" for source in image_sources(settings))
    uploads = "".join(f" {source}" for source in upload_sources(settings))
    return (
        f"default-src 'self'; img-src 'self' data: blob:{images}; style-src 'self'; "
        f"script-src 'self'; connect-src 'self'{uploads}; frame-ancestors 'none'; "
        "base-uri 'self'; form-action 'self'"
    )


#: The policy of every image file we answer with (``/media/`` and ``?inline=1``), rasters'
#: too: no script, no fetch, no form, a sandboxed document, so an SVG opened on its own runs
#: nothing. Our SVGs hold only paths (imaging/processing/vector.py); this is the second wall.
FILE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; sandbox"


#: The machine doors' paths: storage events and Cloud Tasks (web/deliveries.py).
MACHINE_PATHS = ("/events/", "/tasks/")
#: The API blueprint's paths (web/api.py): JSON whatever the client Accepts.
API_PREFIX, CONVERT_PATH = "/api/", "/convert"


def services() -> Services:
    """The app's Services (imaging/services.py): the one way blueprints reach them."""
    return services_of(current_app)


def machine_request() -> bool:
    """A storage event or a Cloud Task: a sender that reads JSON whatever it Accepts."""
    return request.path.startswith(MACHINE_PATHS)


def wants_json() -> bool:
    """API clients and machines get JSON, browsers get pages (the microblog rule)."""
    return request.blueprint == "api" or prefers_json(request.path, request.accept_mimetypes)


def prefers_json(path: str, accept: MIMEAccept) -> bool:
    """The rule itself, for a request Flask may never see (imaging/wire.py): the API's and
    the machine doors' paths, or an Accept that ranks JSON above HTML."""
    if path.startswith((API_PREFIX, *MACHINE_PATHS)) or path == CONVERT_PATH:
        return True
    best = accept.best_match(["application/json", "text/html"])
    return best == "application/json" and accept[best] > accept["text/html"]


def error_response(status: int, code: str, message: str) -> ResponseReturnValue:
    observability.count_error(code)  # every error handler answers through here
    if wants_json():
        return {"error": code, "message": message}, status
    titles = {
        400: "Bad request",
        401: "Sign-in needed",
        403: "Not allowed",
        404: "Not found",
        405: "Not allowed",
        409: "Cannot do that to this image",
        410: "Gone",
        413: "File too large",
        415: "Unsupported file",
        416: "Range not satisfiable",
        422: "Image too large",
        429: "Slow down",
        503: "Busy right now",
    }
    title = titles.get(status, "Something went wrong")
    return render_template("error.html", status=status, title=title, message=message), status


def log_error(exc: ImagingError) -> None:
    """The internal detail, once, at the level the failure deserves."""
    if machine_request():
        # Nobody reads a machine's answer: the reason always goes to the log, and a bad token
        # (a misconfigured sender) is as worth a look as a failure of ours.
        bad_token = exc.status in (401, 403)
        level = logging.WARNING if exc.status >= 500 or bad_token else logging.INFO
        log.log(level, "%s %s: %s: %s", request.method, request.path, exc.code, exc.detail or "")
    elif exc.status >= 500:
        log.warning("%s: %s", exc.code, exc.detail or exc.public_message)
    elif exc.detail:
        log.info("%s: %s", exc.code, exc.detail)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ImagingError)
    def imaging_error(exc: ImagingError) -> ResponseReturnValue:
        log_error(exc)
        response = app.make_response(error_response(exc.status, exc.code, exc.public_message))
        if exc.retry_after:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        status = exc.code or 500
        code = {413: "too_large", 429: "rate_limited"}.get(
            status, (exc.name or "error").lower().replace(" ", "_")
        )
        messages = {
            413: limit_message(current_app.config["MAX_CONTENT_LENGTH"], what="upload"),
            404: "Nothing here.",
            405: "That method is not allowed here.",
            400: "The request could not be understood.",
            416: "That byte range is past the end of the file.",
        }
        response = app.make_response(
            error_response(status, code, messages.get(status, exc.description or code))
        )
        kept = {405: "Allow", 416: "Content-Range"}.get(status)  # the header the status needs
        if kept and exc.get_response().headers.get(kept):
            response.headers[kept] = exc.get_response().headers[kept]
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> ResponseReturnValue:
        # The detail goes to the log with the trace id; the client gets a generic message.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "Something went wrong on our side.")


def register_security(app: Flask, settings: Settings) -> None:
    csp = content_security_policy(settings)

    @app.after_request
    def security_headers(response: Any) -> Any:
        headers = response.headers
        headers.setdefault("Content-Security-Policy", csp)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        headers.setdefault("X-Frame-Options", "DENY")
        if settings.on_cloud_run:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        return response

    @app.context_processor
    def template_globals() -> dict[str, Any]:
        return {"csrf_token": csrf_token, "app_name": "cloud-image-app"}


def csrf_token() -> str:
    token = session.get("csrf_token")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf_token"] = token
    return token


def check_csrf() -> None:
    """Page forms carry the session's token (field or X-CSRF-Token header)."""
    expected = session.get("csrf_token")
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    if not isinstance(expected, str) or not same_secret(sent, expected):
        raise Forbidden(
            "The form expired or did not come from this site. Reload the page and try again."
        )
