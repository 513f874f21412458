"""Shared fixtures: apps built with injected Settings and real backends (local disk, emulator)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import WSGIRequestHandler, make_server

from cloud_image_app import create_app
from imaging.config import Settings
from imaging.labeling import Labeler
from imaging.storage import ObjectStore
from imaging.storage.local import LocalStore
from tests.uploads import UploadActions

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

pytest_plugins = [
    "tests.gcs_emulator",
    "tests.vision_server",
    "tests.gemini_server",
    "tests.browser",
    "tests.oidc_issuer",
    "tests.tasks_server",
]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX conversion for the whole run: every local labeler in the suite shares it."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def settings(tmp_path: Path, model_cache: Path) -> Settings:
    return Settings(
        media_root=tmp_path / "media",
        model_cache_dir=model_cache,
        labeler="none",
        secret_key="test-secret",
        conversion_wait=5.0,
        testing=True,
    ).validated()


@pytest.fixture(params=["local", "gcs"])
def store(request: pytest.FixtureRequest, settings: Settings) -> ObjectStore:
    """Each app test runs on LocalStore and on GCSStore against the emulator."""
    if request.param == "local":
        return LocalStore(settings.media_root)
    bucket = request.getfixturevalue("gcs_bucket")
    make: Callable[[str], ObjectStore] = request.getfixturevalue("make_gcs_store")
    return make(bucket)


@pytest.fixture
def local_store(settings: Settings) -> LocalStore:
    return LocalStore(settings.media_root)


AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(settings: Settings, local_store: LocalStore) -> AppFactory:
    """Build an app: keyword arguments are Settings fields (``make_app(max_upload_mb=1)``,
    ``labeler="local"`` sets LABELER); the two objects to inject instead of building them are
    ``storage=`` (an ObjectStore) and ``labeler_impl=`` (a Labeler), named apart from the setting.
    """

    def build(
        *,
        storage: ObjectStore | None = None,
        labeler_impl: Labeler | None = None,
        **changes: Any,
    ) -> Flask:
        return create_app(
            settings.replace(**changes) if changes else settings,
            storage=storage if storage is not None else local_store,
            labeler=labeler_impl,
        )

    return build


@pytest.fixture
def app(make_app: AppFactory, store: ObjectStore) -> Flask:
    return make_app(storage=store)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def uploads(client: FlaskClient) -> UploadActions:
    """Uploads through ``client`` (on both storage backends): ``uploads.ok(data, "a.png")``."""
    return UploadActions(client)


@pytest.fixture
def local_client(make_app: AppFactory) -> FlaskClient:
    """An app on LocalStore only, for tests that are not about the storage backend."""
    return make_app().test_client()


@dataclass
class LiveServer:
    url: str
    app: Flask


#: Where ``closing_dropped_responses`` keeps the app's response, for ``ClosingHandler``.
_RESPONSE = "tests.conftest.response"


def closing_dropped_responses(app: WSGIApplication) -> WSGIApplication:
    """``app``, its response kept in the request's environ for ``ClosingHandler``."""

    def wsgi(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ[_RESPONSE] = body = app(environ, start_response)
        return body

    return wsgi


class ClosingHandler(WSGIRequestHandler):
    """werkzeug's dev-server handler, closing a response the client dropped.

    When a browser drops a connection mid-response (it navigated away, or cancelled a
    revalidation), werkzeug's handler ends the request without calling the response's
    ``close``: a static file's handle (a 200's FileWrapper, a 304's closing iterator) is left
    for the garbage collector, whose ResourceWarning ``filterwarnings = error`` turns into a
    failed test that has nothing to do with the app. ``connection_dropped`` is werkzeug's hook
    for that moment, and gets the request's environ.
    """

    def connection_dropped(
        self, error: BaseException, environ: WSGIEnvironment | None = None
    ) -> None:
        body = environ.pop(_RESPONSE, None) if environ is not None else None
        close = getattr(body, "close", None)
        if close is not None:
            close()


@pytest.fixture
def serve() -> Iterator[Callable[[Flask], LiveServer]]:
    """Serve an app over real HTTP on 127.0.0.1 (threaded werkzeug) for browser/HTTP tests."""
    servers: list[Any] = []

    def start(app: Flask) -> LiveServer:
        server = make_server(
            "127.0.0.1",
            0,
            closing_dropped_responses(app),
            threaded=True,
            request_handler=ClosingHandler,
        )
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append(server)
        return LiveServer(f"http://127.0.0.1:{server.server_port}", app)

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture
def live_server(make_app: AppFactory, serve: Callable[[Flask], LiveServer]) -> LiveServer:
    """The app as a newcomer runs it: local storage, the real local labeler, over HTTP."""
    return serve(make_app(labeler="local"))
