"""Abuse limits: files per request, one upload budget per client charged by work, shared storage.

The shared case runs against a real Redis server (Debian ``redis-server``, installed by
scripts/install-system-deps), started per test on a free 127.0.0.1 port with no persistence.
"""

from __future__ import annotations

import io
import itertools
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from imaging.config import Settings, SettingsError
from imaging.services import services_of
from tests import images
from tests.conftest import AppFactory
from tests.uploads import post_image

API = "/api/images"


SIZES = itertools.count(40)


def files(count: int) -> list[tuple[io.BytesIO, str]]:
    """``count`` small JPEGs, each of a new size (so none is a duplicate of an earlier one)."""
    return [(io.BytesIO(images.jpeg(next(SIZES), 30)), f"f{i}.jpg") for i in range(count)]


def post_files(client: FlaskClient, url: str, count: int, **fields: Any) -> Any:
    return client.post(
        url, data={"image": files(count), **fields}, content_type="multipart/form-data"
    )


def csrf(client: FlaskClient) -> str:
    page = client.get("/upload").get_data(as_text=True)
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', page
    )
    assert match
    return match.group(1)


def page_post(client: FlaskClient, count: int = 1, **headers: str) -> Any:
    token = csrf(client)
    return client.post(
        "/upload",
        data={"image": files(count), "csrf_token": token},
        content_type="multipart/form-data",
        headers={"Accept": "application/json", **headers},
    )


def direct_complete(client: FlaskClient, data: bytes, **options: Any) -> Any:
    response = client.post("/api/uploads", json={"content_type": "image/png", "size": len(data)})
    assert response.status_code == 201, response.get_data(as_text=True)
    ticket = response.get_json()
    put_url = ticket["url"].split("://", 1)[1].split("/", 1)[1]
    assert client.put("/" + put_url, data=data, headers=ticket["headers"]).status_code == 201
    return client.post(
        ticket["complete_url"],
        data=options,
        headers={"X-Completion-Key": ticket["completion_key"]},
    )


def record_count(client: FlaskClient) -> int:
    return len(services_of(client.application).catalog.page(cursor=None, limit=100).records)


# -- files per request -------------------------------------------------------------------------
@pytest.mark.parametrize("url", [API, "/convert"])
def test_more_files_than_the_cap_get_413_before_any_conversion(
    make_app: AppFactory, url: str
) -> None:
    client = make_app(max_files_per_request=2).test_client()
    response = post_files(client, url, 3)
    assert response.status_code == 413
    assert response.get_json()["message"] == "Send at most 2 files in one request (this one has 3)."
    assert record_count(client) == 0


def test_the_upload_page_holds_the_same_file_cap(make_app: AppFactory) -> None:
    client = make_app(max_files_per_request=2).test_client()
    response = page_post(client, 3, Accept="text/html")
    assert response.status_code == 413
    assert "Send at most 2 files in one request" in response.get_data(as_text=True)
    assert record_count(client) == 0


def test_files_up_to_the_cap_are_all_converted(make_app: AppFactory) -> None:
    client = make_app(max_files_per_request=2).test_client()
    assert post_files(client, API, 2).status_code == 201
    assert record_count(client) == 2


# -- charged by work, one budget for every door ------------------------------------------------
def test_an_upload_costs_its_files_times_its_formats(make_app: AppFactory) -> None:
    client = make_app(rate_limit="4/minute").test_client()
    assert post_files(client, API, 2, format=["webp", "png"]).status_code == 201
    response = post_files(client, API, 1)
    assert response.status_code == 429
    assert response.get_json()["error"] == "rate_limited"
    assert int(response.headers["Retry-After"]) > 0


def test_every_upload_door_draws_on_one_budget(make_app: AppFactory) -> None:
    client = make_app(rate_limit="4/minute").test_client()
    assert post_files(client, API, 1).status_code == 201
    assert post_files(client, "/convert", 1).status_code == 201
    assert page_post(client).status_code == 201
    assert direct_complete(client, images.png(33, 21)).status_code == 201
    # The budget is spent: any door now answers 429.
    assert post_files(client, "/convert", 1).status_code == 429
    assert page_post(client).status_code == 429


def test_a_direct_completion_costs_its_formats(make_app: AppFactory) -> None:
    client = make_app(rate_limit="3/minute").test_client()
    response = direct_complete(client, images.png(31, 22), format=["webp", "png", "jpeg"])
    assert response.status_code == 201
    assert post_files(client, API, 1).status_code == 429


def test_over_budget_a_browser_gets_a_page_with_retry_after(make_app: AppFactory) -> None:
    client = make_app(rate_limit="1/minute").test_client()
    assert page_post(client).status_code == 201
    response = page_post(client, Accept="text/html")
    assert response.status_code == 429
    assert response.mimetype == "text/html"
    assert "Too many conversions" in response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) > 0


def test_a_request_costing_more_than_the_whole_budget_gets_413(make_app: AppFactory) -> None:
    client = make_app(rate_limit="3/minute").test_client()
    response = post_files(client, API, 2, format=["webp", "png"])
    assert response.status_code == 413
    assert "asks for 4 conversions" in response.get_json()["message"]
    assert record_count(client) == 0
    # Nothing was charged for it: a request that fits still goes through.
    assert post_files(client, API, 3).status_code == 201


def test_a_refused_request_is_not_charged(make_app: AppFactory) -> None:
    client = make_app(rate_limit="2/minute", max_files_per_request=2).test_client()
    assert post_files(client, API, 3).status_code == 413
    assert post_files(client, API, 1, format="nope").status_code == 400
    assert post_files(client, API, 2).status_code == 201


def test_tickets_and_reads_do_not_draw_on_the_upload_budget(make_app: AppFactory) -> None:
    client = make_app(rate_limit="2/minute").test_client()
    body = {"content_type": "image/png", "size": 10}
    assert client.post("/api/uploads", json=body).status_code == 201
    assert all(client.get(API).status_code == 200 for _ in range(5))
    assert post_files(client, API, 2).status_code == 201


def test_the_admin_blueprint_keeps_its_own_request_limit(make_app: AppFactory) -> None:
    client = make_app(rate_limit="2/minute", admin_token="admin").test_client()
    assert post_files(client, API, 2).status_code == 201  # the upload budget is spent
    held = {"Authorization": "Bearer admin"}
    statuses = [client.get("/api/admin/held", headers=held).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


# -- where budgets are counted -----------------------------------------------------------------
def test_rate_limit_storage_is_memory_unless_configured() -> None:
    assert Settings.from_env({}).rate_limit_storage_uri == "memory://"


@pytest.mark.parametrize("uri", ["mongodb://db:27017", "redis:/x", "memcached://m:11211"])
def test_an_unknown_rate_limit_storage_stops_start_up(uri: str) -> None:
    with pytest.raises(SettingsError, match="RATE_LIMIT_STORAGE_URI must be memory:// or a"):
        Settings.from_env({"RATE_LIMIT_STORAGE_URI": uri})


def test_a_malformed_rate_limit_stops_start_up() -> None:
    with pytest.raises(SettingsError, match="RATE_LIMIT must be a limit such as 30/minute"):
        Settings.from_env({"RATE_LIMIT": "thirty a minute"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def redis_uri(tmp_path: Path) -> Iterator[str]:
    """A throwaway redis-server on 127.0.0.1 (no RDB, no AOF), stopped after the test."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        pytest.fail("redis-server is missing: run scripts/install-system-deps")
    port = free_port()
    # No RDB snapshots, no AOF: nothing outlives the test.
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes"]
    command += ["--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_two_instances_share_one_budget_through_redis(make_app: AppFactory, redis_uri: str) -> None:
    # Two create_app calls, as two Cloud Run instances would be, counting in one Redis.
    a = make_app(rate_limit="3/minute", rate_limit_storage_uri=redis_uri).test_client()
    b = make_app(rate_limit="3/minute", rate_limit_storage_uri=redis_uri).test_client()
    assert post_files(a, API, 2).status_code == 201
    assert page_post(b).status_code == 201
    response = post_files(b, "/convert", 1)
    assert response.status_code == 429
    assert post_files(a, API, 1).status_code == 429


def test_without_shared_storage_each_instance_has_its_own_budget(make_app: AppFactory) -> None:
    a = make_app(rate_limit="2/minute").test_client()
    b = make_app(rate_limit="2/minute").test_client()
    assert post_files(a, API, 2).status_code == 201
    assert post_files(b, API, 2).status_code == 201


def test_an_unreachable_redis_lets_uploads_through_not_500(make_app: AppFactory) -> None:
    uri = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    client = make_app(rate_limit="2/minute", rate_limit_storage_uri=uri).test_client()
    assert post_image(client).status_code == 201
