"""Who may upload and delete, and how often: upload tokens, per-client rate limits.

- ``UPLOAD_TOKEN`` (comma-separated, so tokens can be rotated): the API needs
  ``Authorization: Bearer <token>``; the upload page asks once and keeps only the token's hash
  in the (signed, HttpOnly) session, never the token and never in a URL.
- ``RATE_LIMIT`` (e.g. ``30/minute``): every write (and all of admin) is limited per client
  address, taken from ``X-Forwarded-For`` only behind a trusted proxy (ProxyFix with
  TRUSTED_PROXY_HOPS, on by default on Cloud Run). Over the limit: 429 with ``Retry-After``.
All comparisons of secrets are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import cast

from flask import Blueprint, Flask, request, session
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from imaging.catalog import ImageRecord
from imaging.config import Settings
from imaging.errors import Forbidden, NotFound, Unauthorized
from imaging.web import check_csrf

SESSION_KEY = "upload_token_sha256"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def matches_any(candidate: str, tokens: tuple[str, ...]) -> bool:
    """Constant-time against every configured token (no early exit that leaks which matched)."""
    found = False
    for token in tokens:
        found |= hmac.compare_digest(candidate.encode(), token.encode())
    return found


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


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
    return matches_any(held, tuple(token_hash(t) for t in settings.upload_tokens))


def require_page_upload(settings: Settings) -> None:
    """Page doors (the form post, the direct-upload ticket and completion): the session's CSRF
    token, then an unlocked session when UPLOAD_TOKEN is set."""
    check_csrf()
    if not page_upload_allowed(settings):
        raise Unauthorized("Enter the upload token first (Upload page).")


def unlock_session(settings: Settings, token: str) -> None:
    if not matches_any(token, settings.upload_tokens):
        raise Forbidden("That upload token is not valid.")
    session[SESSION_KEY] = token_hash(token)


def is_admin(settings: Settings) -> bool:
    token = bearer_token() or ""
    return bool(settings.admin_token) and hmac.compare_digest(
        token.encode(), settings.admin_token.encode()
    )


def visible_record(settings: Settings, record: ImageRecord, delete_key: str | None) -> ImageRecord:
    """``record`` if the caller may see it; a held-back one only to the admin and its uploader
    (the delete key), and to everyone else 404, exactly as if it did not exist."""
    if record.hidden and not (
        is_admin(settings) or (delete_key and record.accepts_delete_key(delete_key))
    ):
        raise NotFound("No image with that id.")
    return record


def authorize_delete(settings: Settings, record: ImageRecord, delete_key: str | None) -> None:
    """Only the uploader (the delete key shown once at upload) or the admin may delete."""
    if is_admin(settings):
        return
    if not delete_key:
        raise Unauthorized("Send the image's delete key (X-Delete-Key) or the admin token.")
    if not record.accepts_delete_key(delete_key):
        raise Forbidden("That delete key does not belong to this image.")


def init_rate_limits(app: Flask, settings: Settings, *blueprints: str) -> None:
    """Limit every write of the named blueprints per client, in memory (one process's view)."""
    if not settings.rate_limit:
        return
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri="memory://",
        headers_enabled=True,
        default_limits=[],
    )
    for name in blueprints:
        # Writes are limited everywhere; the admin blueprint entirely, so its token cannot be
        # guessed through a GET either. Gallery reads stay unlimited.
        methods = None if name == "admin" else ["POST", "PUT", "DELETE"]
        route_limit = limiter.limit(settings.rate_limit, methods=methods)
        route_limit(cast(Blueprint, app.blueprints[name]))
