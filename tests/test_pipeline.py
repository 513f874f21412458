"""pipeline.ingest: the one path every upload takes, and what it leaves behind when things fail.

The first part calls ``Pipeline.ingest`` directly, on a LocalStore in a temporary directory, with
no Flask app at all; the second proves the same through the HTTP doors, on both backends.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from PIL import Image

from imaging import processing
from imaging.catalog import Catalog, claim_body, claim_key, new_id
from imaging.config import Settings
from imaging.errors import BadRequest, Busy, ImagingError, ObjectNotFound, StorageUnavailable
from imaging.labeling import Box, Label, Labeler, LabelerUnavailable, LabelResult, NullLabeler
from imaging.pipeline import FIT_MODES, NOTHING_SAVED, Pipeline, UploadOptions, parse_fit
from imaging.processing import LabelImage
from imaging.storage import ObjectStore
from imaging.storage.gcs import GCSStore
from imaging.storage.local import LocalStore
from tests import images
from tests.conftest import AppFactory
from tests.faults import FlakyStore
from tests.gcs_emulator import GCSEmulator, create_store_buckets, make_gcs_store, new_bucket_name
from tests.uploads import post_image


def post(client: FlaskClient, data: bytes, **fields: Any) -> tuple[int, dict[str, object]]:
    response = post_image(client, data, "x.jpg", **fields)
    return response.status_code, response.get_json()


def all_keys(store: ObjectStore) -> list[str]:
    return [
        k
        for prefix in ("img/", "rec/", "lbl/", "sha/", "idx/", "phash/")
        for k in store.list(prefix, limit=1000)
    ]


#: The content key's claim (first: it is also the duplicate index), webp + png + thumb variants,
#: 4 search words (the name "x" and the gradient's colours: green, red, purple, brown), 4 hash
#: bands, the record. The claim is not rewritten at the commit: the record's existence resolves it.
WRITES_PER_UPLOAD = 13
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


@pytest.mark.parametrize("resampler", ["pillow", "vips"])
def test_the_thumbnail_is_resampled_bilinear_from_the_outputs_pixels(
    settings: Settings, disk: LocalStore, resampler: str
) -> None:
    source = images.noise(1600, 1200)
    options = UploadOptions(formats=("webp",), width=1000)
    settings = dataclasses.replace(settings, resampler=resampler)
    result = make_pipeline(settings, disk).ingest(images.encode(source, "PNG"), options)

    output = (
        processing.resampler.downscale(source, (1000, 750))
        if resampler == "vips"
        else source.resize((1000, 750), Image.Resampling.LANCZOS, reducing_gap=3.0)
    )
    assert output is not None
    thumb = output.resize((480, 360), Image.Resampling.BILINEAR, reducing_gap=3.0)
    assert result.renditions["thumb"].data == images.encode(thumb, "WEBP", quality=80, method=2)


@pytest.mark.parametrize("resampler", ["pillow", "vips"])
def test_the_main_output_is_scaled_down_by_the_resampler_setting(
    settings: Settings, disk: LocalStore, resampler: str
) -> None:
    source = images.noise(1600, 1200)
    options = UploadOptions(formats=("png",), width=1000)
    settings = dataclasses.replace(settings, resampler=resampler)
    result = make_pipeline(settings, disk).ingest(images.encode(source, "PNG"), options)

    pillows = source.resize((1000, 750), Image.Resampling.LANCZOS, reducing_gap=3.0)
    libvips = processing.resampler.downscale(source, (1000, 750))
    assert libvips is not None
    assert libvips.tobytes() != pillows.tobytes()
    with Image.open(io.BytesIO(result.renditions["png"].data)) as out:
        assert out.tobytes() == (libvips if resampler == "vips" else pillows).tobytes()


def test_without_libvips_the_pipeline_converts_with_pillow(
    settings: Settings, disk: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyvips", None)
    monkeypatch.setattr(
        processing.resampler, "_pyvips", functools.cache(processing.resampler._pyvips.__wrapped__)
    )
    source = images.noise(1600, 1200)
    options = UploadOptions(formats=("png",), width=1000)
    result = make_pipeline(settings, disk).ingest(images.encode(source, "PNG"), options)

    pillows = source.resize((1000, 750), Image.Resampling.LANCZOS, reducing_gap=3.0)
    with Image.open(io.BytesIO(result.renditions["png"].data)) as out:
        assert out.tobytes() == pillows.tobytes()


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
    assert record.record.text_status == "off"  # this labeler never reads text
    assert Catalog(disk).get(record.record.id) == record.record


class RaisingReader(RaisingLabeler):
    """Fails as a whole, and would have read the text (the local labeler with its reader)."""

    reads_text = True


def test_a_failing_labeler_that_reads_text_records_the_text_as_not_read(
    settings: Settings, disk: LocalStore
) -> None:
    record = make_pipeline(settings, disk, RaisingReader()).ingest(images.jpeg(), WEBP_AND_PNG)

    assert (record.record.label_status, record.record.text_status) == ("error", "failed")
    assert record.record.unread()


class PixelSpy:
    """Notes the sizes of the pictures a labeler and a text reader are given."""

    name = "spy"

    def __init__(self) -> None:
        self.sizes: list[tuple[tuple[int, int], tuple[int, int]]] = []
        self.deadlines: list[float | None] = []

    def label(self, image: LabelImage) -> LabelResult:
        self.sizes.append((image.picture().size, image.text_picture().size))
        self.deadlines.append(image.deadline)
        return LabelResult(labels=(Label("screen", 0.9, self.name),))

    def check(self) -> None:
        return None


def test_the_text_reader_reads_the_uploads_own_pixels_not_the_outputs(
    settings: Settings, disk: LocalStore
) -> None:
    spy = PixelSpy()
    upload = images.encode(Image.new("RGB", (1280, 800), "white"), "PNG")

    make_pipeline(settings, disk, spy).ingest(upload, UploadOptions(formats=("webp",), width=1024))

    # The detectors' copy comes from the 1024 px output's pixels; the text, from the decode.
    assert spy.sizes == [((1024, 640), (1280, 800))]
    # ... and knows when its labels are collected, for a slow read to end before.
    assert spy.deadlines != [None]


class FaceFailingLabeler:
    """Labels fine, but its face finder fails: ``error`` as the detector's own failure, or a
    bug (any other exception)."""

    name = "faces-fail"

    def __init__(self, error: Exception) -> None:
        self.error = error

    def faces_in(self, image: LabelImage) -> tuple[Box, ...]:
        raise self.error

    def label(self, image: LabelImage) -> LabelResult:
        return LabelResult(labels=(Label("square", 0.9, self.name),))

    def check(self) -> None:
        return None


@pytest.mark.parametrize("error", [LabelerUnavailable("detector down"), RuntimeError("bug")])
def test_a_failing_face_finder_leaves_the_crop_to_saliency(
    settings: Settings, disk: LocalStore, error: Exception
) -> None:
    picture = Image.new("RGB", (1200, 600), (60, 60, 60))
    picture.paste(images.noise(200, 200), (950, 200))
    options = UploadOptions(formats=("png",), width=300, height=300, fit="cover")
    pipeline = make_pipeline(settings, disk, FaceFailingLabeler(error))
    result = pipeline.ingest(images.encode(picture, "PNG"), options)
    assert result.record.receipt["crop"] == "saliency"
    assert result.record.label_status == "ok"


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
    # Not "the service is busy": the uploader must know to send it again.
    assert response.get_json()["message"] == NOTHING_SAVED


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


# -- identical uploads at once: one claim, one record (issue 14, item 13) ---------------------


def ingest_at_once(pipeline: Pipeline, data: bytes, uploads: int) -> list[Any]:
    """``uploads`` threads ingest ``data`` at the same instant; each one's result or error."""
    barrier = threading.Barrier(uploads)

    def upload(_: int) -> Any:
        barrier.wait()
        try:
            return pipeline.ingest(data, WEBP_AND_PNG)
        except ImagingError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=uploads) as pool:
        return list(pool.map(upload, range(uploads)))


def test_identical_uploads_at_the_same_instant_make_exactly_one_record(
    settings: Settings, store: ObjectStore
) -> None:
    """8 at once once made 8 records, on both backends: the check came before the act."""
    results = ingest_at_once(make_pipeline(settings, store), images.jpeg(), 8)

    assert not [r for r in results if isinstance(r, ImagingError)]
    (original,) = [r for r in results if not r.duplicate]
    duplicates = [r for r in results if r.duplicate]
    assert len(duplicates) == 7
    assert {r.record.id for r in duplicates} == {original.record.id}
    assert all(r.delete_key is None for r in duplicates)  # only the uploader gets one
    assert store.list("rec/") == [f"rec/{original.record.id}.json"]
    assert store.list("img/") == sorted(original.record.file_keys())


class FailingFirstImageWrite:
    """A store whose first image write waits until ``release`` is set, then fails."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.name = inner.name
        self.blocked = threading.Event()
        self.release = threading.Event()
        self.claim_reads = 0
        self._failed = False
        self._lock = threading.Lock()

    def put(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        with self._lock:
            first = key.startswith("img/") and not self._failed
            self._failed = self._failed or first
        if first:
            self.blocked.set()
            self.release.wait(10)
            raise StorageUnavailable(detail=f"injected failure on {key}")
        self.inner.put(key, data, content_type=content_type, cache_control=cache_control)

    def get(self, key: str) -> bytes:
        if key.startswith("sha/"):
            with self._lock:
                self.claim_reads += 1
        return self.inner.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_when_the_claims_winner_fails_a_waiting_upload_takes_over(
    settings: Settings, store: ObjectStore
) -> None:
    failing = FailingFirstImageWrite(store)
    pipeline = make_pipeline(settings, failing)
    data = images.jpeg()
    with ThreadPoolExecutor(max_workers=2) as pool:
        winner = pool.submit(pipeline.ingest, data, WEBP_AND_PNG)
        assert failing.blocked.wait(10)  # the winner holds the claim, mid-write
        reads = failing.claim_reads
        waiter = pool.submit(pipeline.ingest, data, WEBP_AND_PNG)
        deadline = time.monotonic() + 10
        while failing.claim_reads < reads + 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # the waiter has looked at the claim, and looks again
        assert not waiter.done()
        failing.release.set()

        with pytest.raises(StorageUnavailable):
            winner.result(10)
        taken_over = waiter.result(10)

    assert taken_over.duplicate is False
    assert store.list("rec/") == [f"rec/{taken_over.record.id}.json"]
    assert Catalog(store).claimant(taken_over.record.content_key) == taken_over.record.id


def test_a_failed_upload_releases_its_claim_so_the_next_one_succeeds(
    settings: Settings, disk: LocalStore
) -> None:
    flaky = FlakyStore(disk, fail_on=2)  # the claim lands, the first variant fails
    pipeline = make_pipeline(settings, flaky)
    with pytest.raises(StorageUnavailable):
        pipeline.ingest(images.jpeg(), WEBP_AND_PNG)
    assert disk.list("sha/") == []

    again = pipeline.ingest(images.jpeg(), WEBP_AND_PNG)
    assert again.duplicate is False


def test_a_stale_claim_whose_owner_died_is_taken_over(
    settings: Settings, store: ObjectStore
) -> None:
    """An owner killed (kill -9) after claiming: its claim names a record that never came."""
    pipeline = make_pipeline(settings, store)
    content_key = WEBP_AND_PNG.content_key(images.jpeg())
    dead = new_id(time.time() - pipeline.claim_stale_after - 1)
    store.put(claim_key(content_key), claim_body(dead), content_type="application/json")

    result = pipeline.ingest(images.jpeg(), WEBP_AND_PNG)

    assert result.duplicate is False
    assert Catalog(store).claimant(content_key) == result.record.id


def test_a_young_claim_makes_an_identical_upload_wait_then_503_at_its_deadline(
    settings: Settings, disk: LocalStore
) -> None:
    pipeline = make_pipeline(
        settings, disk, upload_deadline=1.0, conversion_wait=0.2, label_timeout=0.5
    )
    content_key = WEBP_AND_PNG.content_key(images.jpeg())
    in_flight = new_id()  # another upload's, still converting
    disk.put(claim_key(content_key), claim_body(in_flight), content_type="application/json")

    started = time.monotonic()
    with pytest.raises(Busy, match="still being saved by another upload"):
        pipeline.ingest(images.jpeg(), WEBP_AND_PNG)

    assert time.monotonic() - started < 1.0 + 3  # the deadline, with a generous margin
    assert Catalog(disk).claimant(content_key) == in_flight  # not taken from a live upload


def test_deleting_an_image_releases_its_claim_so_the_same_bytes_upload_anew(
    settings: Settings, store: ObjectStore
) -> None:
    pipeline = make_pipeline(settings, store)
    first = pipeline.ingest(images.jpeg(), WEBP_AND_PNG)
    Catalog(store).delete(first.record.id)

    again = pipeline.ingest(images.jpeg(), WEBP_AND_PNG)

    assert again.duplicate is False
    assert store.list("sha/") == [claim_key(again.record.content_key)]


def test_gc_sweeps_stale_claims_and_keeps_young_and_committed_ones(
    settings: Settings, store: ObjectStore
) -> None:
    catalog = Catalog(store)
    committed = make_pipeline(settings, store).ingest(images.jpeg(), WEBP_AND_PNG).record
    old, young = new_id(time.time() - 7200), new_id()
    for content_key, owner in (("a" * 64, old), ("b" * 64, young)):
        store.put(claim_key(content_key), claim_body(owner), content_type="application/json")

    removed = catalog.sweep(grace_seconds=3600)

    assert removed == [claim_key("a" * 64)]
    assert store.list("sha/") == sorted([claim_key("b" * 64), claim_key(committed.content_key)])


# -- one deadline for the whole upload (issue 14, item 15) ------------------------------------


def test_a_failed_claim_write_is_not_cleaned_up(settings: Settings, disk: LocalStore) -> None:
    """The claim was never written, so no delete of it may be spent in an outage."""
    flaky = FlakyStore(disk, fail_on=1)
    with pytest.raises(StorageUnavailable, match="nothing was saved"):
        make_pipeline(settings, flaky).ingest(images.jpeg(), WEBP_AND_PNG)
    assert flaky.puts == 1
    assert flaky.deleted == []


def test_the_clean_up_deletes_only_what_was_tried(settings: Settings, disk: LocalStore) -> None:
    """A variant failing: its claim, the variants and nothing else (no record, no markers)."""
    flaky = FlakyStore(disk, fail_on=2)
    with pytest.raises(StorageUnavailable):
        make_pipeline(settings, flaky).ingest(images.jpeg(), WEBP_AND_PNG)
    assert [k.split("/")[0] for k in flaky.deleted] == ["sha", "img", "img", "img"]


class OutageAtFirstImageWrite:
    """A real store whose emulator is stopped just before the upload's first image write: the
    claim has landed, then storage is down for everything after it."""

    def __init__(self, inner: ObjectStore, emulator: GCSEmulator) -> None:
        self.inner = inner
        self.name = inner.name
        self.emulator = emulator
        self._lock = threading.Lock()

    def put(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        if key.startswith("img/"):
            with self._lock:
                self.emulator.stop()  # a no-op once stopped
        self.inner.put(key, data, content_type=content_type, cache_control=cache_control)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_storage_going_down_mid_upload_answers_503_within_the_deadline(
    make_app: AppFactory, private_gcs_emulator: GCSEmulator
) -> None:
    """Down for 45 s, answers once came after 41 s and 57 s: the write's retries, then each
    clean-up delete's own. Now: the deadline, then a short clean-up (gc does the rest)."""
    bucket = new_bucket_name()
    create_store_buckets(private_gcs_emulator, bucket)
    # Production's retry deadline: alone, a write retries for 30 s (27.6 s measured before).
    store = make_gcs_store(bucket, timeout=5.0, deadline=30.0)
    client = make_app(
        storage=OutageAtFirstImageWrite(store, private_gcs_emulator),
        upload_deadline=3.0,
        conversion_wait=1.0,
        label_timeout=1.0,
    ).test_client()

    started = time.monotonic()
    status, body = post(client, images.jpeg(), format="webp,png")
    elapsed = time.monotonic() - started

    assert status == 503
    assert body["message"] == NOTHING_SAVED
    assert elapsed < 3.0 + 5  # the deadline and the clean-up, with a generous margin


def test_unanswered_storage_calls_answer_503_within_the_deadline(
    make_app: AppFactory, silent_gcs_endpoint: str
) -> None:
    store: GCSStore = make_gcs_store("silent", timeout=5.0, deadline=30.0)
    client = make_app(
        storage=store, upload_deadline=2.0, conversion_wait=0.5, label_timeout=1.0
    ).test_client()

    started = time.monotonic()
    status, body = post(client, images.jpeg())
    elapsed = time.monotonic() - started

    assert status == 503
    assert body["error"] == "storage_unavailable"
    assert elapsed < 2.0 + 5


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
