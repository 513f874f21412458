"""build_services: the one place the app and its CLI commands get their objects."""

from __future__ import annotations

import ast
import socket
from pathlib import Path
from typing import Any

import pytest

from imaging.config import Settings
from imaging.doors.convert import Conversion
from imaging.services import Services, build_services, services_of
from imaging.storage.local import LocalStore
from imaging.web import services as web_services
from tests import images
from tests.conftest import AppFactory

IMAGING = Path(__file__).resolve().parents[1] / "imaging"
BLUEPRINTS = ("admin", "api", "deliveries", "media", "ops", "pages", "uploads")
AUDIENCE = "https://images.example.run.app"
EVENTS = {
    "events_audience": AUDIENCE,
    "events_service_account": "eventarc-push@demo-project.iam.gserviceaccount.com",
    "uploads_bucket": "uploads",
}
TASKS = {
    "tasks_queue": "projects/demo-project/locations/europe-west1/queues/convert",
    "tasks_service_account": "tasks-invoker@demo-project.iam.gserviceaccount.com",
}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt (a client made eagerly, a metadata-server lookup) fails loudly."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network used while building services: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_the_event_door_and_the_cli_share_one_converter(
    settings: Settings, local_store: LocalStore
) -> None:
    svc = build_services(settings.replace(**EVENTS), store=local_store)

    assert svc.events is not None
    assert svc.events.converter is svc.converter
    assert svc.converter.pipeline is svc.pipeline
    assert svc.converter.ledger.store is svc.store
    assert svc.uploads.store is svc.store


def test_without_an_audience_there_is_no_event_door(
    settings: Settings, local_store: LocalStore
) -> None:
    assert build_services(settings, store=local_store).events is None


def test_a_task_queue_is_built_only_when_one_is_configured(
    settings: Settings, local_store: LocalStore
) -> None:
    without = build_services(settings.replace(**EVENTS), store=local_store)
    queued = build_services(settings.replace(**EVENTS, **TASKS), store=local_store)

    assert without.events is not None
    assert without.events.queue is None
    assert queued.events is not None
    assert queued.events.queue is not None
    assert queued.events.queue.target_url == AUDIENCE + "/tasks/convert"


@pytest.mark.usefixtures("no_network")
def test_building_every_service_touches_no_network(settings: Settings) -> None:
    production_like = settings.replace(
        storage_backend="gcs",
        gcs_bucket="images",
        gcs_public_bucket="images-public",
        **EVENTS,
        **TASKS,
    )

    svc = build_services(production_like)

    assert svc.events is not None
    assert svc.events.queue is not None


def test_blueprints_read_the_services_the_app_built(make_app: AppFactory) -> None:
    app = make_app()

    svc = services_of(app)

    assert isinstance(svc, Services)
    with app.test_request_context("/"):
        assert web_services() is svc


# -- the CLI commands use the app's services --------------------------------------------------
def test_convert_batch_converts_through_the_apps_converter(
    make_app: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    converter = services_of(app).converter
    seen: list[Path] = []
    convert_file = converter.convert_file

    def spy(path: Path, formats: tuple[str, ...] | None = None) -> Conversion:
        seen.append(path)
        return convert_file(path, formats)

    monkeypatch.setattr(converter, "convert_file", spy)
    (tmp_path / "a.png").write_bytes(images.png())

    result = app.test_cli_runner().invoke(args=["convert-batch", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert seen == [tmp_path / "a.png"]
    assert result.stdout.strip().splitlines()[-1] == "converted 1, skipped 0, refused 0"


def test_gc_sweeps_the_apps_catalog(make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app()
    calls: list[int] = []

    def sweep(*, grace_seconds: int, now: float) -> list[str]:
        calls.append(grace_seconds)
        return ["img/orphan/webp.webp"]

    monkeypatch.setattr(services_of(app).catalog, "sweep", sweep)

    result = app.test_cli_runner().invoke(args=["gc", "--grace", "7"])

    assert result.exit_code == 0, result.output
    assert calls == [7]
    assert "removed img/orphan/webp.webp" in result.output


def test_uploads_sweep_sweeps_the_apps_upload_sessions(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    monkeypatch.setattr(services_of(app).uploads, "sweep", lambda: ["tmp/expired"])

    result = app.test_cli_runner().invoke(args=["uploads", "sweep"])

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "removed tmp/expired",
        "1 expired direct-upload object(s) removed.",
    ]


# -- who may import whom ------------------------------------------------------------------------
def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("path", sorted((IMAGING / "doors").glob("*.py")), ids=lambda p: p.name)
def test_the_doors_never_import_the_web_layer(path: Path) -> None:
    web = {m for m in imported_modules(path) if m == "imaging.web" or m.startswith("imaging.web.")}

    assert web == set()


@pytest.mark.parametrize("name", BLUEPRINTS)
def test_a_blueprint_never_imports_another(name: str) -> None:
    others = {f"imaging.web.{other}" for other in BLUEPRINTS if other != name}

    assert imported_modules(IMAGING / "web" / f"{name}.py") & others == set()
