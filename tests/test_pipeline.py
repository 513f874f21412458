"""pipeline.ingest: the one path every upload takes, and what it leaves behind when things fail."""

from __future__ import annotations

import io
import threading
import time

import pytest
from flask.testing import FlaskClient

from imaging.catalog import Catalog, new_id
from imaging.errors import ObjectNotFound
from imaging.labeling import LabelerUnavailable, LabelResult
from imaging.storage import ObjectStore
from tests import images
from tests.conftest import AppFactory
from tests.faults import FlakyStore


def post(client: FlaskClient, data: bytes, **fields: str) -> tuple[int, dict[str, object]]:
    response = client.post(
        "/api/images",
        data={"image": (io.BytesIO(data), "x.jpg"), **fields},
        content_type="multipart/form-data",
    )
    return response.status_code, response.get_json()


def all_keys(store: ObjectStore) -> list[str]:
    return [
        k for prefix in ("img/", "rec/", "lbl/", "sha/") for k in store.list(prefix, limit=1000)
    ]


WRITES_PER_UPLOAD = 5  # webp + png + thumb variants, the duplicate-index marker, the record


@pytest.mark.parametrize("failing_write", range(1, WRITES_PER_UPLOAD + 1))
def test_storage_failing_on_any_write_gives_503_and_leaves_nothing(
    make_app: AppFactory, store: ObjectStore, failing_write: int
) -> None:
    flaky = FlakyStore(store, fail_on=failing_write)
    client = make_app(storage=flaky).test_client()
    status, body = post(client, images.jpeg(), format="webp,png")
    assert status == 503
    assert body["error"] == "storage_unavailable"
    assert flaky.puts >= failing_write
    assert all_keys(store) == []
    assert client.get("/api/images").get_json()["images"] == []


def test_an_upload_makes_exactly_the_counted_writes(
    make_app: AppFactory, store: ObjectStore
) -> None:
    flaky = FlakyStore(store)
    status, _ = post(make_app(storage=flaky).test_client(), images.jpeg(), format="webp,png")
    assert status == 201
    assert flaky.puts == WRITES_PER_UPLOAD


def test_storage_down_gives_503_with_retry_after(make_app: AppFactory, store: ObjectStore) -> None:
    flaky = FlakyStore(store)
    flaky.down = True
    client = make_app(storage=flaky).test_client()
    response = client.post(
        "/api/images",
        data={"image": (io.BytesIO(images.jpeg()), "x.jpg")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "Traceback" not in response.get_data(as_text=True)


class RaisingLabeler:
    name = "broken"

    def label(self, image: bytes) -> LabelResult:
        raise LabelerUnavailable("quota exceeded")

    def check(self) -> None:
        raise LabelerUnavailable("down")


class HangingLabeler:
    name = "hanging"

    def __init__(self) -> None:
        self.release = threading.Event()

    def label(self, image: bytes) -> LabelResult:
        self.release.wait(10)
        return LabelResult()

    def check(self) -> None:
        return None


def test_labeler_failure_keeps_the_upload_with_label_status_error(make_app: AppFactory) -> None:
    client = make_app(labeler_backend=RaisingLabeler()).test_client()
    status, body = post(client, images.jpeg())
    assert status == 201
    assert body["label_status"] == "error"
    assert body["labels"] == []


def test_hanging_labeler_is_abandoned_after_the_label_timeout(make_app: AppFactory) -> None:
    labeler = HangingLabeler()
    client = make_app(labeler_backend=labeler, label_timeout=0.5).test_client()
    try:
        started = time.monotonic()
        status, body = post(client, images.jpeg())
        elapsed = time.monotonic() - started
    finally:
        labeler.release.set()
    assert status == 201
    assert body["label_status"] == "error"
    assert elapsed < 10  # bounded by the label timeout, not by the labeler


def test_busy_conversion_slots_give_503_with_retry_after(make_app: AppFactory) -> None:
    app = make_app(conversion_slots=1, conversion_wait=0.1)
    slots = app.extensions["imaging"].pipeline._slots
    slots.acquire()  # another request holds the only slot
    try:
        response = app.test_client().post(
            "/api/images",
            data={"image": (io.BytesIO(images.jpeg()), "x.jpg")},
            content_type="multipart/form-data",
        )
    finally:
        slots.release()
    assert response.status_code == 503
    assert response.get_json()["error"] == "busy"
    assert response.headers["Retry-After"]


def test_sweep_removes_old_orphans_and_keeps_young_ones_and_records(store: ObjectStore) -> None:
    catalog = Catalog(store)
    old, young = new_id(time.time() - 7200), new_id()
    for image_id in (old, young):
        store.put(f"img/{image_id}/webp.webp", b"x", content_type="image/webp")
        store.put(f"lbl/cat/{image_id}", b"", content_type="application/octet-stream")
    removed = catalog.sweep(grace_seconds=3600)
    assert sorted(removed) == sorted([f"img/{old}/webp.webp", f"lbl/cat/{old}"])
    assert store.get(f"img/{young}/webp.webp") == b"x"
    with pytest.raises(ObjectNotFound):
        store.get(f"img/{old}/webp.webp")


def test_sweep_keeps_everything_a_record_owns(client: FlaskClient, store: ObjectStore) -> None:
    post(client, images.jpeg())
    before = all_keys(store)
    assert Catalog(store).sweep(grace_seconds=0, now=time.time() + 10**6) == []
    assert all_keys(store) == before


def test_gc_command_reports_what_it_removed(make_app: AppFactory, store: ObjectStore) -> None:
    app = make_app(storage=store)
    orphan = new_id(time.time() - 7200)
    store.put(f"img/{orphan}/webp.webp", b"x", content_type="image/webp")
    result = app.test_cli_runner().invoke(args=["gc", "--grace", "60"])
    assert result.exit_code == 0
    assert f"removed img/{orphan}/webp.webp" in result.output
    assert "1 orphaned object(s) removed" in result.output
