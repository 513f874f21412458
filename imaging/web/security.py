"""Who may upload and delete, and how often: upload tokens, per-client rate limits.

- ``UPLOAD_TOKEN`` (comma-separated, so tokens can be rotated): the API needs
  ``Authorization: Bearer <token>``; the upload page asks once and keeps only an HMAC of the
  token keyed with SECRET_KEY in the (signed, HttpOnly, Secure over HTTPS) session, never the
  token, never a plain hash (the session is readable by whoever holds the cookie, and a weak
  token's sha256 could be guessed offline) and never in a URL.
- ``ADMIN_TOKEN``: the API takes it as a bearer token only (``is_admin``); a browser may unlock
  its session with it once (``/admin/unlock``), which keeps only an HMAC of it, read by page
  doors alone (``admin_session``) and each one that writes checks CSRF first.
- ``RATE_LIMIT`` (e.g. ``30/minute``) is a budget of work per client address (taken from
  ``X-Forwarded-For`` only behind a trusted proxy: ProxyFix with TRUSTED_PROXY_HOPS, on by
  default on Cloud Run). Every upload door (UPLOAD_DOORS) draws on one shared budget, each
  request costing files × formats, the renditions it asks for; the other writes (and all of
  admin) count requests per route. Over the limit: 429 with ``Retry-After``. The budgets live in
  RATE_LIMIT_STORAGE_URI: ``memory://`` (one per process) or Redis (one for every instance).
All comparisons of secrets are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any, cast

from flask import Blueprint, Flask, g, has_request_context, request, session
from flask.sessions import SecureCookieSessionInterface
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse_many
from werkzeug.datastructures import CombinedMultiDict, MultiDict

from imaging.catalog import ImageRecord
from imaging.config import Settings
from imaging.errors import Forbidden, ImagingError, NotFound, TooLarge, Unauthorized
from imaging.untrusted import bearer, same_secret
from imaging.web import check_csrf
from imaging.web.forms import requested_formats, sent_files
from imaging.web.presentation import request_body

SESSION_KEY = "upload_token_hmac"
#: An admin-unlocked browser session (the gallery's bulk delete, the stats page): the same HMAC
#: rule as the upload token's, under its own name and key, so neither stands in for the other.
ADMIN_SESSION_KEY = "admin_token_hmac"


def token_mac(settings: Settings, token: str, *, purpose: str = "upload-token") -> str:
    """What an unlocked session holds: guessing the token from it needs SECRET_KEY too."""
    domain = f"imaging.session.{purpose}|".encode()
    key = hashlib.sha256(domain + settings.secret_key.encode()).digest()
    return hmac.new(key, token.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


class HttpsSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, whose cookie is Secure whenever the request came over
    HTTPS (its scheme after ProxyFix or PUBLIC_URL), not only where SESSION_COOKIE_SECURE says."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return super().get_cookie_secure(app) or (has_request_context() and request.is_secure)


def matches_any(candidate: str, tokens: tuple[str, ...]) -> bool:
    """Constant-time against every configured token (no early exit that leaks which matched)."""
    found = False
    for token in tokens:
        found |= same_secret(candidate, token)
    return found


def bearer_token() -> str | None:
    return bearer(request.headers.get("Authorization", ""))


def require_api_upload(settings: Settings) -> None:
    """API doors: a valid bearer token when UPLOAD_TOKEN is set (never a cookie)."""
    if not settings.upload_tokens:
        return
    token = bearer_token()
    if token is None:
        raise Unauthorized("This server needs an upload token: send 'Authorization: Bearer ...'.")
    if not matches_any(token, settings.upload_tokens):
        raise Forbidden("That upload token is not valid.")


def page_upload_allowed(settings: Settings) -> bool:
    """Page doors: the session holds the hash of a token that is still configured."""
    if not settings.upload_tokens:
        return True
    held = session.get(SESSION_KEY)
    if not isinstance(held, str):
        return False
    return matches_any(held, tuple(token_mac(settings, t) for t in settings.upload_tokens))


def require_page_upload(settings: Settings) -> None:
    """Page doors (the form post, the direct-upload ticket and completion): the session's CSRF
    token, then an unlocked session when UPLOAD_TOKEN is set."""
    check_csrf()
    if not page_upload_allowed(settings):
        raise Unauthorized("Enter the upload token first (Upload page).")


def unlock_session(settings: Settings, token: str) -> None:
    if not matches_any(token, settings.upload_tokens):
        raise Forbidden("That upload token is not valid.")
    session[SESSION_KEY] = token_mac(settings, token)


def is_admin(settings: Settings) -> bool:
    """The API's admin: ``Authorization: Bearer <ADMIN_TOKEN>`` (never a cookie)."""
    token = bearer_token() or ""
    return bool(settings.admin_token) and same_secret(token, settings.admin_token)


def admin_session(settings: Settings) -> bool:
    """The pages' admin: a session unlocked with the ADMIN_TOKEN that is configured now.

    Only page doors read it, and each one that changes anything checks the CSRF token first."""
    held = session.get(ADMIN_SESSION_KEY)
    if not settings.admin_token or not isinstance(held, str):
        return False
    return same_secret(held, token_mac(settings, settings.admin_token, purpose="admin-token"))


def unlock_admin_session(settings: Settings, token: str) -> None:
    if not settings.admin_token:
        raise Forbidden("No admin token is configured on this server (ADMIN_TOKEN).")
    if not same_secret(token, settings.admin_token):
        raise Forbidden("That admin token is not valid.")
    session[ADMIN_SESSION_KEY] = token_mac(settings, token, purpose="admin-token")


def lock_admin_session() -> None:
    session.pop(ADMIN_SESSION_KEY, None)


def visible_record(
    settings: Settings, record: ImageRecord, delete_key: str | None, *, admin: bool = False
) -> ImageRecord:
    """``record`` if the caller may see it; a held-back one only to the admin and its uploader
    (the delete key), and to everyone else 404, exactly as if it did not exist. ``admin``: the
    caller is already known to be the admin (an admin session on a page door)."""
    if record.hidden and not (
        admin or is_admin(settings) or (delete_key and record.accepts_delete_key(delete_key))
    ):
        raise NotFound("No image with that id.")
    return record


def authorize_delete(
    settings: Settings, record: ImageRecord, delete_key: str | None, *, admin: bool = False
) -> None:
    """Only the uploader (the delete key shown once at upload) or the admin may delete."""
    if admin or is_admin(settings):
        return
    if not delete_key:
        raise Unauthorized("Send the image's delete key (X-Delete-Key) or the admin token.")
    if not record.accepts_delete_key(delete_key):
        raise Forbidden("That delete key does not belong to this image.")


#: Every endpoint that converts, all drawing on the one upload budget. Direct-upload tickets
#: are not here: a ticket converts nothing (its completion pays), so it counts as a request.
UPLOAD_DOORS = (
    "api.create",
    "api.convert",
    "pages.upload_post",
    "uploads.complete",
    "uploads.page_complete",
)
#: Completions convert the one file already uploaded.
COMPLETION_DOORS = ("uploads.complete", "uploads.page_complete")


def upload_work(settings: Settings) -> int:
    """What the current upload request costs: files × formats, the renditions it asks for.

    Renditions, not pixels: the count is known before a byte is decoded, and MAX_PIXELS
    bounds what one rendition may cost. A request the readers will refuse anyway (too many
    files, a bad format list) costs nothing here; the view answers it with the reason.
    """
    try:
        values = MultiDict(CombinedMultiDict([request_body(), request.args]))
        files = 1 if request.endpoint in COMPLETION_DOORS else len(sent_files(settings))
        return files * len(requested_formats(settings, values))
    except ImagingError:
        return 0


def budget_of(settings: Settings) -> int:
    """The most work one request may cost: the smallest amount in RATE_LIMIT."""
    return min(item.amount for item in parse_many(settings.rate_limit))


def init_rate_limits(app: Flask, settings: Settings, *blueprints: str) -> None:
    """Charge every upload door by work from one budget per client; limit the other writes of
    the named blueprints per request. Counted in RATE_LIMIT_STORAGE_URI."""
    if not settings.rate_limit:
        return
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=settings.rate_limit_storage_uri or "memory://",
        headers_enabled=True,
        default_limits=[],
        # Storage down (Redis unreachable): the failure is logged and the request goes on
        # unlimited, never a 500; MAX_FILES_PER_REQUEST and CONVERSION_SLOTS still bound it.
        swallow_errors=True,
    )
    budget = budget_of(settings)

    @app.before_request
    def price_upload() -> None:
        if request.endpoint not in UPLOAD_DOORS:
            return
        g.upload_work = upload_work(settings)
        if g.upload_work > budget:
            raise TooLarge(
                f"This request asks for {g.upload_work} conversions (files × formats); "
                f"this server allows at most {budget} at once ({settings.rate_limit} per "
                "client). Send fewer files or formats per request."
            )

    upload_budget = limiter.shared_limit(
        settings.rate_limit,
        scope="uploads",
        cost=lambda: int(g.get("upload_work", 1)),
        error_message=(
            f"Too many conversions: this server converts at most {settings.rate_limit} "
            "images (files × formats) per client. Wait and try again."
        ),
    )
    for endpoint in UPLOAD_DOORS:
        # A limit on the view itself overrides its blueprint's per-request limit below.
        view: Callable[..., Any] = app.view_functions[endpoint]
        app.view_functions[endpoint] = upload_budget(view)
    for name in blueprints:
        # Writes are limited everywhere; the admin blueprint entirely, so its token cannot be
        # guessed through a GET either. Gallery reads stay unlimited.
        methods = None if name == "admin" else ["POST", "PUT", "DELETE"]
        route_limit = limiter.limit(settings.rate_limit, methods=methods)
        route_limit(cast(Blueprint, app.blueprints[name]))
