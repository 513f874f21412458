"""Direct PUTs to LocalStore under the production server: the Dockerfile's command (gunicorn,
gthread), one worker, on 127.0.0.1 (tests/container.py).

What only a real server shows: the worker's memory while a 150 MiB body arrives (it goes to disk
in chunks, so the worker's peak barely moves), the per-process cap on PUTs in flight (slow
clients hold their threads; one more is told to come back later), and clients that go away
half way (gunicorn just ends a body shorter than its Content-Length; nothing may be kept), and
bodies whose chunked framing breaks half way (gunicorn's reader raises its own error).
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.container import Container, start_container, stop, wait_until
from tests.images import png

MiB = 1024 * 1024
PUT_CAP = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    running = start_container(
        tmp_path_factory.mktemp("direct-puts"),
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS="8",
        DIRECT_UPLOAD_MAX_PUTS=str(PUT_CAP),
    )
    yield running
    stop(running)


@pytest.fixture
def tmp_folder(server: Container) -> Iterator[Path]:
    """The store's tmp/ folder, emptied after each test (a 150 MiB file should not linger)."""
    folder = server.media_root / "tmp"
    yield folder
    for path in folder.glob("*") if folder.is_dir() else []:
        path.unlink()


# -- helpers -------------------------------------------------------------------------------------
def ticket(server: Container, size: int) -> dict[str, Any]:
    response = requests.post(
        f"{server.url}/api/uploads", json={"content_type": "image/png", "size": size}, timeout=30
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def target(server: Container, ticket: dict[str, Any]) -> str:
    url = urlsplit(ticket["url"])
    return f"{url.path}?{url.query}"


def address(server: Container) -> tuple[str, int]:
    url = urlsplit(server.url)
    assert url.hostname is not None
    assert url.port is not None
    return url.hostname, url.port


def the_worker(server: Container) -> int:
    """The pid of gunicorn's one worker (the master's only child)."""
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def peak_rss(pid: int) -> int:
    """The process's resident-memory high-water mark (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def put_streamed(server: Container, ticket: dict[str, Any], size: int) -> tuple[int, Any]:
    """PUT ``size`` bytes with a Content-Length, made 1 MiB at a time (never whole here)."""

    def body() -> Iterator[bytes]:
        piece = bytes(range(256)) * (MiB // 256)
        for sent in range(0, size, MiB):
            yield piece[: min(MiB, size - sent)]

    connection = http.client.HTTPConnection(*address(server), timeout=180)
    try:
        connection.request(
            "PUT",
            target(server, ticket),
            body=body(),
            headers={**ticket["headers"], "Content-Length": str(size)},
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def start_slow_put(
    server: Container, ticket: dict[str, Any], size: int, sent: int
) -> socket.socket:
    """A PUT announcing ``size`` bytes that sends ``sent`` of them, then waits."""
    host, port = address(server)
    sock = socket.create_connection((host, port), timeout=30)
    head = (
        f"PUT {target(server, ticket)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: {ticket['headers']['Content-Type']}\r\nContent-Length: {size}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"\x89" * sent)
    return sock


def writes_in_progress(folder: Path) -> list[Path]:
    return list(folder.glob(".tmp-*")) if folder.is_dir() else []


# -- memory ----------------------------------------------------------------------------------------
def test_a_150_mib_put_barely_raises_the_workers_peak_memory(
    server: Container, tmp_folder: Path
) -> None:
    """The body goes to disk a chunk at a time: it once raised the worker's peak by ~150 MB."""
    worker = the_worker(server)
    # A small PUT first, so whatever the PUT path imports or caches is in the baseline.
    warm = ticket(server, 4 * MiB)
    assert put_streamed(server, warm, 4 * MiB)[0] == 201
    before = peak_rss(worker)

    size = 150 * MiB
    big = ticket(server, size)
    status, body = put_streamed(server, big, size)

    assert status == 201, body
    assert body["bytes"] == size
    assert (tmp_folder / big["upload_id"]).stat().st_size == size
    growth = peak_rss(worker) - before
    # A memory bound, not a time: a few 1 MiB chunks in flight, never the 150 MiB body.
    assert growth < 40 * MiB, f"the worker's peak grew by {growth / MiB:.0f} MiB"


# -- the cap on PUTs in flight ---------------------------------------------------------------------
def test_a_put_over_the_per_process_cap_is_503_with_retry_after(
    server: Container, tmp_folder: Path
) -> None:
    data = png(64, 64)
    slow = [ticket(server, 2 * MiB) for _ in range(PUT_CAP)]
    sockets = [start_slow_put(server, t, 2 * MiB, 64 * 1024) for t in slow]
    try:
        wait_until(
            lambda: len(writes_in_progress(tmp_folder)) == PUT_CAP, 60, "the slow PUTs to start"
        )
        extra = ticket(server, len(data))
        refused = requests.put(extra["url"], data=data, headers=extra["headers"], timeout=30)
        assert refused.status_code == 503
        assert refused.json()["error"] == "busy"
        assert int(refused.headers["Retry-After"]) > 0
        # Other requests still answer: the cap is on PUTs, not on the worker.
        assert requests.get(f"{server.url}/healthz", timeout=30).status_code == 200
    finally:
        for sock in sockets:
            sock.close()
    # The slow clients went away: their slots come back, and the refused URL was not spent.
    wait_until(lambda: not writes_in_progress(tmp_folder), 60, "the cut-off PUTs to clean up")
    retried = requests.put(extra["url"], data=data, headers=extra["headers"], timeout=30)
    assert retried.status_code == 201, retried.text


# -- clients that go away --------------------------------------------------------------------------
def test_a_client_that_goes_away_half_way_leaves_nothing(
    server: Container, tmp_folder: Path
) -> None:
    """gunicorn ends a body cut short without an error: the app must notice, and keep nothing."""
    size = 8 * MiB
    cut = ticket(server, size)
    sock = start_slow_put(server, cut, size, size // 2)
    wait_until(lambda: bool(writes_in_progress(tmp_folder)), 60, "the PUT to start")
    sock.close()

    wait_until(lambda: not writes_in_progress(tmp_folder), 60, "the cut-off PUT to clean up")
    assert not (tmp_folder / cut["upload_id"]).exists()
    assert list(tmp_folder.iterdir()) == []
    # The claim was given back: the same URL takes the whole file.
    status, body = put_streamed(server, cut, size)
    assert status == 201, body
    assert body["bytes"] == size
    # A refusal, not a crash.
    assert "Traceback" not in server.logs()


def test_a_put_whose_chunked_framing_breaks_half_way_is_400_and_leaves_nothing(
    server: Container, tmp_folder: Path
) -> None:
    """A bad chunk size after 2 MiB: gunicorn's reader raises its own error mid-stream, which
    the app answers as the client's 400 (``bad_body``), keeping nothing and giving the URL back."""
    size = 4 * MiB
    broken = ticket(server, size)
    host, port = address(server)
    head = (
        f"PUT {target(server, broken)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: {broken['headers']['Content-Type']}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    half = b"\x89" * (2 * MiB)
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(head.encode() + f"{len(half):x}\r\n".encode() + half + b"\r\nZZZ\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"400", answer[:300]
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"] == "bad_body"
    assert answer.count(b"HTTP/1.1 ") == 1

    wait_until(lambda: not writes_in_progress(tmp_folder), 60, "the broken PUT to clean up")
    assert not tmp_folder.is_dir() or list(tmp_folder.iterdir()) == []
    status, body = put_streamed(server, broken, size)
    assert status == 201, body
    assert "Traceback" not in server.logs()
