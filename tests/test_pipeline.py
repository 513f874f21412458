"""pipeline.ingest: the one path every upload takes, and what it leaves behind when things fail.

The first part calls ``Pipeline.ingest`` directly, on a LocalStore in a temporary directory, with
no Flask app at all; the second proves the same through the HTTP doors, on both backends.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from imaging.catalog import Catalog, new_id
from imaging.config import Settings
from imaging.errors import BadRequest, Busy, ObjectNotFound, StorageUnavailable
from imaging.labeling import Label, Labeler, LabelerUnavailable, LabelResult, NullLabeler
from imaging.pipeline import FIT_MODES, Pipeline, UploadOptions, parse_fit
from imaging.processing import LabelImage
from imaging.storage import ObjectStore
from imaging.storage.local import LocalStore
from tests import images
from tests.conftest import AppFactory
from tests.faults import FlakyStore
from tests.uploads import post_image


def post(client: FlaskClient, data: bytes, **fields: Any) -> tuple[int, dict[str, object]]:
    response = post_image(client, data, "x.jpg", **fields)
    return response.status_code, response.get_json()


def all_keys(store: ObjectStore) -> list[str]:
    return [
        k for prefix in ("img/", "rec/", "lbl/", "sha/") for k in store.list(prefix, limit=1000)
    ]


WRITES_PER_UPLOAD = 5  # webp + png + thumb variants, the duplicate-index marker, the record
WEBP_AND_PNG = UploadOptions(formats=("webp", "png"), name="x.jpg")


class RaisingLabeler:
    name = "broken"

    def label(self, image: LabelImage) -> LabelResult:
        raise LabelerUnavailable("quota exceeded")

    def check(self) -> None:
        raise LabelerUnavailable("down")


class HangingLabeler:
    name = "hanging"

    def __init__(self) -> None:
        self.release = threading.Event()

    def label(self, image: LabelImage) -> LabelResult:
        self.release.wait(10)
        return LabelResult()

    def check(self) -> None:
        return None


class CatLabeler:
    """Finds a cat in everything, and SafeSearch finds it racy when ``racy`` says so."""

    name = "cat"

    def __init__(self, *, racy: str = "VERY_UNLIKELY") -> None:
        self.racy = racy
        self.seen: list[LabelImage] = []

    def label(self, image: LabelImage) -> LabelResult:
        self.seen.append(image)
        return LabelResult((Label("Cat", 0.9, self.name),), {"racy": self.racy})

    def check(self) -> None:
        return None


# -- Pipeline.ingest, without Flask ------------------------------------------------------------


@pytest.fixture
def disk(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "pipeline-media")


def make_pipeline(
    settings: Settings, store: ObjectStore, labeler: Labeler | None = None, **changes: Any
) -> Pipeline:
    return Pipeline(
        settings.replace(**changes) if changes else settings,
        store,
        labeler or NullLabeler(),
        Catalog(store),
    )


def test_ingest_commits_a_record_whose_variants_are_readable(
    settings: Settings, disk: LocalStore
) -> None:
    result = make_pipeline(settings, disk).ingest(images.jpeg(64, 48), WEBP_AND_PNG)

    record = result.record
    assert Catalog(disk).get(record.id) == record
    assert [v.name for v in record.variants] == ["webp", "png"]
    assert (record.source_format, record.width, record.height) == ("jpeg", 64, 48)
    assert record.name == "x.jpg"
    for variant in record.files():
        data, content_type = disk.read_for_serving(variant.key)
        assert data == result.renditions[variant.name].data
        assert content_type == variant.content_type
    assert images.open_image(disk.get(record.thumbnail.key)).format == "WEBP"
    assert result.delete_key is not None
    assert record.accepts_delete_key(result.delete_key)
    assert result.duplicate is False


def test_the_record_receipt_tells_the_source_and_every_variants_size(
    settings: Settings, disk: LocalStore
) -> None:
    data = images.jpeg(64, 48)
    record = make_pipeline(settings, disk).ingest(data, WEBP_AND_PNG).record

    assert record.receipt["source_format"] == "jpeg"
    assert (record.receipt["source_width"], record.receipt["source_height"]) == (64, 48)
    assert record.receipt["source_bytes"] == len(data) == record.bytes
    assert record.receipt["bytes"] == {v.name: v.bytes for v in record.files()}
    assert record.receipt["frames_kept"] == 1


@pytest.mark.parametrize(("effort", "method"), [("fast", 2), ("smallest", 4)])
def test_encoder_effort_sets_the_variants_effort_and_the_thumbnail_stays_fast(
    settings: Settings, disk: LocalStore, effort: str, method: int
) -> None:
    source = images.noise(64, 48)
    pipeline = make_pipeline(settings, disk, encoder_effort=effort)
    result = pipeline.ingest(images.encode(source, "PNG"), UploadOptions(formats=("webp",)))

    expected = images.encode(source, "WEBP", quality=80, method=method)
    assert result.renditions["webp"].data == expected
    assert result.renditions["thumb"].data == images.encode(source, "WEBP", quality=80, method=2)


def test_the_thumbnail_is_never_smaller_than_its_box_because_the_output_is(
    settings: Settings, disk: LocalStore
) -> None:
    options = UploadOptions(formats=("webp",), width=200)
    result = make_pipeline(settings, disk).ingest(images.jpeg(1000, 800), options)

    assert (result.renditions["webp"].width, result.renditions["webp"].height) == (200, 160)
    assert (result.renditions["thumb"].width, result.renditions["thumb"].height) == (480, 384)


def test_the_same_bytes_with_the_same_options_give_the_same_record(
    settings: Settings, disk: LocalStore
) -> None:
    flaky = FlakyStore(disk)
    pipeline = make_pipeline(settings, flaky)
    first = pipeline.ingest(images.jpeg(), WEBP_AND_PNG)
    writes = flaky.puts

    again = pipeline.ingest(images.jpeg(), UploadOptions(formats=("webp", "png"), name="y.jpg"))

    assert again.duplicate is True
    assert again.record == first.record
    assert again.delete_key is None
    assert flaky.puts == writes == WRITES_PER_UPLOAD


def test_other_options_on_the_same_bytes_make_a_new_record(
    settings: Settings, disk: LocalStore
) -> None:
    pipeline = make_pipeline(settings, disk)
    first = pipeline.ingest(images.jpeg(), WEBP_AND_PNG)

    other = pipeline.ingest(images.jpeg(), UploadOptions(formats=("webp",), width=20))

    assert other.duplicate is False
    assert other.record.id != first.record.id


@pytest.mark.parametrize("failing_write", range(1, WRITES_PER_UPLOAD + 1))
def test_a_storage_failure_on_any_write_leaves_nothing(
    settings: Settings, disk: LocalStore, failing_write: int
) -> None:
    flaky = FlakyStore(disk, fail_on=failing_write)

    with pytest.raises(StorageUnavailable):
        make_pipeline(settings, flaky).ingest(images.jpeg(), WEBP_AND_PNG)

    assert flaky.puts >= failing_write
    assert all_keys(disk) == []


class BrokenDisk(LocalStore):
    """A store whose writes fail with a raw OSError, as a buggy backend might."""

    def put(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        raise OSError("disk on fire")


def test_a_raw_storage_exception_becomes_storage_unavailable(
    settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(StorageUnavailable, match="nothing was saved") as caught:
        make_pipeline(settings, BrokenDisk(tmp_path / "broken")).ingest(images.jpeg(), WEBP_AND_PNG)

    assert caught.value.detail == "OSError: disk on fire"


def test_a_failing_labeler_keeps_the_upload_with_label_status_error(
    settings: Settings, disk: LocalStore
) -> None:
    record = make_pipeline(settings, disk, RaisingLabeler()).ingest(images.jpeg(), WEBP_AND_PNG)

    assert record.record.label_status == "error"
    assert record.record.labels == ()
    assert Catalog(disk).get(record.record.id) == record.record


def test_labels_come_from_the_small_copy_and_enter_the_label_index(
    settings: Settings, disk: LocalStore
) -> None:
    labeler = CatLabeler()
    record = (
        make_pipeline(settings, disk, labeler).ingest(images.jpeg(900, 600), WEBP_AND_PNG).record
    )

    assert record.label_status == "ok"
    assert [label.description for label in record.labels] == ["Cat"]
    assert Catalog(disk).page(label="cat").records == [record]
    (copy,) = labeler.seen
    assert max(images.open_image(copy.jpeg()).size) <= settings.presets["label"].width
    assert len(copy.square_rgb(224)) == 224 * 224 * 3


def test_safe_search_holds_back_what_reaches_the_threshold(
    settings: Settings, disk: LocalStore
) -> None:
    pipeline = make_pipeline(settings, disk, CatLabeler(racy="LIKELY"), safe_search_hide="LIKELY")

    record = pipeline.ingest(images.jpeg(), WEBP_AND_PNG).record

    assert record.hidden is True
    assert Catalog(disk).page().records == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (UploadOptions(formats=()), "Ask for at least one output format."),
        (
            UploadOptions(formats=("webp",), fit="sideways"),
            "fit must be one of: contain, cover, fill.",
        ),
    ],
    ids=["no-format", "unknown-fit"],
)
def test_bad_options_are_a_bad_request_and_write_nothing(
    settings: Settings, disk: LocalStore, options: UploadOptions, message: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        make_pipeline(settings, disk).ingest(images.jpeg(), options)

    assert caught.value.public_message == message
    assert all_keys(disk) == []


@pytest.mark.parametrize(("raw", "fit"), [(None, "contain"), ("", "contain"), (" COVER ", "cover")])
def test_parse_fit_reads_a_fit_mode_in_any_case(raw: str | None, fit: str) -> None:
    assert parse_fit(raw) == fit
    assert fit in FIT_MODES


def test_parse_fit_refuses_anything_else_with_the_modes_listed() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_fit("stretch")
    assert caught.value.public_message == "fit must be one of: contain, cover, fill."


def test_an_upload_waits_for_a_conversion_slot_then_is_refused_busy(
    settings: Settings, disk: LocalStore
) -> None:
    pipeline = make_pipeline(settings, disk, conversion_slots=1, conversion_wait=0.1)

    with pipeline.conversion_slot():  # another upload holds the only slot
        started = time.monotonic()
        with pytest.raises(Busy) as caught:
            pipeline.ingest(images.jpeg(), WEBP_AND_PNG)
        waited = time.monotonic() - started

    assert caught.value.retry_after
    assert waited >= 0.1
    assert all_keys(disk) == []
    assert pipeline.ingest(images.jpeg(), WEBP_AND_PNG).record  # the slot is free again


# -- through the HTTP doors --------------------------------------------------------------------


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


def test_labeler_failure_keeps_the_upload_with_label_status_error(make_app: AppFactory) -> None:
    client = make_app(labeler_impl=RaisingLabeler()).test_client()
    status, body = post(client, images.jpeg())
    assert status == 201
    assert body["label_status"] == "error"
    assert body["labels"] == []


def test_hanging_labeler_is_abandoned_after_the_label_timeout(make_app: AppFactory) -> None:
    labeler = HangingLabeler()
    client = make_app(labeler_impl=labeler, label_timeout=0.5).test_client()
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
    with app.extensions["imaging"].pipeline.conversion_slot():  # another request holds it
        response = app.test_client().post(
            "/api/images",
            data={"image": (io.BytesIO(images.jpeg()), "x.jpg")},
            content_type="multipart/form-data",
        )
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


def test_a_full_disk_at_the_records_sidecar_leaves_no_record_behind_the_503(
    make_app: AppFactory, local_store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exact amount of free space that let rec/<id>.json link and its sidecar fail."""
    write = local_store._replace

    def full_at_the_record(path: Path, data: bytes) -> None:
        if "/rec/" in str(path):
            raise OSError(28, "No space left on device")
        write(path, data)

    monkeypatch.setattr(local_store, "_replace", full_at_the_record)
    client = make_app(storage=local_store).test_client()
    status, body = post(client, images.jpeg(), format="webp")
    assert status == 503
    assert body["error"] == "storage_unavailable"
    assert local_store.list("rec/") == []
    assert all_keys(local_store) == []
    assert client.get("/api/images").get_json()["images"] == []


# -- Memory --------------------------------------------------------------------------------

_PEAK_CHILD = """
import json, sys, tempfile
from pathlib import Path
from imaging.catalog import Catalog
from imaging.config import Settings
from imaging.labeling import NullLabeler
from imaging.pipeline import Pipeline, UploadOptions
from imaging.storage.local import LocalStore
from tests import images

def status_kb(field):
    # VmHWM, not ru_maxrss: the latter keeps the pytest process's size across fork and exec.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError("no " + field)

data = Path(sys.argv[1]).read_bytes()
with tempfile.TemporaryDirectory() as tmp:
    settings = Settings(media_root=Path(tmp), labeler="none")
    store = LocalStore(Path(tmp))
    pipeline = Pipeline(settings, store, NullLabeler(), Catalog(store))
    pipeline.ingest(images.large_jpeg(800, 600), UploadOptions(formats=("webp",)))  # warm-up
    before = status_kb("VmRSS")
    result = pipeline.ingest(data, UploadOptions(formats=("webp",)))
    peak = status_kb("VmHWM")
    size = (result.renditions["webp"].width, result.renditions["webp"].height)
print(json.dumps({"growth_mb": (peak - before) / 1024, "size": size}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_a_48_megapixel_jpeg_with_no_width_costs_at_most_300_mb_at_its_peak(
    tmp_path: Path,
) -> None:
    # 8000x6000: 1/2 DCT scale (4000 px) falls just under MAX_OUTPUT_SIDE (4096); decoding at
    # full size instead would cost 192 MB for the pixels alone, before any resampling.
    source = tmp_path / "48mp.jpg"
    source.write_bytes(images.large_jpeg(8000, 6000))
    repo = Path(__file__).resolve().parents[1]
    child = subprocess.run(
        [sys.executable, "-c", _PEAK_CHILD, str(source)],
        check=True,
        capture_output=True,
        text=True,
        cwd=repo,
    )
    report = json.loads(child.stdout)
    assert report["size"] == [4096, 3072]
    assert report["growth_mb"] <= 300, report
