"""VisionLabeler (LABELER=vision): Cloud Vision labels, text and faces, and SafeSearch when asked.

VISION_FEATURES chooses what is asked for: LABEL_DETECTION, TEXT_DETECTION (the text read, and
a ``text`` label) and FACE_DETECTION (``person``/``people`` labels, the count and the boxes), all
in one ``images:annotate`` call per new image, through the official client, bounded by
LABEL_TIMEOUT. Results are kept in a small in-process LRU keyed by the image's SHA-256, so the
same bytes never reach Vision twice in a process (a double submit, a re-ingest). Every failure
becomes ``LabelerUnavailable``: the pipeline then stores the upload without labels.

With VISION_API_ENDPOINT set (a local fake, a proxy, a regional endpoint) the client speaks REST
to that URL, scheme included, so ``http://127.0.0.1:PORT`` works with anonymous credentials.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as api_exceptions
from google.api_core import retry as api_retry
from google.cloud import vision

from imaging.errors import ImagingError
from imaging.labeling import MAX_FACES, Box, Label, LabelerUnavailable, LabelResult, with_findings
from imaging.processing.header import open_image, pillow_boundary

if TYPE_CHECKING:
    from imaging.processing import LabelImage

__all__ = ["CACHE_SIZE", "FEATURES", "SAFE_SEARCH_CATEGORIES", "VisionLabeler"]

logger = logging.getLogger(__name__)

#: Results kept per process: a few hundred bytes each, so this costs well under a megabyte.
CACHE_SIZE = 1024
SAFE_SEARCH_CATEGORIES = ("adult", "violence", "racy", "medical", "spoof")
#: What VISION_FEATURES may name: label, text and face detection.
FEATURES = ("labels", "text", "faces")
#: api_core gives each retry attempt the time left until the call's deadline, except that with
#: less than one second left it falls back to the whole timeout. Retries therefore only start
#: while more than this is left, which keeps the call as a whole inside LABEL_TIMEOUT.
_LAST_ATTEMPT_SECONDS = 1.5


class VisionLabeler:
    """Labels images with Cloud Vision. Safe to share between threads; build it after forking."""

    name = "vision"

    def __init__(
        self,
        *,
        endpoint: str = "",
        max_results: int = 5,
        min_score: float = 0.15,
        timeout: float = 10.0,
        safe_search: bool = False,
        features: tuple[str, ...] = ("labels",),
        credentials: Any | None = None,
    ) -> None:
        unknown = set(features) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown Vision features: {', '.join(sorted(unknown))}")
        self._features = features
        self.reads_text = "text" in features  # imaging.labeling.ReadsText
        self._endpoint = endpoint
        self._max_results = max_results
        self._min_score = min_score
        self._timeout = timeout
        self._safe_search = safe_search
        self._credentials = credentials
        self._retry = _retry_within(timeout)
        # Created on first use, not here: gRPC channels do not survive gunicorn's fork.
        self._client: vision.ImageAnnotatorClient | None = None
        self._client_lock = threading.Lock()
        self._cache = _ResultCache(CACHE_SIZE)

    def label(self, image: LabelImage) -> LabelResult:
        """Labels for an image (sent as a JPEG), best first; raise LabelerUnavailable on any
        failure."""
        try:
            return self.label_jpeg(image.jpeg())
        except ImagingError as exc:
            raise LabelerUnavailable(f"image could not be encoded: {exc}") from exc

    def label_jpeg(self, image: bytes) -> LabelResult:
        """Labels for JPEG bytes; results are cached by the bytes' SHA-256."""
        digest = hashlib.sha256(image).hexdigest()
        result = self._cache.get_or_compute(digest, lambda: self._annotate(image))
        # The cached result is shared; its dict must not be changed through a caller's copy.
        return replace(result, safe_search=dict(result.safe_search))

    def check(self) -> None:
        """Raise LabelerUnavailable unless a client can be built (no API call is made)."""
        self._client_or_raise()

    def close(self) -> None:
        """Close the client's connections; the next call builds a new client."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.transport.close()  # type: ignore[no-untyped-call]  # generated, unannotated

    def _client_or_raise(self) -> vision.ImageAnnotatorClient:
        client = self._client
        if client is not None:
            return client
        with self._client_lock:
            if self._client is None:
                try:
                    self._client = self._create_client()
                except Exception as exc:
                    # Typically no Application Default Credentials; the message says which.
                    raise LabelerUnavailable(
                        f"Cloud Vision client could not be created: {type(exc).__name__}: {exc}"
                    ) from exc
            return self._client

    def _create_client(self) -> vision.ImageAnnotatorClient:
        if not self._endpoint:
            return vision.ImageAnnotatorClient(credentials=self._credentials)
        # REST, because it honours a scheme in api_endpoint (plain http for a local fake); the
        # gRPC transport always opens a TLS channel.
        return vision.ImageAnnotatorClient(
            credentials=self._credentials,
            transport="rest",
            client_options={"api_endpoint": self._endpoint},
        )

    def _annotate(self, image: bytes) -> LabelResult:
        client = self._client_or_raise()
        features = []
        if "labels" in self._features:
            features.append(
                vision.Feature(
                    type_=vision.Feature.Type.LABEL_DETECTION, max_results=self._max_results
                )
            )
        if "text" in self._features:
            features.append(vision.Feature(type_=vision.Feature.Type.TEXT_DETECTION))
        if "faces" in self._features:
            features.append(
                vision.Feature(type_=vision.Feature.Type.FACE_DETECTION, max_results=MAX_FACES)
            )
        if self._safe_search:
            features.append(vision.Feature(type_=vision.Feature.Type.SAFE_SEARCH_DETECTION))
        request = vision.AnnotateImageRequest(image=vision.Image(content=image), features=features)
        logger.debug("Cloud Vision: annotating %d bytes", len(image))
        try:
            batch = client.batch_annotate_images(
                requests=[request], retry=self._retry, timeout=self._timeout
            )
        # Any exception at all: API errors, but also requests' timeouts and refused connections
        # (the REST transport lets those through unwrapped) and credential refresh failures.
        except Exception as exc:
            logger.debug("Cloud Vision call failed", exc_info=True)
            raise LabelerUnavailable(
                f"Cloud Vision call failed: {type(exc).__name__}: {exc}"
            ) from exc
        if len(batch.responses) != 1:
            raise LabelerUnavailable(
                f"Cloud Vision returned {len(batch.responses)} responses for one image"
            )
        response = batch.responses[0]
        if response.error.code:
            raise LabelerUnavailable(
                f"Cloud Vision could not label the image: "
                f"code {response.error.code}: {response.error.message}"
            )
        result = LabelResult(
            labels=self._labels(response),
            safe_search=self._safe_search_verdict(response),
        )
        faces = _faces(response, image) if "faces" in self._features else ()
        text = ""
        if "text" in self._features and response.text_annotations:
            # The first annotation is the whole text; the others are its words.
            text = response.text_annotations[0].description
        if not faces and not self.reads_text:
            return result
        return with_findings(
            result,
            faces=faces,
            text=text,
            text_score=1.0,
            text_status=None if self.reads_text else "off",  # None: ok or empty, by the text
            source=self.name,
        )

    def _labels(self, response: vision.AnnotateImageResponse) -> tuple[Label, ...]:
        # Scores travel as float32; rounding turns 0.9700000286 back into the 0.97 Vision meant.
        found = [
            Label(annotation.description, round(annotation.score, 4), self.name)
            for annotation in response.label_annotations
        ]
        kept = [label for label in found if label.score >= self._min_score]
        kept.sort(key=lambda label: label.score, reverse=True)
        return tuple(kept[: self._max_results])

    def _safe_search_verdict(self, response: vision.AnnotateImageResponse) -> dict[str, str]:
        if not self._safe_search or "safe_search_annotation" not in response:
            return {}
        annotation = response.safe_search_annotation
        return {
            category: _likelihood_name(getattr(annotation, category))
            for category in SAFE_SEARCH_CATEGORIES
        }


def _faces(response: vision.AnnotateImageResponse, image: bytes) -> tuple[Box, ...]:
    """Vision's face boxes (pixels of the image sent) as fractions of its size, best first."""
    if not response.face_annotations:
        return ()
    try:
        with pillow_boundary(), open_image(image) as sent:
            width, height = sent.size
    except ImagingError as exc:
        raise LabelerUnavailable(f"image could not be read: {exc}") from exc
    boxes = []
    for face in response.face_annotations:
        # fd_bounding_poly is the face itself; bounding_poly adds the whole head and more.
        vertices = face.fd_bounding_poly.vertices or face.bounding_poly.vertices
        if not vertices:
            continue
        xs = [min(max(v.x, 0), width) for v in vertices]
        ys = [min(max(v.y, 0), height) for v in vertices]
        boxes.append(
            Box(
                left=round(min(xs) / width, 4),
                top=round(min(ys) / height, 4),
                width=round((max(xs) - min(xs)) / width, 4),
                height=round((max(ys) - min(ys)) / height, 4),
                score=round(face.detection_confidence, 4),
            )
        )
    boxes.sort(key=lambda box: box.score, reverse=True)
    return tuple(boxes)


def _likelihood_name(value: int) -> str:
    try:
        return str(vision.Likelihood(value).name)
    except ValueError:  # a value newer than this client library
        return "UNKNOWN"


def _retry_within(timeout: float) -> api_retry.Retry | None:
    """Retry what Google documents as transient (500, 503), but never past ``timeout``.

    Quota (429) and permission (403) errors are not retried: they do not clear in seconds, and
    an upload must not wait for them.
    """
    budget = timeout - _LAST_ATTEMPT_SECONDS
    if budget <= 0:
        return None
    return api_retry.Retry(
        initial=0.1,
        maximum=1.0,
        multiplier=2.0,
        predicate=api_retry.if_exception_type(
            api_exceptions.InternalServerError, api_exceptions.ServiceUnavailable
        ),
        timeout=budget,
    )


class _ResultCache:
    """A thread-safe LRU of results by image digest; concurrent misses for a digest share a call.

    Only successes are kept. Threads that asked for an image while its call was in flight get
    that call's outcome, so a burst of identical uploads costs one request even when it fails.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._results: OrderedDict[str, LabelResult] = OrderedDict()
        self._in_flight: dict[str, Future[LabelResult]] = {}
        self._lock = threading.Lock()

    def get_or_compute(self, key: str, compute: Callable[[], LabelResult]) -> LabelResult:
        with self._lock:
            if key in self._results:
                self._results.move_to_end(key)
                return self._results[key]
            shared = self._in_flight.get(key)
            if shared is None:
                pending: Future[LabelResult] = Future()
                self._in_flight[key] = pending
        if shared is not None:
            try:
                return shared.result()
            except LabelerUnavailable as exc:
                # A fresh exception per thread: one instance raised in many threads would
                # collect all of their tracebacks.
                raise LabelerUnavailable(str(exc)) from exc
        try:
            result = compute()
        except BaseException as exc:
            with self._lock:
                del self._in_flight[key]
            pending.set_exception(exc)
            raise
        with self._lock:
            del self._in_flight[key]
            self._results[key] = result
            if len(self._results) > self._size:
                self._results.popitem(last=False)
        pending.set_result(result)
        return result
