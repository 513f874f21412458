"""``make run``'s server: ``python cloud_image_app.py``, Werkzeug's development server on the
embedded defaults, started as the Makefile starts it (a child with its own environment).

The container's server (gunicorn) is tested in tests/test_container.py; this is the first thing
a newcomer runs, so it is tested for what they see: it serves an upload and the gallery, its log
is plain lines (no escaped colour codes, the banner one line a record) that still escape what a
client sends, and a bad setting stops it with the setting's message, not a traceback.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask, Response

from tests import images
from tests.conftest import LiveServer
from tests.container import (
    REQUEST_WAIT,
    ROOT,
    STARTUP_WAIT,
    free_port,
    get,
    post_image,
    wait_healthy,
    wait_until,
)


@dataclass
class DevServer:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


def environment(tmp: Path, **env: str) -> dict[str, str]:
    """The caller's environment without the app's settings (a developer's shell may hold some),
    on local storage with the labels off."""
    outer = {k: v for k, v in os.environ.items() if not k.startswith("K_")}  # K_: Cloud Run
    for name in ("STORAGE_BACKEND", "GCS_BUCKET", "LABELER", "LOG_FORMAT", "HOST", "PORT"):
        outer.pop(name, None)
    return {
        **outer,
        "HOME": str(tmp),
        "MEDIA_ROOT": str(tmp / "media"),
        "LABELER": "none",
        "SECRET_KEY": "dev-server-test",
        **env,
    }


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[DevServer]:
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "cloud_image_app.py"],
            cwd=ROOT,
            env=environment(tmp_path, PORT=str(port)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = DevServer(process, f"http://127.0.0.1:{port}", port, log)
    try:
        wait_healthy(process, server.url, log.read_text, "the development server")
        yield server
    finally:
        process.terminate()
        process.wait(timeout=REQUEST_WAIT)


def test_make_runs_server_takes_an_upload_and_shows_it(dev_server: DevServer) -> None:
    status, _, body = post_image(dev_server.url, images.jpeg(320, 240), format="webp")
    assert status == 201, body
    status, page = get(f"{dev_server.url}/")
    assert status == 200
    assert body["id"].encode() in page
    status, webp = get(body["variants"][0]["url"])
    assert status == 200
    assert webp[8:12] == b"WEBP"


def send_raw(port: int, request: bytes) -> None:
    """Send ``request`` as it is and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_WAIT) as s:
        s.sendall(request)
        while s.recv(65536):
            pass


def test_make_runs_log_is_plain_lines_that_escape_what_a_client_sends(
    dev_server: DevServer,
) -> None:
    assert get(f"{dev_server.url}/missing")[0] == 404
    # A raw ESC and line break in the request target: no client library sends those, a client
    # on a socket can.
    send_raw(
        dev_server.port, b"GET /a\x1b[31mb%0aFAKE HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    send_raw(dev_server.port, b"GARBAGE\r\n\r\n")
    wait_until(lambda: any("FAKE" in line for line in dev_server.lines()), 10, "the log line")
    wait_until(lambda: any("GARBAGE" in line for line in dev_server.lines()), 10, "the error")

    lines = dev_server.lines()
    text = "\n".join(lines)
    assert "\x1b" not in text
    banner = [line for line in lines if "werkzeug" in line and "Running on" in line]
    assert [line.partition(" werkzeug ")[2] for line in banner] == [
        f"* Running on {dev_server.url}"
    ], text
    assert any(line.endswith("production WSGI server instead.") for line in lines), text
    assert "\\x1b[0m" not in text, text
    assert "\\n * Running" not in text, text
    # One line a request, the app's: Werkzeug's own duplicate is dropped
    assert [line for line in lines if "/missing" in line] == [
        next(line for line in lines if "imaging.request GET /missing 404" in line)
    ], text
    # A request Werkzeug refuses before the app sees it still says so, without colour
    assert any("code 400, message Bad request syntax ('GARBAGE')" in line for line in lines), text
    # What the client sent is still escaped onto its own line
    assert not any(line.startswith("FAKE") for line in lines), text
    assert any("imaging.request GET /a\\x1b[31mb\\nFAKE 404" in line for line in lines), text


def test_a_bad_setting_stops_make_run_with_its_message(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "cloud_image_app.py"],
        cwd=ROOT,
        env=environment(tmp_path, PORT=str(free_port()), STORAGE_BACKEND="floppy"),
        capture_output=True,
        timeout=STARTUP_WAIT,
    )
    assert done.returncode != 0
    err = done.stderr.decode()
    assert "STORAGE_BACKEND" in err, err
    assert "Traceback" not in err + done.stdout.decode(), err


def test_the_live_test_server_closes_a_response_the_client_dropped(
    serve: Callable[[Flask], LiveServer],
) -> None:
    """The browser tests' server (conftest's ``serve``, Werkzeug's as well) closes a response
    whose client went away: Werkzeug's own handler leaves it unclosed when the connection
    resets while it discards an unread body after the answer, and a static file left open that
    way failed a browser test at random (a ResourceWarning)."""
    closed = threading.Event()
    app = Flask(__name__)

    @app.get("/small")
    def small() -> Response:
        response = Response(b"ok", mimetype="text/plain")
        response.call_on_close(closed.set)
        return response

    port = int(serve(app).url.rpartition(":")[2])
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_WAIT) as s:
        # a body the app never reads, cut short: Werkzeug waits for the rest of it
        s.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"y" * 10)
        answer = b""
        while not answer.endswith(b"ok"):
            answer += s.recv(1024)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset
    assert closed.wait(timeout=10), "the dropped response was never closed"
