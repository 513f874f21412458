"""cloud-image-app's composition root: ``create_app`` builds one configured Flask app.

Nothing happens at import time. ``python cloud_image_app.py`` runs the development server on the
embedded defaults (local storage, local labeler); production runs
``gunicorn 'cloud_image_app:create_app()'`` (see gunicorn.conf.py), which builds the app, and
so the storage and labeling clients, in each worker after the fork.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click
from flask import Flask
from flask.json.provider import DefaultJSONProvider
from werkzeug.middleware.proxy_fix import ProxyFix

from imaging.config import Settings, SettingsError
from imaging.doors.backfill import convert_batch_command
from imaging.doors.relabel import relabel_command
from imaging.labeling import Labeler
from imaging.observability import plain_dev_server_lines
from imaging.services import build_services, install, services_of
from imaging.storage import ObjectStore
from imaging.untrusted import read_json
from imaging.web import (
    admin,
    api,
    bulk,
    deliveries,
    media,
    ops,
    pages,
    register_error_handlers,
    register_security,
    requestlog,
    uploads,
)
from imaging.web.body import guard_input
from imaging.web.forms import UploadRequest
from imaging.web.security import HttpsSessionInterface, init_rate_limits

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

#: Room for the multipart envelope and the small form fields around one file.
FORM_OVERHEAD_BYTES = 256 * 1024


class BodyJSONProvider(DefaultJSONProvider):
    """Flask's JSON, read through ``untrusted.read_json``: a body nested too deeply for Python's
    parser (RecursionError, which ``get_json(silent=True)`` does not catch) is a 400, not a 500."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return read_json(s)


class PublicOrigin:
    """WSGI middleware: the request's scheme and host are the configured public URL's.

    Every absolute URL (``url_for(..., _external=True)``, ``request.host_url``) and the session
    cookie's Secure flag then follow PUBLIC_URL, never a header the client chose.
    """

    def __init__(self, app: WSGIApplication, origin: str) -> None:
        parts = urlsplit(origin)
        self.app, self.scheme, self.host = app, parts.scheme, parts.netloc

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ["wsgi.url_scheme"] = self.scheme
        environ["HTTP_HOST"] = self.host
        return self.app(environ, start_response)


def create_app(
    settings: Settings | None = None,
    *,
    storage: ObjectStore | None = None,
    labeler: Labeler | None = None,
) -> Flask:
    """Build the app. Tests pass their own ``settings`` and backends; production reads the env."""
    if settings is None:
        settings = load_settings()
    app = Flask(__name__)
    app.request_class = UploadRequest  # uploads stay in memory, bounded by MAX_CONTENT_LENGTH
    app.json = BodyJSONProvider(app)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + FORM_OVERHEAD_BYTES,
        # Werkzeug holds each 64 KiB read of a multipart body against this limit, file parts
        # included: at 64 KiB every file over 64 KiB got a 413. It still caps a text field.
        MAX_FORM_MEMORY_SIZE=512 * 1024,
        MAX_FORM_PARTS=64,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.on_cloud_run,
        TESTING=settings.testing,
    )
    app.session_interface = HttpsSessionInterface()
    # Innermost: a body the server cannot read (a broken chunk) is the client's 400, not a 500.
    app.wsgi_app = guard_input(app.wsgi_app)  # type: ignore[method-assign,assignment]
    if settings.public_origin:
        app.wsgi_app = PublicOrigin(app.wsgi_app, settings.public_origin)  # type: ignore[method-assign]
    if settings.on_cloud_run or settings.trusted_proxy_hops:
        # Cloud Run's front end terminates TLS: trust its X-Forwarded-For and -Proto so client
        # addresses are real and URLs say https. Never X-Forwarded-Host: a client sets it at
        # will and proxies pass it on, so it would choose the host of the URLs we hand out.
        hops = settings.trusted_proxy_hops or 1
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=0
        )
    # Before the other hooks: every request, even one they refuse, gets its id, trace and log line.
    requestlog.init_app(app, settings)

    install(app, build_services(settings, store=storage, labeler=labeler))
    for blueprint in (
        pages.bp,
        api.bp,
        bulk.bp,
        media.bp,
        ops.bp,
        uploads.bp,
        deliveries.bp,
        admin.bp,
    ):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    register_security(app, settings)
    init_rate_limits(app, settings, "api", "bulk", "pages", "uploads", "admin")
    register_commands(app)
    return app


def load_settings() -> Settings:
    """Settings from the environment, with ``.env`` filled in first (outside tests only)."""
    from dotenv import load_dotenv

    load_dotenv(override=False)
    return Settings.from_env()


def register_commands(app: Flask) -> None:
    @app.cli.command("gc")
    @click.option("--grace", type=int, default=None, help="Seconds an unrecorded object may live.")
    @click.option(
        "--check-records",
        is_flag=True,
        help="Also read every record and name those that no longer parse (one read each).",
    )
    def gc(grace: int | None, check_records: bool) -> None:
        """Remove variants and index markers left without a record by a crashed upload, and
        direct uploads past their completion window."""
        svc = services_of(app)
        grace_seconds = svc.settings.gc_grace_seconds if grace is None else grace
        now = time.time()
        removed = svc.catalog.sweep(grace_seconds=grace_seconds, now=now)
        # Expired direct uploads too: the app sweeps them by itself while it takes uploads,
        # and this covers one that sat idle (or was never started) since they expired.
        removed += svc.uploads.sweep(now=now)
        for key in removed:
            click.echo(f"removed {key}")
        click.echo(f"{len(removed)} orphaned object(s) removed (grace {grace_seconds}s).")
        if check_records:
            # A damaged record is still committed: the sweep keeps what it owns, and says so.
            unreadable = list(svc.catalog.unreadable_keys())
            for key in unreadable:
                click.echo(f"unreadable {key}")
            click.echo(f"{len(unreadable)} unreadable record(s) kept: mend or delete them by hand.")

    app.cli.add_command(convert_batch_command)
    app.cli.add_command(relabel_command)


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(str(exc)) from None
    app = create_app(settings)
    port = int(os.environ.get("PORT", settings.port))
    plain_dev_server_lines()
    app.run(host=settings.host, port=port, threaded=True)


if __name__ == "__main__":
    main()
