"""Batch conversion: ``flask convert-batch``, the Cloud Tasks handler, and the fan-out parts.

Originals live in their own emulator bucket (or a local directory); the app's catalog in
another bucket. The command's last line is its summary, ``converted N, skipped N, refused N``,
after one ``refused <file>: <code>: <reason>`` line per refused file.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient

from imaging.doors.convert import WorkerPool
from imaging.doors.sources import ObjectRef
from imaging.doors.tasks import TaskQueue, task_id
from imaging.errors import Busy
from imaging.storage import ObjectStore
from tests import images
from tests.conftest import AppFactory
from tests.gcs_emulator import (
    GCSEmulator,
    create_store_buckets,
    make_gcs_store,
    new_bucket_name,
    public_bucket_of,
)
from tests.oidc_issuer import OidcIssuer
from tests.tasks_server import TasksServer
from tests.test_events import (
    AUDIENCE,
    PUSHER,
    QUEUE,
    TASKER,
    pubsub_push,
    put_original,
    records,
)
from tests.test_events import app_store as app_store
from tests.test_events import events_app as events_app
from tests.test_events import uploads_bucket as uploads_bucket

TEXT = b"shopping list: milk, eggs\n"


def truncated_png() -> bytes:
    """A PNG cut off halfway through its pixel data: the header still reads, the pixels do not."""
    data = images.png(256, 256)
    return data[: len(data) // 2]


@pytest.fixture
def app(make_app: AppFactory, app_store: ObjectStore, gcs_bucket: str) -> Flask:
    return make_app(
        storage=app_store, gcs_bucket=gcs_bucket, gcs_public_bucket=public_bucket_of(gcs_bucket)
    )


def convert_batch(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["convert-batch", *args])


def report(result: Result) -> list[str]:
    """The command's stdout lines: one per refused file, then the summary."""
    return result.stdout.strip().splitlines()


@pytest.fixture
def mixed_prefix(uploads_bucket: str) -> str:
    """Two good images and two bad files under camera/, and one good image elsewhere."""
    put_original(uploads_bucket, "camera/IMG_0001.jpg", images.jpeg())
    put_original(uploads_bucket, "camera/IMG_0002.png", images.png(48, 32))
    put_original(uploads_bucket, "camera/notes.txt", TEXT)
    put_original(uploads_bucket, "camera/broken.png", truncated_png())
    put_original(uploads_bucket, "other/IMG_0003.jpg", images.jpeg(32, 32))
    return f"gs://{uploads_bucket}/camera/"


# -- convert-batch over a bucket prefix ------------------------------------------------------
def test_a_prefix_backfill_reports_what_happened_to_each_file(
    app: Flask, app_store: ObjectStore, mixed_prefix: str, uploads_bucket: str
) -> None:
    result = convert_batch(app, mixed_prefix, "--formats", "webp")

    assert result.exit_code == 0, result.output
    lines = report(result)
    assert lines[-1] == "converted 2, skipped 0, refused 2"
    refused = lines[:-1]
    assert [line.split(": ")[0] for line in refused] == [
        f"refused gs://{uploads_bucket}/camera/broken.png",
        f"refused gs://{uploads_bucket}/camera/notes.txt",
    ]
    assert all(": unsupported_format: " in line for line in refused)
    assert len(records(app_store)) == 2


def test_a_second_run_skips_everything(
    app: Flask, app_store: ObjectStore, mixed_prefix: str
) -> None:
    convert_batch(app, mixed_prefix)

    again = convert_batch(app, mixed_prefix)

    assert again.exit_code == 0, again.output
    assert report(again) == [
        "(2 of the skipped were refused by an earlier run; --retry-refused tries them again)",
        "converted 0, skipped 4, refused 0",
    ]
    assert len(records(app_store)) == 2


def test_retry_refused_tries_the_refused_files_again(app: Flask, mixed_prefix: str) -> None:
    convert_batch(app, mixed_prefix)

    again = convert_batch(app, mixed_prefix, "--retry-refused")

    assert report(again)[-1] == "converted 0, skipped 2, refused 2"


def test_the_formats_option_decides_the_variants(
    app: Flask, mixed_prefix: str, app_store: ObjectStore
) -> None:
    convert_batch(app, mixed_prefix, "--formats", "webp,avif")

    record_id = records(app_store)[0][len("rec/") : -len(".json")]
    shown = app.test_client().get(f"/api/images/{record_id}").get_json()
    assert [v["format"] for v in shown["variants"]] == ["webp", "avif"]


def test_without_the_option_each_objects_formats_metadata_decides(
    app: Flask, uploads_bucket: str, app_store: ObjectStore
) -> None:
    put_original(uploads_bucket, "in/a.png", images.png(), metadata={"formats": "jpeg"})

    convert_batch(app, f"gs://{uploads_bucket}/in/")

    record_id = records(app_store)[0][len("rec/") : -len(".json")]
    shown = app.test_client().get(f"/api/images/{record_id}").get_json()
    assert [v["format"] for v in shown["variants"]] == ["jpeg"]


def test_an_object_a_storage_event_converted_is_skipped(
    make_app: AppFactory,
    app: Flask,
    app_store: ObjectStore,
    gcs_bucket: str,
    uploads_bucket: str,
    oidc_issuer: OidcIssuer,
) -> None:
    _, resource = put_original(uploads_bucket, "in/a.jpg", images.jpeg())
    events = make_app(
        storage=app_store,
        gcs_bucket=gcs_bucket,
        uploads_bucket=uploads_bucket,
        events_audience=AUDIENCE,
        events_service_account=PUSHER,
        oidc_certs_url=oidc_issuer.certs_url,
    ).test_client()
    token = oidc_issuer.token(audience=AUDIENCE, email=PUSHER)
    headers, body = pubsub_push(resource)
    delivered = events.post(
        "/events/storage", data=body, headers={**headers, "Authorization": f"Bearer {token}"}
    )
    assert delivered.status_code == 201

    result = convert_batch(app, f"gs://{uploads_bucket}/in/")

    assert report(result) == ["converted 0, skipped 1, refused 0"]


def test_the_apps_own_objects_are_never_backfilled(
    app: Flask, gcs_bucket: str, app_store: ObjectStore
) -> None:
    uploaded = app.test_client().post(
        "/api/images", data={"image": (io.BytesIO(images.jpeg()), "a.jpg")}
    )
    assert uploaded.status_code == 201

    result = convert_batch(app, f"gs://{gcs_bucket}/")

    assert report(result) == ["converted 0, skipped 0, refused 0"]
    assert len(records(app_store)) == 1


def test_a_backfill_of_the_public_bucket_converts_none_of_its_variants(
    app: Flask, gcs_bucket: str, app_store: ObjectStore
) -> None:
    """Everything in the public bucket is a variant the app wrote: converting it would loop."""
    uploaded = app.test_client().post(
        "/api/images", data={"image": (io.BytesIO(images.jpeg()), "a.jpg")}
    )
    assert uploaded.status_code == 201
    put_original(public_bucket_of(gcs_bucket), "holiday.jpg", images.jpeg(32, 32))

    result = convert_batch(app, f"gs://{public_bucket_of(gcs_bucket)}/")

    assert report(result) == ["converted 0, skipped 0, refused 0"]
    assert len(records(app_store)) == 1


def test_an_unreadable_source_bucket_stops_with_a_non_zero_exit(
    make_app: AppFactory, private_gcs_emulator: GCSEmulator, tmp_path: Path
) -> None:
    bucket = new_bucket_name()
    create_store_buckets(private_gcs_emulator, bucket)
    app = make_app(storage=make_gcs_store(bucket, timeout=1.0, deadline=2.0))
    (tmp_path / "a.jpg").write_bytes(images.jpeg())
    private_gcs_emulator.stop()

    result = convert_batch(app, str(tmp_path))

    assert result.exit_code == 1
    assert "stopped:" in result.output
    assert report(result)[-1] == "converted 0, skipped 0, refused 0"


# -- convert-batch over a local directory ----------------------------------------------------
@pytest.fixture
def mixed_directory(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "2019").mkdir(parents=True)
    (root / "2019" / "beach.jpg").write_bytes(images.jpeg())
    (root / "cat.png").write_bytes(images.png(40, 30))
    (root / "README.txt").write_bytes(TEXT)
    (root / "2019" / "broken.png").write_bytes(truncated_png())
    return root


def test_a_directory_backfill_reports_what_happened_to_each_file(
    app: Flask, mixed_directory: Path, app_store: ObjectStore
) -> None:
    result = convert_batch(app, str(mixed_directory), "--formats", "webp")

    assert result.exit_code == 0, result.output
    lines = report(result)
    assert [line.split(": ")[0] for line in lines[:-1]] == [
        "refused 2019/broken.png",
        "refused README.txt",
    ]
    assert lines[-1] == "converted 2, skipped 0, refused 2"
    assert len(records(app_store)) == 2


def test_a_second_directory_run_skips_what_was_converted(
    app: Flask, mixed_directory: Path, app_store: ObjectStore
) -> None:
    convert_batch(app, str(mixed_directory))

    again = convert_batch(app, str(mixed_directory))

    # Refused files have no ledger entry on a plain disk: they are checked (cheaply) again.
    assert report(again)[-1] == "converted 0, skipped 2, refused 2"
    assert len(records(app_store)) == 2


@pytest.mark.parametrize(
    "args",
    [["/no/such/directory"], ["gs://"], ["{here}", "--formats", "bmp"]],
    ids=["missing-dir", "no-bucket", "unknown-format"],
)
def test_a_bad_argument_is_a_usage_error(app: Flask, tmp_path: Path, args: list[str]) -> None:
    result = convert_batch(app, *(a.format(here=tmp_path) for a in args))

    assert result.exit_code == 2


# -- the Cloud Tasks handler -----------------------------------------------------------------
@pytest.fixture
def task_app(events_app: Callable[..., Flask]) -> Callable[..., FlaskClient]:
    """The events app with a Cloud Tasks queue configured."""

    def build(**changes: Any) -> FlaskClient:
        settings: dict[str, Any] = {
            "tasks_queue": QUEUE,
            "tasks_service_account": TASKER,
            "tasks_api_endpoint": "http://127.0.0.1:9",  # never called by the handler
            **changes,
        }
        return events_app(**settings).test_client()

    return build


def run_task(client: FlaskClient, body: Any, token: str) -> tuple[int, dict[str, Any]]:
    response = client.post(
        "/tasks/convert", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    return response.status_code, response.get_json(silent=True) or {}


def test_a_task_converts_its_object_and_a_retry_returns_the_same_record(
    task_app: Callable[..., FlaskClient],
    uploads_bucket: str,
    app_store: ObjectStore,
    oidc_issuer: OidcIssuer,
) -> None:
    client = task_app()
    ref, _ = put_original(uploads_bucket, "big/photo.jpg", images.jpeg())
    body = {"bucket": ref.bucket, "name": ref.name, "generation": ref.generation, "formats": None}
    token = oidc_issuer.token(audience=AUDIENCE, email=TASKER)

    first_status, first = run_task(client, body, token)
    again_status, again = run_task(client, body, token)

    assert (first_status, first["status"]) == (201, "converted")
    assert (again_status, again["status"]) == (200, "existing")
    assert again["record_id"] == first["record_id"]
    assert records(app_store) == [f"rec/{first['record_id']}.json"]


def test_a_tasks_formats_are_made(
    task_app: Callable[..., FlaskClient], uploads_bucket: str, oidc_issuer: OidcIssuer
) -> None:
    client = task_app()
    ref, _ = put_original(uploads_bucket, "a.png", images.png(), metadata={"formats": "webp"})
    body = {"bucket": ref.bucket, "name": ref.name, "generation": ref.generation}

    _, done = run_task(
        client, {**body, "formats": ["avif"]}, oidc_issuer.token(audience=AUDIENCE, email=TASKER)
    )

    shown = client.get(f"/api/images/{done['record_id']}").get_json()
    assert [v["format"] for v in shown["variants"]] == ["avif"]


def test_a_task_with_the_event_senders_token_is_forbidden(
    task_app: Callable[..., FlaskClient], uploads_bucket: str, oidc_issuer: OidcIssuer
) -> None:
    ref, _ = put_original(uploads_bucket, "a.jpg", images.jpeg())
    body = {"bucket": ref.bucket, "name": ref.name, "generation": ref.generation}

    status, answer = run_task(task_app(), body, oidc_issuer.token(audience=AUDIENCE, email=PUSHER))

    assert (status, answer["error"]) == (403, "forbidden")


def test_a_task_with_a_forged_token_is_unauthorized(
    task_app: Callable[..., FlaskClient], uploads_bucket: str, oidc_issuer: OidcIssuer
) -> None:
    ref, _ = put_original(uploads_bucket, "a.jpg", images.jpeg())
    body = {"bucket": ref.bucket, "name": ref.name, "generation": ref.generation}
    forged = oidc_issuer.token(audience=AUDIENCE, email=TASKER, forged=True)

    status, answer = run_task(task_app(), body, forged)

    assert (status, answer["error"]) == (401, "unauthorized")


@pytest.mark.parametrize(
    "body",
    [
        ["not", "an", "object"],
        {"bucket": "b", "name": "n"},
        {"bucket": "", "name": "n", "generation": "1"},
        {"bucket": "b", "name": "n", "generation": "1", "formats": "webp"},
    ],
    ids=["list", "no-generation", "empty-bucket", "formats-not-a-list"],
)
def test_a_malformed_task_is_a_bad_request(
    body: Any, task_app: Callable[..., FlaskClient], oidc_issuer: OidcIssuer
) -> None:
    status, answer = run_task(task_app(), body, oidc_issuer.token(audience=AUDIENCE, email=TASKER))

    assert (status, answer["error"]) == (400, "bad_request")


def test_tasks_are_off_without_a_tasks_service_account(
    task_app: Callable[..., FlaskClient], oidc_issuer: OidcIssuer
) -> None:
    client = task_app(tasks_queue="", tasks_service_account="")
    body = {"bucket": "b", "name": "n", "generation": "1"}

    status, _ = run_task(client, body, oidc_issuer.token(audience=AUDIENCE, email=TASKER))

    assert status == 404


# -- fan-out parts ---------------------------------------------------------------------------
def test_enqueue_sends_a_task_named_after_the_object_generation(
    tasks_server: TasksServer,
) -> None:
    queue = TaskQueue(
        queue=QUEUE,
        target_url=f"{AUDIENCE}/tasks/convert",
        service_account=TASKER,
        audience=AUDIENCE,
        endpoint=tasks_server.endpoint,
    )
    ref = ObjectRef("uploads", "a/b.jpg", "42")

    name = queue.enqueue(ref, ("webp", "avif"))
    again = queue.enqueue(ref, ("webp", "avif"))
    newer = queue.enqueue(ObjectRef("uploads", "a/b.jpg", "43"))

    assert name == again == f"{QUEUE}/tasks/{task_id(ref)}"
    assert newer != name
    assert sorted(tasks_server.tasks) == sorted({name, newer})
    sent = tasks_server.requests[0]
    assert (sent.url, sent.http_method, sent.headers) == (
        f"{AUDIENCE}/tasks/convert",
        "POST",
        {"Content-Type": "application/json"},
    )
    assert (sent.oidc_service_account, sent.oidc_audience) == (TASKER, AUDIENCE)
    assert sent.json_body() == {
        "bucket": "uploads",
        "name": "a/b.jpg",
        "generation": "42",
        "formats": ["webp", "avif"],
    }


def test_a_full_worker_pool_refuses_with_busy() -> None:
    pool = WorkerPool(1, backlog=0)
    gate = threading.Event()
    running = pool.submit(gate.wait, 10)

    with pytest.raises(Busy):
        pool.submit(len, "x")
    gate.set()
    assert running.result() is True
    assert pool.run(len, "abc") == 3
