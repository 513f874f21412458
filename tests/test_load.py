"""Load: the production server (gunicorn + gunicorn.conf.py) under 16 concurrent clients.

200 distinct JPEG uploads, mixed with gallery reads, from 16 client threads against the app
started exactly as the container starts it. Afterwards every accepted upload must be in the
catalog with every variant readable, and the only 5xx allowed is the documented 503 (every
conversion slot busy, or storage unavailable) with Retry-After. Throughput and latency are
printed as figures, never asserted; ``RECORD_FIGURES=<file>`` also writes them there as
Markdown (the README's "Load" table comes from such a run).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import platform
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from benchmarks.machine import cpu_model

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
UPLOADS = 200
CLIENTS = 16
READ_EVERY = 3  # one gallery read after every third upload
FORMATS = "webp,jpeg"
#: The whole run (start, load, checks) must end within this, whatever the machine.
DEADLINE_SECONDS = 150.0
REQUEST_TIMEOUT = 60.0


@dataclass(frozen=True)
class Outcome:
    kind: str  # "upload" | "read"
    status: int
    seconds: float
    retry_after: str | None
    body: bytes


class Server:
    """A running gunicorn and a pool of keep-alive connections to it, shared by the clients."""

    def __init__(self, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.process = process
        self.log = log
        self._idle: queue.SimpleQueue[http.client.HTTPConnection] = queue.SimpleQueue()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        timeout: float = REQUEST_TIMEOUT,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request on an idle pooled connection, reopened if the server had closed it."""
        for attempt in range(2):
            conn = self._borrow(timeout)
            try:
                conn.request(method, path, body=body, headers=headers or {})
                response = conn.getresponse()
                data = response.read()
            except OSError as exc:
                # A broken connection is useless afterwards; a keep-alive one the server
                # closed between requests is worth one fresh attempt.
                conn.close()
                stale = isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError)
                if attempt or not stale:
                    raise
                continue
            if response.will_close:
                conn.close()
            self._idle.put(conn)  # a closed one reconnects by itself on its next request
            return response.status, response.headers, data
        raise AssertionError("unreachable")

    def _borrow(self, timeout: float) -> http.client.HTTPConnection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            with self._lock:
                self._all.append(conn)
            return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def photo(index: int) -> bytes:
    """A JPEG unlike every other one: its own size (200x150 to 800x600) and colours."""
    width = 200 + (index * 37) % 601
    height = 150 + (index * 53) % 451
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = (x + 0 * y).astype(np.uint8)
    pixels[..., 1] = (y + 0 * x).astype(np.uint8)
    pixels[..., 2] = (index * 37) % 256
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def multipart(data: bytes, name: str) -> tuple[bytes, str]:
    boundary = f"load-{os.urandom(8).hex()}"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="format"\r\n\r\n{FORMATS}\r\n',
        f"--{boundary}\r\nContent-Disposition: form-data; "
        f'name="image"; filename="{name}"\r\nContent-Type: image/jpeg\r\n\r\n',
    ]
    body = "".join(parts).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Server]:
    """The app as the container runs it, on a free port, with local storage and no labeler."""
    port = free_port()
    env = {
        **os.environ,
        "STORAGE_BACKEND": "local",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "LABELER": "none",
        "SECRET_KEY": "x",
        "PORT": str(port),
        # Empty values win over a developer's .env (dotenv never overrides what is set).
        "UPLOAD_TOKEN": "",
        "RATE_LIMIT": "",
        "ADMIN_TOKEN": "",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    env.pop("K_SERVICE", None)
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                "gunicorn.conf.py",
                "cloud_image_app:create_app()",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(port, process, log)
    try:
        wait_until_ready(server, timeout=60.0)
        yield server
    finally:
        server.close()
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def wait_until_ready(server: Server, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"gunicorn exited at start:\n{server.log.read_text()[-4000:]}")
        try:
            status, _, _ = server.request("GET", "/readyz", timeout=2.0)
        except OSError:
            status = 0
        if status == 200:
            return
        time.sleep(0.2)
    pytest.fail(f"gunicorn not ready in {timeout:.0f}s:\n{server.log.read_text()[-4000:]}")


def upload(server: Server, data: bytes, name: str) -> Outcome:
    body, content_type = multipart(data, name)
    started = time.perf_counter()
    status, headers, answer = server.request(
        "POST",
        "/api/images",
        body,
        {"Content-Type": content_type, "Accept": "application/json"},
    )
    return Outcome(
        "upload", status, time.perf_counter() - started, headers.get("Retry-After"), answer
    )


def read(server: Server, index: int) -> Outcome:
    path = "/api/images?limit=24" if index % 2 else "/"
    started = time.perf_counter()
    status, headers, answer = server.request("GET", path)
    return Outcome(
        "read", status, time.perf_counter() - started, headers.get("Retry-After"), answer
    )


def catalog_ids(server: Server) -> list[str]:
    """Every id the gallery lists, paging with the cursor until the end."""
    ids: list[str] = []
    cursor = ""
    for _ in range(UPLOADS):  # bounded: at most one page per upload
        status, _, body = server.request("GET", f"/api/images?limit=100&cursor={cursor}")
        assert status == 200, body[:500]
        page = json.loads(body)
        ids += [image["id"] for image in page["images"]]
        cursor = page["next_cursor"] or ""
        if not cursor:
            return ids
    raise AssertionError("the gallery never reached its last page")


def variant_problems(server: Server, image: dict[str, Any]) -> list[str]:
    problems = []
    for variant in [*image["variants"], image["thumbnail"]]:
        status, headers, data = server.request("GET", urlsplit(variant["url"]).path)
        if status != 200 or headers.get("Content-Type") != variant["content_type"]:
            problems.append(f"{variant['url']}: {status} {headers.get('Content-Type')}")
        elif len(data) != variant["bytes"]:
            problems.append(f"{variant['url']}: {len(data)} bytes, record says {variant['bytes']}")
    return problems


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def test_two_hundred_concurrent_uploads_all_land_complete_in_the_gallery(
    gunicorn: Server,
) -> None:
    started_run = time.monotonic()
    load_before = os.getloadavg()[0]
    photos = [photo(index) for index in range(UPLOADS)]
    assert len(set(photos)) == UPLOADS

    outcomes: list[Outcome] = []
    load_started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CLIENTS, thread_name_prefix="client") as pool:
        futures = []
        for index, data in enumerate(photos):
            futures.append(pool.submit(upload, gunicorn, data, f"load-{index:03d}.jpg"))
            if index % READ_EVERY == READ_EVERY - 1:
                futures.append(pool.submit(read, gunicorn, index))
        remaining = DEADLINE_SECONDS - (time.monotonic() - started_run)
        for future in as_completed(futures, timeout=remaining):
            outcomes.append(future.result())
    load_seconds = time.perf_counter() - load_started

    uploads = [o for o in outcomes if o.kind == "upload"]
    reads = [o for o in outcomes if o.kind == "read"]
    created = [json.loads(o.body) for o in uploads if o.status == 201]
    refused = [o for o in uploads if o.status != 201]
    for outcome in refused:
        assert outcome.status == 503, outcome.body[:500]
        assert outcome.retry_after, outcome.body[:500]
        assert json.loads(outcome.body)["error"] in ("busy", "storage_unavailable")
    assert [o.status for o in reads] == [200] * len(reads)
    assert created, "no upload was accepted"

    listed = catalog_ids(gunicorn)
    assert sorted(listed) == sorted(image["id"] for image in created)
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        problems = [
            p for found in pool.map(lambda i: variant_problems(gunicorn, i), created) for p in found
        ]
    assert problems == []

    figures = Figures(
        uploads=len(uploads),
        accepted=len(created),
        busy=len(refused),
        reads=len(reads),
        seconds=load_seconds,
        upload_p50=percentile([o.seconds for o in uploads], 0.50),
        upload_p95=percentile([o.seconds for o in uploads], 0.95),
        read_p95=percentile([o.seconds for o in reads], 0.95),
        source_bytes=sum(len(p) for p in photos),
        load=load_before,
    )
    print(figures.summary())
    if record := os.environ.get("RECORD_FIGURES"):
        Path(record).write_text(figures.markdown())


@dataclass(frozen=True)
class Figures:
    uploads: int
    accepted: int
    busy: int
    reads: int
    seconds: float
    upload_p50: float
    upload_p95: float
    read_p95: float
    source_bytes: int
    load: float  # what else the machine was doing: shared CI runners vary a lot

    @property
    def throughput(self) -> float:
        return self.accepted / self.seconds

    def summary(self) -> str:
        return (
            f"\n{self.accepted}/{self.uploads} uploads accepted ({self.busy} busy 503) and "
            f"{self.reads} gallery reads in {self.seconds:.1f}s with {CLIENTS} clients on "
            f"{os.cpu_count()} CPUs: {self.throughput:.1f} uploads/s, upload latency "
            f"p50 {self.upload_p50 * 1000:.0f} ms, p95 {self.upload_p95 * 1000:.0f} ms; "
            f"gallery read p95 {self.read_p95 * 1000:.0f} ms (load average {self.load:.1f})"
        )

    def markdown(self) -> str:
        cpu = cpu_model()
        return f"""# Load figures

Measured by `tests/test_load.py` (`RECORD_FIGURES=load.md .venv/bin/pytest tests/test_load.py`
writes this table). Figures, not promises: they depend on the machine and on what else runs.

The production server, started as the container starts it
(`gunicorn --config gunicorn.conf.py 'cloud_image_app:create_app()'`: one worker per CPU,
8 threads each), with `STORAGE_BACKEND=local` and `LABELER=none`. {CLIENTS} client threads send
{self.uploads} distinct JPEGs (200×150 to 800×600, {self.source_bytes / 1e6:.1f} MB in all), each
converted to WebP and JPEG plus a thumbnail, mixed with {self.reads} gallery reads
(`GET /` and `GET /api/images`).

| | |
|---|---|
| machine | {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, {platform.system()} |
| measured | {datetime.now(UTC):%Y-%m-%d}, load average {self.load:.1f} before the run |
| uploads accepted | {self.accepted} of {self.uploads} ({self.busy} got 503 with Retry-After) |
| throughput | **{self.throughput:.1f} uploads/s** |
| upload latency | p50 {self.upload_p50 * 1000:.0f} ms, **p95 {self.upload_p95 * 1000:.0f} ms** |
| gallery read latency | p95 {self.read_p95 * 1000:.0f} ms |

Afterwards every accepted upload was in the gallery with every variant readable (status 200,
the recorded content type and size), and no request got a 5xx other than a 503 with Retry-After.
Labelling is off here: with the local labeler each upload also runs the ONNX model on its
label-size copy, concurrently with encoding, and Cloud Vision adds one network round trip.
"""
