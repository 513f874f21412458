"""The tests' local stand-in servers (Vision, Gemini, Cloud Tasks, an OIDC issuer) share this
plumbing: a threaded HTTP server on 127.0.0.1 in a background thread, quiet JSON answers, and
(``ScriptedServer``) the modes a test switches a Google API stand-in between."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar


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


@dataclass
class ScriptedServer:
    """A stand-in a test scripts between calls: ``set_mode`` switches what it answers (one of
    the subclass's ``MODES``) and sets any of its options, under its lock; ``stop()`` wakes the
    handlers a "slow" mode keeps asleep, then stops the server a subclass's ``start()`` made."""

    MODES: ClassVar[tuple[str, ...]] = ()
    mode: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)
    _server: LocalHTTPServer | None = field(default=None, repr=False)

    def set_mode(self, mode: str, **options: Any) -> None:
        """Switch mode (one of MODES) and set any other attribute, e.g. ``error_status=429``."""
        if mode not in self.MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(self.MODES)}")
        with self._lock:
            self.mode = mode
            for name, value in options.items():
                if name.startswith("_") or not hasattr(self, name):
                    raise AttributeError(f"{type(self).__name__} has no option {name!r}")
                setattr(self, name, value)

    def stop(self) -> None:
        self._stopping.set()  # wakes "slow" handlers
        if self._server is not None:
            self._server.stop()
        self._server = None
