"""A local stand-in for Gemini's REST API, and the ``gemini_server`` pytest fixture.

It answers ``POST /<version>/models/<model>:generateContent`` (the Gemini API's path; Vertex
AI's adds ``projects/<p>/locations/<l>/publishers/google/``) the way the real service does for
what ``google-genai``'s client sends, so the captioner is tested through the real client
library. Each test sets a mode:

- ``"caption"`` (default): a candidate whose text is ``caption``;
- ``"error"``: ``error_status`` with a Google-style error body;
- ``"garbage"``: a 200 whose body is not JSON;
- ``"slow"``: waits ``slow_seconds`` before answering as "caption" does (cut short at teardown).

Every request is recorded (path, headers, JSON body) so tests can count calls and check what
was sent. Whole-app tests point the app at ``gemini_server.endpoint`` through CAPTION_ENDPOINT.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest

from tests.localhttp import JSONHandler, LocalHTTPServer, ScriptedServer

__all__ = ["GeminiServer", "Received", "gemini_server"]

MODES = ("caption", "error", "garbage", "slow")


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    def image(self) -> bytes:
        """The inline image of the request (the client sends it base64url-encoded)."""
        for content in self.body["contents"]:
            for part in content["parts"]:
                inline = part.get("inlineData") or part.get("inline_data")
                if inline:
                    return base64.urlsafe_b64decode(inline["data"] + "==")
        raise AssertionError("no image in the request")

    def prompt(self) -> str:
        return " ".join(
            part["text"]
            for content in self.body["contents"]
            for part in content["parts"]
            if "text" in part
        )


@dataclass
class GeminiServer(ScriptedServer):
    MODES: ClassVar[tuple[str, ...]] = MODES
    mode: str = "caption"
    caption: str = "A tabby cat asleep on a red sofa."
    error_status: int = 500
    slow_seconds: float = 5.0
    received: list[Received] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        """What CAPTION_ENDPOINT / ``GeminiCaptioner(endpoint=...)`` should be set to."""
        assert self._server is not None, "start() the server first"
        return self._server.url

    def start(self) -> GeminiServer:
        self._stopping.clear()
        self._server = LocalHTTPServer(_handler_for(self), poll_interval=0.05).start()
        return self

    def answer(self, handler: JSONHandler, path: str, body: bytes) -> None:
        try:
            payload = json.loads(body)
        except ValueError:
            handler.send_json(400, _error(400, "Invalid JSON payload received."))
            return
        with self._lock:
            self.received.append(Received(path, dict(handler.headers.items()), payload))
            mode, caption = self.mode, self.caption
            status, slow_seconds = self.error_status, self.slow_seconds
        if mode == "error":
            handler.send_json(status, _error(status, "The stand-in was told to fail."))
            return
        if mode == "garbage":
            data = b"<html>not json"
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        if mode == "slow":
            self._stopping.wait(slow_seconds)
        handler.send_json(
            200,
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": caption}]},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {"promptTokenCount": 300, "candidatesTokenCount": 12},
                "modelVersion": path.rsplit("/", 1)[-1].split(":")[0],
            },
        )


def _error(status: int, message: str) -> dict[str, Any]:
    names = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED"}
    return {"error": {"code": status, "message": message, "status": names.get(status, "INTERNAL")}}


def _handler_for(server: GeminiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(JSONHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not self.path.split("?")[0].endswith(":generateContent"):
                self.send_json(404, _error(404, f"No route for {self.path}"))
                return
            server.answer(self, self.path, body)

    return Handler


@pytest.fixture
def gemini_server() -> Iterator[GeminiServer]:
    """A fresh Gemini stand-in on a free 127.0.0.1 port, stopped after the test."""
    server = GeminiServer().start()
    try:
        yield server
    finally:
        server.stop()
