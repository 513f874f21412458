"""VisionLabeler against a local Cloud Vision REST server: what it sends, returns and survives."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from PIL import Image

from imaging.labeling import MAX_FACES, Box, Label, LabelerUnavailable
from imaging.labeling.vision import VisionLabeler
from imaging.processing import LabelImage
from tests.uploads import upload_ok
from tests.vision_server import VisionServer

MakeLabeler = Callable[..., VisionLabeler]


def jpeg(colour: str = "orange", size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def make_labeler(vision_server: VisionServer) -> Iterator[MakeLabeler]:
    """Labelers pointed at the fake server (unless told otherwise), closed after the test."""
    built: list[VisionLabeler] = []

    def make(**options: Any) -> VisionLabeler:
        options.setdefault("endpoint", vision_server.endpoint)
        options.setdefault("credentials", AnonymousCredentials())
        options.setdefault("timeout", 5.0)
        labeler = VisionLabeler(**options)
        built.append(labeler)
        return labeler

    yield make
    for labeler in built:
        labeler.close()


def test_labels_come_back_as_vision_returns_them_with_source_vision(
    make_labeler: MakeLabeler,
) -> None:
    result = make_labeler().label(LabelImage.from_bytes(jpeg()))

    assert result.labels == (Label("Cat", 0.97, "vision"), Label("Whiskers", 0.9, "vision"))
    assert result.safe_search == {}


def test_the_image_bytes_are_sent_as_they_are(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    image = jpeg("teal")

    make_labeler().label(LabelImage.from_bytes(image))

    assert [request.image for request in vision_server.received] == [image]


def test_labels_below_min_score_are_dropped(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    vision_server.set_mode("labels", labels=(("Cat", 0.97), ("Mammal", 0.4), ("Rug", 0.1)))

    result = make_labeler(min_score=0.5).label(LabelImage.from_bytes(jpeg()))

    assert [label.description for label in result.labels] == ["Cat"]


def test_max_results_is_sent_to_vision_and_caps_the_labels(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    vision_server.set_mode(
        "labels", labels=(("Cat", 0.97), ("Whiskers", 0.9), ("Mammal", 0.8), ("Rug", 0.7))
    )

    result = make_labeler(max_results=2).label(LabelImage.from_bytes(jpeg()))

    assert vision_server.received[0].features["LABEL_DETECTION"] == 2
    assert [label.description for label in result.labels] == ["Cat", "Whiskers"]


def test_max_results_caps_the_labels_even_when_vision_returns_more(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    vision_server.set_mode(
        "labels",
        labels=(("Cat", 0.97), ("Whiskers", 0.9), ("Mammal", 0.8)),
        honour_max_results=False,
    )

    result = make_labeler(max_results=2).label(LabelImage.from_bytes(jpeg()))

    assert [label.description for label in result.labels] == ["Cat", "Whiskers"]


def test_labels_are_best_first_whatever_order_vision_uses(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    vision_server.set_mode("labels", labels=(("Rug", 0.5), ("Cat", 0.97), ("Mammal", 0.8)))

    result = make_labeler().label(LabelImage.from_bytes(jpeg()))

    assert [label.description for label in result.labels] == ["Cat", "Mammal", "Rug"]


def test_an_empty_annotation_gives_no_labels(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    vision_server.set_mode("empty")

    result = make_labeler().label(LabelImage.from_bytes(jpeg()))

    assert result.labels == ()


@pytest.mark.parametrize("status", [500, 403, 429])
def test_an_error_status_raises_labeler_unavailable(
    make_labeler: MakeLabeler, vision_server: VisionServer, status: int
) -> None:
    vision_server.set_mode("error", error_status=status)

    with pytest.raises(LabelerUnavailable):
        make_labeler(timeout=2.0).label(LabelImage.from_bytes(jpeg()))


def test_a_quota_error_is_not_retried(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    vision_server.set_mode("error", error_status=429)

    with pytest.raises(LabelerUnavailable):
        make_labeler().label(LabelImage.from_bytes(jpeg()))

    assert vision_server.calls == 1


def test_a_transient_unavailable_is_retried_within_the_timeout(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    vision_server.set_mode("error", error_status=503, fail_times=1)

    result = make_labeler(timeout=3.0).label(LabelImage.from_bytes(jpeg()))

    assert [label.description for label in result.labels] == ["Cat", "Whiskers"]
    assert vision_server.calls == 2


def test_no_retry_when_the_timeout_leaves_no_room_for_one(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    vision_server.set_mode("error", error_status=503, fail_times=1)

    with pytest.raises(LabelerUnavailable):
        make_labeler(timeout=1.0).label(LabelImage.from_bytes(jpeg()))

    assert vision_server.calls == 1


def test_a_per_image_error_raises_labeler_unavailable(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    vision_server.set_mode("image-error")

    with pytest.raises(LabelerUnavailable, match="Bad image data"):
        make_labeler().label(LabelImage.from_bytes(jpeg()))


def test_a_server_slower_than_the_timeout_raises_labeler_unavailable(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    vision_server.set_mode("slow", slow_seconds=10.0)

    with pytest.raises(LabelerUnavailable):
        make_labeler(timeout=0.5).label(LabelImage.from_bytes(jpeg()))


def test_safe_search_is_asked_for_in_the_same_request_and_parsed(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    vision_server.set_mode(
        "labels",
        safe_search={
            "adult": "VERY_UNLIKELY",
            "violence": "UNLIKELY",
            "racy": "POSSIBLE",
            "medical": "LIKELY",
            "spoof": "VERY_LIKELY",
        },
    )

    result = make_labeler(safe_search=True).label(LabelImage.from_bytes(jpeg()))

    assert vision_server.calls == 1
    assert set(vision_server.received[0].features) == {
        "LABEL_DETECTION",
        "SAFE_SEARCH_DETECTION",
    }
    assert result.safe_search == {
        "adult": "VERY_UNLIKELY",
        "violence": "UNLIKELY",
        "racy": "POSSIBLE",
        "medical": "LIKELY",
        "spoof": "VERY_LIKELY",
    }
    assert [label.description for label in result.labels] == ["Cat", "Whiskers"]


def test_safe_search_is_not_asked_for_unless_enabled(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    make_labeler().label(LabelImage.from_bytes(jpeg()))

    assert set(vision_server.received[0].features) == {"LABEL_DETECTION"}


def test_the_same_image_reaches_vision_once(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    labeler = make_labeler()

    first = labeler.label(LabelImage.from_bytes(jpeg("navy")))
    second = labeler.label(LabelImage.from_bytes(jpeg("navy")))

    assert second == first
    assert vision_server.calls == 1


def test_different_images_each_reach_vision(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    labeler = make_labeler()

    labeler.label(LabelImage.from_bytes(jpeg("navy")))
    labeler.label(LabelImage.from_bytes(jpeg("olive")))

    assert vision_server.calls == 2


def test_a_failure_is_not_cached(make_labeler: MakeLabeler, vision_server: VisionServer) -> None:
    labeler = make_labeler()
    vision_server.set_mode("error", error_status=403)
    with pytest.raises(LabelerUnavailable):
        labeler.label(LabelImage.from_bytes(jpeg()))
    vision_server.set_mode("labels")

    result = labeler.label(LabelImage.from_bytes(jpeg()))

    assert [label.description for label in result.labels] == ["Cat", "Whiskers"]


def test_concurrent_requests_for_one_image_share_one_call(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    # The server holds the first call long enough for the second thread to ask meanwhile.
    vision_server.set_mode("slow", slow_seconds=1.0)
    labeler = make_labeler(timeout=5.0)
    image = jpeg("maroon")
    results: list[object] = []

    def ask() -> None:
        results.append(labeler.label(LabelImage.from_bytes(image)))

    first = threading.Thread(target=ask)
    first.start()
    give_up = time.monotonic() + 5
    while vision_server.calls == 0 and time.monotonic() < give_up:
        time.sleep(0.01)
    second = threading.Thread(target=ask)
    second.start()
    first.join(timeout=10)
    second.join(timeout=10)

    assert len(results) == 2
    assert results[0] == results[1]
    assert vision_server.calls == 1


def test_nothing_listening_raises_labeler_unavailable(make_labeler: MakeLabeler) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    with pytest.raises(LabelerUnavailable):
        make_labeler(endpoint=f"http://127.0.0.1:{closed_port}").label(
            LabelImage.from_bytes(jpeg())
        )


def test_check_builds_the_client_without_calling_vision(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    make_labeler().check()

    assert vision_server.calls == 0


def test_check_raises_when_there_are_no_credentials(
    make_labeler: MakeLabeler, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))

    with pytest.raises(LabelerUnavailable, match="could not be created"):
        make_labeler(endpoint="", credentials=None).check()


# -- text and faces (VISION_FEATURES) -------------------------------------------------------------


def test_text_and_faces_are_asked_for_in_the_same_request(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    make_labeler(features=("labels", "text", "faces"), safe_search=True).label(
        LabelImage.from_bytes(jpeg())
    )

    assert vision_server.calls == 1
    assert vision_server.received[0].features == {
        "LABEL_DETECTION": 5,
        "TEXT_DETECTION": None,
        "FACE_DETECTION": MAX_FACES,
        "SAFE_SEARCH_DETECTION": None,
    }


def test_only_the_features_chosen_are_asked_for(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    result = make_labeler(features=("text",)).label(LabelImage.from_bytes(jpeg()))

    assert set(vision_server.received[0].features) == {"TEXT_DETECTION"}
    assert result.labels == ()


def test_the_text_vision_reads_is_kept_with_a_text_label(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    vision_server.set_mode("labels", text="OPEN 24 HOURS\nFree parking")

    result = make_labeler(features=("labels", "text")).label(LabelImage.from_bytes(jpeg()))

    assert result.text == "OPEN 24 HOURS\nFree parking"
    assert result.text_status == "ok"
    assert [label.description for label in result.labels] == ["text", "Cat", "Whiskers"]


@pytest.mark.parametrize(
    ("features", "status"), [(("labels", "text"), "empty"), (("labels", "faces"), "off")]
)
def test_the_text_status_says_whether_vision_was_asked_to_read(
    make_labeler: MakeLabeler,
    vision_server: VisionServer,
    features: tuple[str, ...],
    status: str,
) -> None:
    vision_server.set_mode("labels", faces=((10, 10, 20, 20, 0.9),))

    result = make_labeler(features=features).label(LabelImage.from_bytes(jpeg()))

    assert (result.text, result.text_status) == ("", status)


def test_faces_vision_finds_become_people_with_a_count_and_boxes(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    # On a 200x100 image: the left face at (0, 0) (Vision leaves zero coordinates out).
    vision_server.set_mode("labels", faces=((0, 0, 40, 50, 0.8), (100, 20, 50, 50, 0.95)))

    result = make_labeler(features=("labels", "faces")).label(
        LabelImage.from_bytes(jpeg(size=(200, 100)))
    )

    assert result.people == 2
    assert result.labels[0] == Label("people", 0.95, "vision")
    assert result.faces == (
        Box(left=0.5, top=0.2, width=0.25, height=0.5, score=0.95),
        Box(left=0.0, top=0.0, width=0.2, height=0.5, score=0.8),
    )


def test_one_face_from_vision_is_a_person(
    make_labeler: MakeLabeler, vision_server: VisionServer
) -> None:
    vision_server.set_mode("labels", faces=((10, 10, 20, 20, 0.9),))

    result = make_labeler(features=("faces",)).label(LabelImage.from_bytes(jpeg()))

    assert result.labels == (Label("person", 0.9, "vision"),)
    assert result.people == 1


def test_unknown_vision_features_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown Vision features: logos"):
        VisionLabeler(features=("labels", "logos"))


def test_the_app_asks_vision_for_the_features_of_vision_features(
    make_app: Any, vision_server: VisionServer
) -> None:
    vision_server.set_mode("labels", text="Hello there")
    client = make_app(
        labeler="vision", vision_api_endpoint=vision_server.endpoint, vision_features=("text",)
    ).test_client()

    record = upload_ok(client)

    assert set(vision_server.received[0].features) == {"TEXT_DETECTION"}
    assert (record["text"], record["labels"][0]["description"]) == ("Hello there", "text")
