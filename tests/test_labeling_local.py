"""Specs for the local labeler: real ImageNet labels from the bundled model, in the words people
use (class names and their parents), offline, cached."""

from __future__ import annotations

import io
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest
import skimage.data
from numpy.typing import NDArray
from PIL import Image

from imaging.errors import LabelerUnavailable
from imaging.labeling import Label, convert_local_model
from imaging.labeling.effnet import (
    CheckpointError,
    activations,
    build_onnx,
    calibration_ranges,
    read_checkpoint,
)
from imaging.labeling.local import MODEL_FILE, MODEL_FILES, LocalLabeler, bundled_weights
from imaging.labeling.vocabulary import CATCH_ALL, vocabulary
from imaging.processing import LabelImage

REPO = Path(__file__).resolve().parents[1]
# Real photos shipped inside scikit-image (untyped, hence the annotations).
chelsea: Callable[[], NDArray[np.uint8]] = skimage.data.chelsea
coffee_cup: Callable[[], NDArray[np.uint8]] = skimage.data.coffee
CAT_LABELS = {"striped cat", "tabby cat", "Egyptian Mau", "Persian cat", "Siamese cat"}
CLASS_NAMES = {c.name for c in vocabulary().classes}


def best_class_name(labels: tuple[Label, ...]) -> str:
    """The likeliest label that is one of the model's own classes (not a parent word)."""
    return next(label.description for label in labels if label.description in CLASS_NAMES)


def jpeg(pixels: NDArray[np.uint8]) -> bytes:
    """A real photo (a scikit-image sample) as the JPEG bytes an upload would give."""
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def cat() -> bytes:
    return jpeg(chelsea())


@pytest.fixture(scope="module")
def coffee() -> bytes:
    return jpeg(coffee_cup())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def labeler(model_dir: Path) -> LocalLabeler:
    return LocalLabeler(cache_dir=model_dir)


def test_labels_a_photo_of_a_cat_as_a_cat(labeler: LocalLabeler, cat: bytes) -> None:
    labels = labeler.label(LabelImage.from_bytes(cat)).labels

    assert best_class_name(labels) in CAT_LABELS
    assert [label.description for label in labels[:2]] == ["animal", "cat"]


@pytest.mark.parametrize(
    "pixels",
    [
        pytest.param(skimage.data.hubble_deep_field, id="galaxies"),
        pytest.param(skimage.data.moon, id="moon"),
        pytest.param(skimage.data.grass, id="grass"),
    ],
)
def test_a_picture_of_no_animal_is_not_labelled_animal(
    labeler: LocalLabeler, pixels: Callable[[], NDArray[np.uint8]]
) -> None:
    # The model spreads its guesses over hundreds of animal classes here (0.4-0.5 in all):
    # below vocabulary.MIN_LIFT times chance, so the broad word is not shown.
    labels = labeler.label(LabelImage.from_bytes(jpeg(pixels()))).labels

    assert "animal" not in {label.description for label in labels}


def test_labels_a_photo_of_coffee_as_espresso_coffee_and_drink(
    labeler: LocalLabeler, coffee: bytes
) -> None:
    labels = labeler.label(LabelImage.from_bytes(coffee)).labels

    assert best_class_name(labels) == "espresso"
    assert {"espresso", "coffee", "drink"} <= {label.description for label in labels}


def test_labels_come_best_first_as_probabilities_from_the_local_source(
    labeler: LocalLabeler, cat: bytes
) -> None:
    labels = labeler.label(LabelImage.from_bytes(cat)).labels

    scores = [label.score for label in labels]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < score <= 1.0 for score in scores)
    assert {label.source for label in labels} == {"local"}


def test_max_results_caps_the_number_of_labels(model_dir: Path, cat: bytes) -> None:
    labeler = LocalLabeler(cache_dir=model_dir, max_results=2, min_score=0.0)

    assert len(labeler.label(LabelImage.from_bytes(cat)).labels) == 2


def test_min_score_drops_the_unlikely_labels(model_dir: Path, cat: bytes) -> None:
    everything = LocalLabeler(cache_dir=model_dir, max_results=1000, min_score=0.0).label(
        LabelImage.from_bytes(cat)
    )
    likely = LocalLabeler(cache_dir=model_dir, max_results=1000, min_score=0.15).label(
        LabelImage.from_bytes(cat)
    )

    assert likely.labels == tuple(label for label in everything.labels if label.score >= 0.15)
    assert 0 < len(likely.labels) < len(everything.labels)


def test_classes_sharing_a_name_give_one_label(model_dir: Path, cat: bytes) -> None:
    labels = (
        LocalLabeler(cache_dir=model_dir, max_results=2000, min_score=0.0)
        .label(LabelImage.from_bytes(cat))
        .labels
    )

    names = [label.description for label in labels]
    assert len(names) == len(set(names))
    classes = [label.score for label in labels if label.description in CLASS_NAMES]
    assert sum(classes) == pytest.approx(1.0, abs=1e-4)


def test_the_top_level_words_share_out_the_whole_probability(model_dir: Path, cat: bytes) -> None:
    labels = (
        LocalLabeler(cache_dir=model_dir, max_results=2000, min_score=0.0)
        .label(LabelImage.from_bytes(cat))
        .labels
    )

    # Labels leave out the catch-all words once a more telling word is found, and the broad
    # words no likelier than chance (vocabulary.MIN_LIFT); with every one of them (the
    # roll-up's own test) the sum is exactly 1.
    shown = {label.description: label.score for label in labels}
    assert "animal" in shown
    assert not CATCH_ALL & set(shown)
    top = [shown[word] for word in vocabulary().top if word in shown]
    assert 0.5 < sum(top) <= 1.0 + 1e-4


def test_garbage_bytes_make_the_labeler_unavailable(labeler: LocalLabeler) -> None:
    with pytest.raises(LabelerUnavailable):
        labeler.label(LabelImage.from_bytes(b"this is not an image"))


def test_broken_weights_make_the_labeler_unavailable(tmp_path: Path, cat: bytes) -> None:
    weights = tmp_path / "broken.pth"
    weights.write_bytes(b"\x80\x02 not a checkpoint")
    labeler = LocalLabeler(cache_dir=tmp_path / "models", weights=weights)

    with pytest.raises(LabelerUnavailable):
        labeler.check()
    with pytest.raises(LabelerUnavailable):
        labeler.label(LabelImage.from_bytes(cat))


def test_check_converts_the_model_into_the_cache_dir(
    model_dir: Path, labeler: LocalLabeler
) -> None:
    labeler.check()

    assert (model_dir / MODEL_FILE).stat().st_size > 1_000_000


def test_labels_with_the_network_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cat: bytes
) -> None:
    def no_network(*args: Any, **kwargs: Any) -> NoReturn:
        raise OSError("network is off in this test")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)

    labels = LocalLabeler(cache_dir=tmp_path).label(LabelImage.from_bytes(cat)).labels

    assert best_class_name(labels) in CAT_LABELS


def test_another_process_reuses_the_cached_model(model_dir: Path, labeler: LocalLabeler) -> None:
    labeler.check()
    before = (model_dir / MODEL_FILE).stat()
    convert_local_model(model_dir)  # python -m imaging.labeling.local, the image build's step

    after = (model_dir / MODEL_FILE).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_labelers_in_one_process_share_the_loaded_model(tmp_path: Path, cat: bytes) -> None:
    LocalLabeler(cache_dir=tmp_path).check()
    (tmp_path / MODEL_FILE).unlink()

    LocalLabeler(cache_dir=tmp_path).label(LabelImage.from_bytes(cat))

    assert not (tmp_path / MODEL_FILE).exists()


def test_concurrent_first_uses_convert_the_model_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    labelers = [LocalLabeler(cache_dir=tmp_path) for _ in range(4)]
    start = threading.Barrier(len(labelers))

    def first_use(labeler: LocalLabeler) -> None:
        start.wait()
        labeler.check()

    threads = [threading.Thread(target=first_use, args=(labeler,)) for labeler in labelers]
    with caplog.at_level(logging.INFO, logger="imaging.labeling.local"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    conversions = [
        r for r in caplog.records if r.getMessage().startswith("local labeler: converted")
    ]
    assert len(conversions) == 1


def test_an_unreadable_cached_model_is_rebuilt(tmp_path: Path, cat: bytes) -> None:
    (tmp_path / MODEL_FILE).write_bytes(b"half a model")

    labels = LocalLabeler(cache_dir=tmp_path).label(LabelImage.from_bytes(cat)).labels

    assert best_class_name(labels) in CAT_LABELS
    assert (tmp_path / MODEL_FILE).stat().st_size > 1_000_000


def test_a_cached_model_from_other_weights_is_rebuilt(
    tmp_path: Path, model_dir: Path, labeler: LocalLabeler
) -> None:
    labeler.check()
    other_weights = tmp_path / "other.pth"
    other_weights.write_bytes(bundled_weights().read_bytes() + b"\0")  # same tensors, new hash
    stale = tmp_path / "models" / MODEL_FILE
    stale.parent.mkdir()
    stale.write_bytes((model_dir / MODEL_FILE).read_bytes())
    before = stale.stat()

    LocalLabeler(cache_dir=stale.parent, weights=other_weights).check()

    assert stale.stat().st_ino != before.st_ino


# --- the restricted checkpoint reader --------------------------------------------------------


class RunsAShellCommand:
    """Unpickling this with a plain unpickler would run ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def legacy_checkpoint(*pickles: object) -> bytes:
    return b"".join(pickle.dumps(p, protocol=2) for p in pickles)


MAGIC, VERSION, SYS_INFO = 0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}


@pytest.mark.parametrize("position", [0, 2, 3])
def test_checkpoint_reader_refuses_a_pickle_that_runs_os_system(
    tmp_path: Path, position: int
) -> None:
    marker = tmp_path / "pwned"
    pickles: list[object] = [MAGIC, VERSION, SYS_INFO, {}, []]
    pickles[position] = RunsAShellCommand(marker)

    with pytest.raises(CheckpointError, match="forbidden global"):
        read_checkpoint(legacy_checkpoint(*pickles))
    assert not marker.exists()


def test_checkpoint_reader_refuses_a_file_that_is_not_a_checkpoint() -> None:
    with pytest.raises(CheckpointError):
        read_checkpoint(legacy_checkpoint("hello", VERSION, SYS_INFO, {}, []))


def test_checkpoint_reader_refuses_a_truncated_checkpoint() -> None:
    data = bundled_weights().read_bytes()

    with pytest.raises(CheckpointError, match="size"):
        read_checkpoint(data[:-4])


def test_checkpoint_reader_reads_the_bundled_weights_as_arrays() -> None:
    state = read_checkpoint(bundled_weights().read_bytes())

    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_fc.weight"].dtype == np.float32
    assert (state["_bn1.running_var"] > 0).all()


# --- int8 ----------------------------------------------------------------------------------


def test_the_default_model_is_the_int8_one_built_from_the_committed_ranges(
    model_dir: Path, labeler: LocalLabeler
) -> None:
    import onnx

    labeler.check()
    model = onnx.load_model(str(model_dir / MODEL_FILE))

    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # Every convolution's weights (and the classifier's) are stored as int8, per channel.
    weights = {t.name: t for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(convs) == 50
    for conv in convs:
        (source,) = [n for n in model.graph.node if conv.input[1] in n.output]
        assert source.op_type == "DequantizeLinear"
        assert weights[source.input[0]].data_type == onnx.TensorProto.INT8
    # ... and the session the labeler runs is that file's.
    meta = labeler._loaded().session.get_modelmeta().custom_metadata_map
    assert meta == {p.key: p.value for p in model.metadata_props}
    assert "/int8-" in meta["cloud_image_app.cache_key"]


def test_the_int8_model_builds_to_the_same_bytes_from_the_same_ranges() -> None:
    state = read_checkpoint(bundled_weights().read_bytes())
    ranges = calibration_ranges()
    low, high = ranges["_blocks.0._project_conv"]  # a convolution with no ReLU6 after it
    nudged = {**ranges, "_blocks.0._project_conv": (low, high * 2)}

    first = build_onnx(state, ranges=ranges)

    assert build_onnx(state, ranges=ranges) == first
    assert build_onnx(state, ranges=nudged) != first  # the ranges are what it is built from


def test_ranges_calibrated_on_another_graph_are_refused() -> None:
    state = read_checkpoint(bundled_weights().read_bytes())
    ranges = calibration_ranges()
    del ranges["_conv_stem"]

    with pytest.raises(CheckpointError, match="ranges"):
        build_onnx(state, ranges=ranges)


def test_the_committed_ranges_cover_the_graph_built_today() -> None:
    import onnx

    graph = onnx.load_model_from_string(build_onnx(read_checkpoint(bundled_weights().read_bytes())))

    assert set(calibration_ranges()) == set(activations(graph))


#: scikit-image's photos of the evaluation (benchmarks/labels.py), none used to calibrate.
EVALUATION_PHOTOS = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "hubble_deep_field", "coins", "clock",
    "horse", "moon", "retina", "page",
)  # fmt: skip


def test_int8_labels_the_evaluation_photos_like_float(model_dir: Path) -> None:
    # Measured (benchmarks.labels): the same top class on 14 of 17 pictures, the three others
    # unsure ones (at most 0.29) whose top class is in the other's top 5; no class's
    # probability moves by more than 0.14.
    sessions = {
        precision: LocalLabeler(cache_dir=model_dir, precision=precision)._loaded().session
        for precision in ("float", "int8")
    }
    for name in EVALUATION_PHOTOS:
        picture = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        picture.thumbnail((640, 640))
        square = LabelImage(picture).square_rgb(224)
        batch = np.frombuffer(square, np.uint8).reshape(1, 224, 224, 3)
        p = {k: s.run(["probabilities"], {"pixels": batch})[0][0] for k, s in sessions.items()}
        best = {k: int(np.argmax(v)) for k, v in p.items()}
        top5 = {k: set(np.argsort(-v)[:5].tolist()) for k, v in p.items()}

        assert best["float"] in top5["int8"], name
        assert best["int8"] in top5["float"], name
        if p["float"][best["float"]] >= 0.3:  # a sure answer stays the answer
            assert best["int8"] == best["float"], name
        assert float(np.abs(p["float"] - p["int8"]).max()) <= 0.2, name


def test_float_precision_keeps_its_own_float_model_beside_the_int8_one(
    model_dir: Path, cat: bytes
) -> None:
    import onnx

    labeler = LocalLabeler(cache_dir=model_dir, precision="float")
    labels = labeler.label(LabelImage.from_bytes(cat)).labels

    assert best_class_name(labels) in CAT_LABELS
    model = onnx.load_model(str(model_dir / MODEL_FILES["float"]))
    assert "QuantizeLinear" not in {node.op_type for node in model.graph.node}
    with pytest.raises(ValueError, match="precision"):
        LocalLabeler(cache_dir=model_dir, precision="int4")


def test_a_process_that_finds_the_cached_model_never_imports_onnx(
    model_dir: Path, labeler: LocalLabeler
) -> None:
    labeler.check()
    script = "import sys, pathlib; from imaging.labeling.local import LocalLabeler; "
    script += "LocalLabeler(cache_dir=pathlib.Path(sys.argv[1])).check(); "
    script += "print(sorted(m for m in sys.modules if m == 'onnx' or m.startswith('onnx.')))"

    done = subprocess.run(
        [sys.executable, "-c", script, str(model_dir)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )

    assert done.stdout.strip() == "[]"


def test_the_committed_ranges_are_what_the_calibration_script_writes() -> None:
    # Real photos from scikit-image (a dev dependency): the app's build only reads the result.
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "calibrate-classifier"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_the_int8_classifier_adds_at_most_35_mb_to_a_process(
    model_dir: Path, labeler: LocalLabeler
) -> None:
    # Measured: +24 MB with int8, +56 MB with float32 (the session's weights, prepacked).
    labeler.check()
    LocalLabeler(cache_dir=model_dir, precision="float").check()
    script = """if True:
        import pathlib, sys
        import onnxruntime
        from imaging.labeling.local import LocalLabeler
        from imaging.labeling.vocabulary import vocabulary
        from imaging.processing import LabelImage
        def rss():
            for line in open("/proc/self/smaps_rollup"):
                if line.startswith("Rss:"):
                    return int(line.split()[1]) / 1024
        vocabulary()
        image = LabelImage.from_bytes(pathlib.Path(sys.argv[2]).read_bytes())
        image.square_rgb(224)
        before = rss()
        LocalLabeler(cache_dir=pathlib.Path(sys.argv[1]), precision=sys.argv[3]).label(image)
        print(rss() - before)
    """
    photo = model_dir / "cat.jpg"
    photo.write_bytes(jpeg(chelsea()))

    def added_mb(precision: str) -> float:
        done = subprocess.run(
            [sys.executable, "-c", script, str(model_dir), str(photo), precision],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=120,
        )
        return float(done.stdout.strip().splitlines()[-1])

    int8, float32 = added_mb("int8"), added_mb("float")
    print(f"\nthe classifier adds {int8:.0f} MB (int8), {float32:.0f} MB (float32)")
    assert int8 <= 35
    assert int8 < float32 / 1.5
