"""The tests' local stand-in servers (Vision, Cloud Tasks, an OIDC issuer) share this plumbing:
a threaded HTTP server on 127.0.0.1 in a background thread, and quiet JSON answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LocalHTTPServer:
    """Serves ``handler`` on 127.0.0.1 (a free port unless one is given) until ``stop()``."""

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], *, port: int = 0, poll_interval: float = 0.5
    ) -> None:
        self._handler = handler
        self._port = port
        self._poll_interval = poll_interval
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() the server first"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalHTTPServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", self._port), self._handler)
        # A handler still asleep (a "slow" mode) must not hold the test run up at shutdown.
        httpd.daemon_threads = True
        httpd.block_on_close = False
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": self._poll_interval}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None


class JSONHandler(BaseHTTPRequestHandler):
    """Answers with JSON; logs nothing (the test output is for the tests)."""

    def send_json(
        self, status: int, answer: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(answer).encode()
        try:
            self.send_response(status, HTTPStatus(status).phrase)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            # The client gave up first (a "slow" mode's whole point): nothing left to answer.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""
