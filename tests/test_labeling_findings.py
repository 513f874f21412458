"""People and text in the picture: the face detector, the text pre-check and OCR, and how the
local labeler and the app keep what they find (labels, count, boxes, text)."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from PIL import Image

from imaging.config import Settings
from imaging.errors import LabelerUnavailable
from imaging.labeling import (
    MAX_FACES,
    MAX_TEXT,
    Box,
    Label,
    LabelResult,
    build_labeler,
    with_findings,
)
from imaging.labeling.faces import FaceDetector, bundled_model
from imaging.labeling.local import LocalLabeler
from imaging.labeling.text import (
    OCR_SLOTS,
    Reading,
    TextNotRead,
    TextReader,
    likely_text,
    text_look,
)
from imaging.processing import LabelImage
from tests.conftest import AppFactory
from tests.images import (
    SCREEN_LINES,
    group,
    matplotlib_sample,
    on_white,
    photographed_page,
    portrait,
    screenshot,
    skimage_photo,
    sklearn_photo,
)
from tests.uploads import UploadActions

needs_tesseract = pytest.mark.skipif(
    shutil.which("tesseract") is None,
    reason="tesseract-ocr is not installed (scripts/install-system-deps installs it)",
)


def skimage_data() -> Any:
    from skimage import data

    return data


def label_copy(picture: Image.Image) -> bytes:
    """The picture as the pipeline hands it to a labeler: a JPEG within 640x640."""
    small = picture.convert("RGB")
    small.thumbnail((640, 640))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def words(text: str) -> set[str]:
    return {word.strip(".,:;").lower() for word in text.split()}


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="module")
def labeler(tmp_path_factory: pytest.TempPathFactory) -> LocalLabeler:
    return LocalLabeler(
        cache_dir=tmp_path_factory.mktemp("models"), faces=FaceDetector(), reader=TextReader()
    )


# -- faces --------------------------------------------------------------------------------------


def test_the_face_model_ships_with_the_package() -> None:
    assert bundled_model().is_file()
    assert bundled_model().read_bytes()[4:8] == b"TFL3"  # a TensorFlow Lite flatbuffer


def test_a_portrait_has_one_face_where_the_face_is(detector: FaceDetector) -> None:
    (face,) = detector.detect(portrait())

    # The astronaut's face: right of centre, in the upper third of the photo.
    assert 0.3 < face.left + face.width / 2 < 0.6
    assert 0.1 < face.top + face.height / 2 < 0.35
    assert 0.1 < face.width < 0.35
    assert face.score > 0.8


def test_a_group_has_a_face_per_portrait(detector: FaceDetector) -> None:
    faces = detector.detect(group())

    assert len(faces) == 4
    # One in each quarter of the grid.
    quarters = {(f.left + f.width / 2 > 0.5, f.top + f.height / 2 > 0.5) for f in faces}
    assert len(quarters) == 4
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)


@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket", "hubble_deep_field"])
def test_photos_without_people_have_no_faces(detector: FaceDetector, name: str) -> None:
    assert detector.detect(skimage_photo(name)) == ()


def test_boxes_are_fractions_of_a_wide_picture(detector: FaceDetector) -> None:
    wide = Image.new("RGB", (1536, 512), "grey")
    wide.paste(portrait(), (1024, 0))

    (face,) = detector.detect(wide)

    assert 1024 / 1536 < face.left < face.left + face.width < 1.0
    assert 0.1 < face.top + face.height / 2 < 0.35


def test_a_broken_face_model_makes_the_detector_unavailable(tmp_path: Path) -> None:
    broken = tmp_path / "faces.tflite"
    broken.write_bytes(b"not a model")

    with pytest.raises(LabelerUnavailable, match="face model could not be loaded"):
        FaceDetector(model=broken).check()


# -- text -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dark", [False, True])
def test_a_screenshot_is_likely_to_hold_text(dark: bool) -> None:
    assert likely_text(screenshot(dark=dark))


@pytest.mark.parametrize(
    "name", ["astronaut", "coffee", "chelsea", "camera", "rocket", "coins", "grass", "moon"]
)
def test_photos_are_not_likely_to_hold_text(name: str) -> None:
    assert not likely_text(skimage_photo(name))


def test_a_photographed_page_passes_as_paper_not_as_a_screen() -> None:
    page = Image.open(io.BytesIO(label_copy(photographed_page())))

    assert text_look(page) == "paper"


def test_a_scanned_page_is_likely_to_hold_text() -> None:
    # scikit-image's page: a grey scan, lit unevenly, that the flat-screen look turns down.
    assert text_look(Image.open(io.BytesIO(label_copy(skimage_photo("page"))))) == "paper"


def test_a_blank_sheet_of_paper_is_not_likely_to_hold_text() -> None:
    assert not likely_text(Image.open(io.BytesIO(label_copy(photographed_page(ink=False)))))


@pytest.mark.parametrize(
    "picture",
    [
        pytest.param(partial(skimage_photo, name), id=name)
        for name in ("retina", "clock", "cell", "brick", "gravel", "hubble_deep_field")
    ]
    + [
        pytest.param(lambda: on_white(Image.fromarray(skimage_data().logo())), id="logo"),
        pytest.param(lambda: matplotlib_sample("grace_hopper.jpg"), id="grace_hopper"),
        pytest.param(lambda: matplotlib_sample("s1045.ima.gz"), id="mri"),
        pytest.param(lambda: sklearn_photo("china.jpg"), id="china"),
        pytest.param(lambda: sklearn_photo("flower.jpg"), id="flower"),
    ],
)
def test_pictures_on_light_backgrounds_are_not_pages(picture: Callable[[], Image.Image]) -> None:
    """Mostly light, flat-ish pictures (a fundus photo, a clock, a cell, a logo) are the
    nearest to paper: none of them passes either look."""
    assert text_look(Image.open(io.BytesIO(label_copy(picture())))) is None


@needs_tesseract
def test_ocr_reads_a_scanned_page_evened_out() -> None:
    page = Image.open(io.BytesIO(label_copy(skimage_photo("page"))))

    reading = TextReader(timeout=10).read(page)

    assert {"region-based", "segmentation", "markers", "background"} <= words(reading.text)
    assert len(reading.text.splitlines()) >= 5


@needs_tesseract
def test_ocr_reads_back_the_words_of_a_photographed_page() -> None:
    page = Image.open(io.BytesIO(label_copy(photographed_page())))

    reading = TextReader(timeout=10).read(page)

    expected = words(" ".join(SCREEN_LINES))
    assert len(expected & words(reading.text)) / len(expected) >= 0.9, reading.text


def test_a_blank_picture_is_not_likely_to_hold_text() -> None:
    assert not likely_text(Image.new("RGB", (640, 480), "white"))


@needs_tesseract
def test_ocr_reads_back_the_words_of_a_screenshot() -> None:
    picture = Image.open(io.BytesIO(label_copy(screenshot())))

    reading = TextReader().read(picture)

    expected = words(" ".join(SCREEN_LINES))
    recall = len(expected & words(reading.text)) / len(expected)
    assert recall >= 0.9, reading.text
    assert len(reading.text.splitlines()) == len(SCREEN_LINES)
    assert 0.5 < reading.confidence <= 1.0


def test_a_photo_costs_no_ocr_run() -> None:
    reader = TextReader(command="/nonexistent/tesseract")  # would fail if it ran

    reading = reader.read(portrait())

    assert (reading.text, reader.calls) == ("", 0)


def stand_in(tmp_path: Path, script: str) -> str:
    """A ``tesseract`` command that runs ``script`` (sh) instead."""
    command = tmp_path / "tesseract"
    command.write_text(f"#!/bin/sh\n{script}\n")
    command.chmod(0o755)
    return str(command)


def test_ocr_past_its_wall_clock_bound_is_not_read_for_timeout(tmp_path: Path) -> None:
    slow = stand_in(tmp_path, "sleep 5")

    with pytest.raises(TextNotRead, match=r"took longer than \d\.\d s") as caught:
        TextReader(timeout=1, cpu_seconds=1, command=slow).read(screenshot())

    assert caught.value.reason == "timeout"


def test_a_read_gives_up_by_the_deadline_the_labels_are_collected_at(tmp_path: Path) -> None:
    # OCR_TIMEOUT would allow 20 s; the labels are collected in 1.5 s: the read ends first.
    slow = stand_in(tmp_path, "sleep 10")
    deadline = time.monotonic() + 1.5

    with pytest.raises(TextNotRead, match=r"took longer than [01]\.\d s") as caught:
        TextReader(timeout=20, cpu_seconds=1, command=slow).ocr(screenshot(), deadline=deadline)

    assert caught.value.reason == "timeout"  # after at most the 1 s the deadline left it


def test_ocr_past_its_cpu_limit_is_stopped_by_it_not_by_the_wall_clock(tmp_path: Path) -> None:
    # A read that only burns CPU: its RLIMIT_CPU (1 s) stops it long before the 20 s bound.
    spinning = stand_in(tmp_path, "while :; do :; done")

    with pytest.raises(TextNotRead, match="more than 1 s of CPU") as caught:
        TextReader(timeout=20, cpu_seconds=1, command=spinning).read(screenshot())

    assert caught.value.reason == "cpu"


def test_one_ocr_runs_at_a_time_and_a_waiter_gives_up_as_busy() -> None:
    assert OCR_SLOTS.acquire(timeout=5)  # another upload's OCR is running
    try:
        with pytest.raises(TextNotRead, match="OCR busy") as caught:
            TextReader(timeout=2.5, cpu_seconds=1).read(screenshot())
    finally:
        OCR_SLOTS.release()
    assert caught.value.reason == "busy"


def test_ocr_hands_tesseract_the_pixels_uncompressed(tmp_path: Path) -> None:
    # A PGM (binary greymap) costs nothing to write; a PNG of a 2048x1280 page cost 54 ms.
    handed = tmp_path / "handed"
    recorder = stand_in(tmp_path, f"cat > {handed}")

    TextReader(command=recorder).ocr(screenshot())

    data = handed.read_bytes()
    header = b"P5\n1280 800\n255\n"  # the screenshot in grey, one byte a pixel
    assert data.startswith(header)
    assert len(data) == len(header) + 1280 * 800


def test_a_failing_ocr_command_is_not_read_for_failed(tmp_path: Path) -> None:
    failing = stand_in(tmp_path, "echo broken >&2\nexit 1")

    with pytest.raises(LabelerUnavailable, match=r"OCR failed.*broken") as caught:
        TextReader(command=failing).read(screenshot())

    assert isinstance(caught.value, TextNotRead)
    assert caught.value.reason == "failed"


# -- composing findings into labels -----------------------------------------------------------


def face(score: float) -> Box:
    return Box(left=0.1, top=0.1, width=0.2, height=0.2, score=score)


def test_one_face_is_a_person_several_are_people() -> None:
    cat = LabelResult(labels=(Label("cat", 0.9, "local"),))

    one = with_findings(cat, faces=(face(0.8),), source="local")
    three = with_findings(cat, faces=(face(0.7), face(0.9), face(0.6)), source="local")

    assert one.labels == (Label("person", 0.8, "local"), Label("cat", 0.9, "local"))
    assert (one.people, three.people) == (1, 3)
    assert three.labels[0] == Label("people", 0.9, "local")


def test_boxes_are_capped_but_the_count_is_not() -> None:
    many = tuple(face(0.9) for _ in range(MAX_FACES + 5))

    found = with_findings(LabelResult(), faces=many, source="local")

    assert (len(found.faces), found.people) == (MAX_FACES, MAX_FACES + 5)


def test_text_gives_a_text_label_and_is_capped() -> None:
    found = with_findings(
        LabelResult(), text="  one   two \n\n" + "x" * 5000, text_score=0.9, source="local"
    )

    assert found.labels == (Label("text", 0.9, "local"),)
    assert found.text.startswith("one two\nxxx")
    assert len(found.text) == MAX_TEXT


# -- the local labeler and the app ------------------------------------------------------------


def test_the_local_labeler_labels_a_portrait_person(labeler: LocalLabeler) -> None:
    result = labeler.label(LabelImage.from_bytes(label_copy(portrait())))

    assert result.labels[0].description == "person"
    assert (result.people, len(result.faces)) == (1, 1)


def test_the_local_labeler_labels_a_group_people_with_a_count(labeler: LocalLabeler) -> None:
    result = labeler.label(LabelImage.from_bytes(label_copy(group())))

    assert result.labels[0].description == "people"
    assert result.people == 4


@needs_tesseract
def test_the_local_labeler_reads_a_screenshot(labeler: LocalLabeler) -> None:
    result = labeler.label(LabelImage.from_bytes(label_copy(screenshot())))

    assert "text" in [label.description for label in result.labels]
    assert "Invoice number 4711" in result.text
    assert result.text_status == "ok"


def test_the_local_labeler_reads_no_text_in_a_photo(tmp_path: Path) -> None:
    reader = TextReader()
    labeler = LocalLabeler(cache_dir=tmp_path, reader=reader)

    result = labeler.label(LabelImage.from_bytes(label_copy(skimage_photo("coffee"))))

    assert (result.text, result.text_status, reader.calls) == ("", "empty", 0)
    assert "text" not in [label.description for label in result.labels]


@pytest.mark.parametrize("picture", [portrait, group], ids=["portrait", "group"])
def test_faces_on_an_upload_sized_copy_are_where_the_full_picture_has_them(
    labeler: LocalLabeler, detector: FaceDetector, picture: Callable[[], Image.Image]
) -> None:
    # The pipeline's copy of a 1024 px output: the detectors read the classifier's small copy
    # of it (one box reduce to a 256 px shorter side), not a copy of their own.
    full = picture()
    copy = LabelImage(full.resize((1024, 1024), Image.Resampling.LANCZOS))

    found = labeler.faces_in(copy)
    expected = detector.detect(full)

    assert copy.small(LabelImage.square_side(224)).size == (256, 256)
    assert len(found) == len(expected)

    def in_reading_order(boxes: tuple[Box, ...]) -> list[Box]:  # scores this close may swap
        return sorted(boxes, key=lambda b: (round(b.top, 1), b.left))

    for got, want in zip(in_reading_order(found), in_reading_order(expected), strict=True):
        for side in ("left", "top", "width", "height"):
            assert getattr(got, side) == pytest.approx(getattr(want, side), abs=0.03)


@needs_tesseract
def test_the_local_labeler_reads_a_screenshot_from_an_upload_sized_copy(
    labeler: LocalLabeler,
) -> None:
    # A 4:3 screen's 1024x768 copy: the text check looks at its 341x256 small copy.
    copy = LabelImage(screenshot().resize((1024, 768), Image.Resampling.LANCZOS))

    result = labeler.label(copy)

    assert "text" in [label.description for label in result.labels]
    assert "Invoice number 4711" in result.text


class SeenReader(TextReader):
    """A reader that records the pictures its cheap look sent to OCR, without running it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[int, int]] = []

    def ocr(self, picture: Image.Image, **_: Any) -> Reading:
        self.asked.append(picture.size)
        return Reading("read", 0.9)


def test_the_look_for_text_passes_a_4k_screenshots_upload_sized_copy(model_cache: Path) -> None:
    # 3840x2160 of 22 px text (the screenshot tiled), uploaded with width=1024: a 1024x576
    # copy, whose look for text reads the detectors' 512x288 copy (letters 3 px high).
    tiles = screenshot()
    screen = Image.new("RGB", (3840, 2400), "white")
    for x in range(0, 3840, 1280):
        for y in range(0, 2400, 800):
            screen.paste(tiles, (x, y))
    copy = screen.crop((0, 0, 3840, 2160)).resize((1024, 576), Image.Resampling.LANCZOS)
    reader = SeenReader()

    result = LocalLabeler(cache_dir=model_cache, reader=reader).label(LabelImage(copy))

    assert reader.asked == [(1024, 576)]  # OCR reads the copy itself, not the small one
    assert (result.text, result.text_status) == ("read", "ok")


# -- a read that did not happen says so, and is read later ----------------------------------


def test_a_text_read_skipped_for_a_busy_reader_says_busy_not_empty(model_cache: Path) -> None:
    labeler = LocalLabeler(cache_dir=model_cache, reader=TextReader(timeout=1, cpu_seconds=1))

    assert OCR_SLOTS.acquire(timeout=5)  # another upload's OCR is running
    try:
        result = labeler.label(LabelImage.from_bytes(label_copy(screenshot())))
    finally:
        OCR_SLOTS.release()

    assert (result.text, result.text_status) == ("", "busy")


def test_a_text_read_that_hangs_says_timeout(model_cache: Path, tmp_path: Path) -> None:
    reader = TextReader(timeout=1, cpu_seconds=1, command=stand_in(tmp_path, "sleep 5"))
    labeler = LocalLabeler(cache_dir=model_cache, reader=reader)

    result = labeler.label(LabelImage.from_bytes(label_copy(screenshot())))

    assert (result.text, result.text_status) == ("", "timeout")


@needs_tesseract
def test_an_upload_whose_text_was_not_read_says_so_and_relabel_unread_reads_it(
    make_app: AppFactory, tmp_path: Path
) -> None:
    # OCR_TIMEOUT = 2 x OCR_CPU_SECONDS: no wait for a busy slot, 6 s for a read that starts.
    app = make_app(labeler="local", ocr_timeout=6, ocr_cpu_seconds=3)
    client = app.test_client()
    assert OCR_SLOTS.acquire(timeout=5)  # another upload's OCR is running
    try:
        record = upload_copy(UploadActions(client), screenshot())
    finally:
        OCR_SLOTS.release()

    assert (record["text"], record["text_status"]) == ("", "busy")
    assert "not read" in record["text_note"]
    page = client.get(f"/images/{record['id']}").get_data(as_text=True)
    assert 'data-testid="text-not-read"' in page

    run = app.test_cli_runner().invoke(
        args=["relabel", "--unread", "--cursor-file", str(tmp_path / "cursor")]
    )

    assert run.exit_code == 0, run.output
    assert "1 of 1 record(s) changed." in run.output
    again = client.get(f"/api/images/{record['id']}").get_json()
    assert "Invoice number 4711" in again["text"]
    assert (again["text_status"], again["text_note"]) == ("ok", "")
    assert "text" in [label["description"] for label in again["labels"]]
    page = client.get(f"/images/{record['id']}").get_data(as_text=True)
    assert 'data-testid="text-not-read"' not in page


class ScriptedReader:
    """Reads the text each call's script says: (text, text_status) in turn; counts its calls."""

    name = "scripted"
    reads_text = True

    def __init__(self, *readings: tuple[str, str]) -> None:
        self.readings = list(readings)
        self.calls = 0

    def label(self, image: LabelImage) -> LabelResult:
        text, status = self.readings[min(self.calls, len(self.readings) - 1)]
        self.calls += 1
        found = with_findings(
            LabelResult(labels=(Label(f"screen {self.calls}", 0.9, self.name),)),
            text=text,
            text_score=0.8,
            text_status=status,
            source=self.name,
        )
        return found

    def check(self) -> None:
        return None


def test_relabel_unread_describes_only_the_records_something_was_not_read_of(
    make_app: AppFactory, tmp_path: Path
) -> None:
    uploader = make_app(labeler_impl=ScriptedReader(("", "busy"), ("read at upload", "ok")))
    client = uploader.test_client()
    unread = upload_copy(UploadActions(client), screenshot())
    read = upload_copy(UploadActions(client), screenshot(("Another screen",)))
    relabeller = ScriptedReader(("read later", "ok"))
    app = make_app(labeler_impl=relabeller)

    run = app.test_cli_runner().invoke(
        args=["relabel", "--unread", "--cursor-file", str(tmp_path / "cursor")]
    )

    assert run.exit_code == 0, run.output
    assert relabeller.calls == 1
    assert "1 of 2 record(s) changed." in run.output
    api = app.test_client()
    assert api.get(f"/api/images/{unread['id']}").get_json()["text"] == "read later"
    assert api.get(f"/api/images/{read['id']}").get_json()["text"] == "read at upload"


def test_a_relabel_that_cannot_read_the_text_keeps_the_text_read_before(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client = make_app(labeler_impl=ScriptedReader(("read at upload", "ok"))).test_client()
    record = upload_copy(UploadActions(client), screenshot())
    app = make_app(labeler_impl=ScriptedReader(("", "timeout")))

    run = app.test_cli_runner().invoke(args=["relabel", "--cursor-file", str(tmp_path / "c")])

    assert run.exit_code == 0, run.output
    again = app.test_client().get(f"/api/images/{record['id']}").get_json()
    assert (again["text"], again["text_status"]) == ("read at upload", "ok")
    # The new classes, and the text label the kept text earned.
    assert [label["description"] for label in again["labels"]] == ["text", "screen 1"]


def test_without_detectors_the_local_labeler_finds_no_people(tmp_path: Path) -> None:
    result = LocalLabeler(cache_dir=tmp_path).label(LabelImage.from_bytes(label_copy(portrait())))

    assert (result.people, result.faces) == (0, ())
    assert "person" not in [label.description for label in result.labels]


def upload_copy(uploads: UploadActions, picture: Image.Image) -> dict[str, Any]:
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    body: dict[str, Any] = uploads.ok(buffer.getvalue(), "picture.png")
    return body


def test_an_uploaded_portrait_keeps_its_person_label_count_and_box(
    make_app: AppFactory,
) -> None:
    client = make_app(labeler="local", local_features=("faces",)).test_client()

    record = upload_copy(UploadActions(client), portrait())

    assert record["people"] == 1
    assert "person" in [label["description"] for label in record["labels"]]
    (box,) = record["faces"]
    assert set(box) == {"left", "top", "width", "height", "score"}
    again = client.get(f"/api/images/{record['id']}").get_json()
    assert (again["people"], again["faces"]) == (1, [box])


@needs_tesseract
def test_the_detail_page_shows_the_text_in_the_picture(make_app: AppFactory) -> None:
    client: FlaskClient = make_app(labeler="local").test_client()

    record = upload_copy(UploadActions(client), screenshot())
    page = client.get(f"/images/{record['id']}").get_data(as_text=True)

    assert "Invoice number 4711" in str(record["text"])
    assert 'data-testid="picture-text"' in page
    assert "Invoice number 4711" in page


def test_local_features_empty_turns_people_and_text_off(make_app: AppFactory) -> None:
    client = make_app(labeler="local", local_features=()).test_client()

    record = upload_copy(UploadActions(client), portrait())

    assert (record["people"], record["faces"], record["text"]) == (0, [], "")


def test_without_the_tesseract_command_the_labeler_reads_no_text_and_says_so(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")

    labeler = build_labeler(settings.replace(labeler="local"))

    assert isinstance(labeler, LocalLabeler)
    assert labeler.reader is None
    assert labeler.faces is not None
    assert "no tesseract command" in caplog.text


def test_local_features_choose_the_detectors(settings: Settings) -> None:
    faces_only = build_labeler(settings.replace(labeler="local", local_features=("faces",)))
    text_only = build_labeler(settings.replace(labeler="local", local_features=("text",)))

    assert isinstance(faces_only, LocalLabeler)
    assert isinstance(text_only, LocalLabeler)
    assert (faces_only.faces is not None, faces_only.reader) == (True, None)
    assert text_only.faces is None
