"""A local stand-in for Cloud Vision's REST API, and the ``vision_server`` pytest fixture.

It answers ``POST /v1/images:annotate`` the way the real service does for the JSON that
``google.cloud.vision.ImageAnnotatorClient(transport="rest")`` sends, so the labeler is tested
through the real client library, its transcoding and its error mapping. Each test sets a mode:

- ``"labels"`` (default): the configured ``labels`` (``Cat`` 0.97, ``Whiskers`` 0.9) in the
  order given, at most ``maxResults`` of them as the real API does, plus the configured
  SafeSearch verdict when it was asked for, the configured ``text`` for TEXT_DETECTION and the
  configured ``faces`` (pixel boxes with a confidence) for FACE_DETECTION;
- ``"empty"``: a 200 with an empty annotation, as Vision answers for an image it finds nothing in;
- ``"error"``: ``error_status`` (500, 403, 429, ...) with a Google-style error body; with
  ``fail_times`` set, only that many requests fail and the later ones get labels;
- ``"image-error"``: a 200 whose per-image response carries an ``error`` status;
- ``"slow"``: waits ``slow_seconds`` before answering as "labels" does: longer than the
  client's timeout, but bounded (and cut short at teardown) so the server stops by itself.

Every request is recorded (decoded features, image bytes, query) so tests can count calls and
check what was sent. Whole-app tests point the app at ``vision_server.endpoint`` through
``VISION_API_ENDPOINT``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import pytest

from tests.localhttp import JSONHandler, LocalHTTPServer, ScriptedServer

__all__ = ["DEFAULT_LABELS", "ReceivedRequest", "VisionServer", "vision_server"]

#: What the default mode answers: plausible enough for whole-app tests to show in a gallery.
DEFAULT_LABELS: tuple[tuple[str, float], ...] = (("Cat", 0.97), ("Whiskers", 0.9))

#: The client sends enums as numbers (``$alt=json;enum-encoding=int``); other clients send names.
FEATURE_NAMES: Mapping[int, str] = {
    0: "TYPE_UNSPECIFIED",
    1: "FACE_DETECTION",
    2: "LANDMARK_DETECTION",
    3: "LOGO_DETECTION",
    4: "LABEL_DETECTION",
    5: "TEXT_DETECTION",
    6: "SAFE_SEARCH_DETECTION",
    7: "IMAGE_PROPERTIES",
    9: "CROP_HINTS",
    10: "WEB_DETECTION",
    11: "DOCUMENT_TEXT_DETECTION",
    12: "PRODUCT_SEARCH",
    19: "OBJECT_LOCALIZATION",
}
LIKELIHOODS = ("UNKNOWN", "VERY_UNLIKELY", "UNLIKELY", "POSSIBLE", "LIKELY", "VERY_LIKELY")
SAFE_SEARCH_CATEGORIES = ("adult", "spoof", "medical", "violence", "racy")
#: The API's own default when a feature carries no maxResults.
DEFAULT_MAX_RESULTS = 10
MODES = ("labels", "empty", "error", "image-error", "slow")
#: google.rpc.Code names for the HTTP statuses tests ask for, as the real error body carries them.
RPC_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


@dataclass(frozen=True)
class ReceivedRequest:
    """One image of one annotate call, as the server decoded it."""

    features: dict[str, int | None]  # feature type name -> maxResults (None when not sent)
    image: bytes
    query: str


@dataclass
class VisionServer(ScriptedServer):
    """The running fake; change its attributes between calls to script a test."""

    MODES: ClassVar[tuple[str, ...]] = MODES
    host: str = "127.0.0.1"
    port: int = 0
    mode: str = "labels"
    labels: tuple[tuple[str, float], ...] = DEFAULT_LABELS
    safe_search: dict[str, str] = field(
        default_factory=lambda: dict.fromkeys(SAFE_SEARCH_CATEGORIES, "VERY_UNLIKELY")
    )
    error_status: int = 500
    fail_times: int | None = None  # "error" mode: fail this many calls, then answer; None = all
    slow_seconds: float = 5.0
    honour_max_results: bool = True  # False: answer every label, as a careless proxy might
    text: str = ""  # TEXT_DETECTION's answer; "" = no text found
    faces: tuple[tuple[int, int, int, int, float], ...] = ()  # (left, top, width, height, conf)
    received: list[ReceivedRequest] = field(default_factory=list)
    calls: int = 0  # HTTP calls (one call may carry several images)

    @property
    def endpoint(self) -> str:
        """What VISION_API_ENDPOINT / ``VisionLabeler(endpoint=...)`` should be set to."""
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        """Back to the default mode, labels and SafeSearch answer, with nothing recorded."""
        fresh = VisionServer()
        with self._lock:
            self.mode, self.labels, self.safe_search = fresh.mode, fresh.labels, fresh.safe_search
            self.error_status, self.fail_times = fresh.error_status, fresh.fail_times
            self.slow_seconds = fresh.slow_seconds
            self.honour_max_results = fresh.honour_max_results
            self.text, self.faces = fresh.text, fresh.faces
            self.received.clear()
            self.calls = 0

    def start(self) -> VisionServer:
        self._stopping.clear()
        self._server = LocalHTTPServer(_handler_for(self), port=self.port, poll_interval=0.05)
        self.port = self._server.start().port
        return self

    # --- answering ---------------------------------------------------------------------------

    def answer(self, body: bytes, query: str) -> tuple[int, dict[str, Any]]:
        """The status and JSON for one ``images:annotate`` call."""
        try:
            payload = json.loads(body)
            images = [_decode_image_request(item, query) for item in payload["requests"]]
        except (ValueError, KeyError, TypeError) as exc:
            return 400, _error_body(400, f"Invalid JSON payload received. {exc}")
        with self._lock:
            self.calls += 1
            self.received.extend(images)
            mode, labels, safe_search = self.mode, self.labels, dict(self.safe_search)
            status, slow_seconds = self.error_status, self.slow_seconds
            honour_max_results = self.honour_max_results
            text, faces = self.text, self.faces
            if mode == "error" and self.fail_times is not None:
                if self.fail_times > 0:
                    self.fail_times -= 1
                else:
                    mode = "labels"
        if mode == "error":
            return status, _error_body(status, "The fake Vision server was told to fail.")
        if mode == "slow":
            self._stopping.wait(slow_seconds)
        numeric = "enum-encoding=int" in query
        responses = []
        for image in images:
            response: dict[str, Any] = {}
            if mode == "image-error":
                response["error"] = {"code": 3, "message": "Bad image data."}
            elif mode != "empty":
                response.update(
                    _annotations(
                        image,
                        labels,
                        safe_search,
                        text=text,
                        faces=faces,
                        numeric=numeric,
                        honour_max_results=honour_max_results,
                    )
                )
            responses.append(response)
        return 200, {"responses": responses}


def _decode_image_request(item: Mapping[str, Any], query: str) -> ReceivedRequest:
    features: dict[str, int | None] = {}
    for feature in item.get("features", []):
        kind = feature.get("type", 0)
        name = FEATURE_NAMES.get(kind, f"TYPE_{kind}") if isinstance(kind, int) else str(kind)
        raw = feature.get("maxResults")
        features[name] = None if raw is None else int(raw)  # proto3 JSON may quote int32s
    content = item.get("image", {}).get("content", "")
    return ReceivedRequest(features=features, image=base64.b64decode(content), query=query)


def _annotations(
    image: ReceivedRequest,
    labels: tuple[tuple[str, float], ...],
    safe_search: Mapping[str, str],
    *,
    text: str,
    faces: tuple[tuple[int, int, int, int, float], ...],
    numeric: bool,
    honour_max_results: bool,
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if "LABEL_DETECTION" in image.features:
        limit = image.features["LABEL_DETECTION"] or DEFAULT_MAX_RESULTS
        # Kept in the configured order (not sorted) so tests can check the client's own ordering.
        ranked = labels[:limit] if honour_max_results else labels
        found["labelAnnotations"] = [
            {
                "mid": f"/m/fake{index}",
                "description": description,
                "score": score,
                "topicality": score,
            }
            for index, (description, score) in enumerate(ranked)
        ]
    if "TEXT_DETECTION" in image.features and text:
        # As the real API: the whole text first, then each word on its own.
        found["textAnnotations"] = [{"locale": "en", "description": text}] + [
            {"description": word} for word in text.split()
        ]
    if "FACE_DETECTION" in image.features and faces:
        limit = image.features["FACE_DETECTION"] or DEFAULT_MAX_RESULTS
        found["faceAnnotations"] = [
            {
                # The head (larger) and the face itself, as Vision gives both.
                "boundingPoly": {
                    "vertices": _vertices(left - 10, top - 20, width + 20, height + 30)
                },
                "fdBoundingPoly": {"vertices": _vertices(left, top, width, height)},
                "detectionConfidence": confidence,
            }
            for left, top, width, height, confidence in faces[:limit]
        ]
    if "SAFE_SEARCH_DETECTION" in image.features:
        found["safeSearchAnnotation"] = {
            category: LIKELIHOODS.index(value) if numeric else value
            for category, value in safe_search.items()
        }
    return found


def _vertices(left: int, top: int, width: int, height: int) -> list[dict[str, int]]:
    # Vision leaves out a coordinate that is 0 (proto3 JSON), and so does this.
    corners = [(left, top), (left + width, top), (left + width, top + height), (left, top + height)]
    return [{k: v for k, v in (("x", x), ("y", y)) if v} for x, y in corners]


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": status,
            "message": message,
            "status": RPC_STATUS.get(status, "UNKNOWN"),
        }
    }


def _handler_for(server: VisionServer) -> type[BaseHTTPRequestHandler]:
    class Handler(JSONHandler):
        # Keep-alive like the real front end, so the client's connection pool is exercised.
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if url.path != "/v1/images:annotate":
                self.send_json(404, _error_body(404, f"No route for {url.path}"))
                return
            status, answer = server.answer(body, unquote(url.query))
            self.send_json(status, answer)

    return Handler


@pytest.fixture
def vision_server() -> Iterator[VisionServer]:
    """A fresh fake Vision server on a free 127.0.0.1 port, stopped after the test."""
    server = VisionServer().start()
    try:
        yield server
    finally:
        server.stop()
