"""Direct uploads: a ticket, a PUT straight to storage (a GCS signed URL or the app), complete.

The GCS tests PUT to real V4 signed URLs, signed locally with a throwaway service-account key,
and the PUT lands in fake-gcs-server. The emulator does not check signatures, so one test checks
them as GCS would: it rebuilds the canonical request from the URL and verifies the RSA signature
with the key's public half.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Page, Request, expect

from imaging.doors.direct import (
    COMPLETE_WINDOW_SECONDS,
    SWEEP_EVERY_SECONDS,
    Interrupted,
    Ticket,
    UploadSessions,
)
from imaging.services import services_of
from imaging.storage import ObjectStore
from imaging.storage.local import LocalStore
from tests.browser import ConsoleLog
from tests.conftest import AppFactory, LiveServer
from tests.faults import FlakyStore
from tests.gcs_emulator import (
    GCSEmulator,
    anonymous_get,
    anonymous_names,
    make_gcs_store,
    public_bucket_of,
)
from tests.images import encode, noise, png

MiB = 1024 * 1024


# -- helpers -------------------------------------------------------------------------------------
def sessions(app: Flask) -> UploadSessions:
    return services_of(app).uploads


def create_ticket(
    client: FlaskClient, *, content_type: str = "image/png", size: int, **extra: Any
) -> dict[str, Any]:
    response = client.post(
        "/api/uploads", json={"content_type": content_type, "size": size, **extra}
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def put_path(ticket: dict[str, Any]) -> str:
    """The app's PUT URL as a path + query, for the test client."""
    url = urlsplit(ticket["url"])
    return f"{url.path}?{url.query}"


def put(client: FlaskClient, ticket: dict[str, Any], data: bytes, **headers: str) -> Any:
    return client.put(put_path(ticket), data=data, headers={**ticket["headers"], **headers})


def complete(client: FlaskClient, ticket: dict[str, Any], **options: Any) -> Any:
    return client.post(ticket["complete_url"], data=options, headers=completion(ticket))


def completion(ticket: dict[str, Any] | Ticket) -> dict[str, str]:
    """The header that proves the completion comes from the ticket's creator."""
    key = ticket.completion_key if isinstance(ticket, Ticket) else ticket["completion_key"]
    return {"X-Completion-Key": key}


def upload_directly(client: FlaskClient, data: bytes, **options: Any) -> Any:
    ticket = create_ticket(client, size=len(data))
    assert put(client, ticket, data).status_code == 201
    return complete(client, ticket, **options)


def ttl(app: Flask) -> int:
    seconds: int = app.extensions["imaging"].settings.upload_url_ttl
    return seconds


def mint(app: Flask, *, age: float = 0) -> Ticket:
    """A ticket as the app would have minted it ``age`` seconds ago."""
    return sessions(app).create(
        content_type="image/png",
        size=10,
        app_put_url=lambda upload_id, token: f"/api/uploads/{upload_id}/data?token={token}",
        now=time.time() - age,
    )


@pytest.fixture
def local_app(make_app: AppFactory) -> Flask:
    return make_app()


# -- LocalStore: the app's own PUT endpoint ------------------------------------------------------
def test_ticket_points_at_the_apps_put_endpoint(local_client: FlaskClient) -> None:
    ticket = create_ticket(local_client, content_type="image/jpeg", size=1234)
    assert ticket["method"] == "PUT"
    assert ticket["headers"] == {"Content-Type": "image/jpeg"}
    assert ticket["max_bytes"] == 1234
    assert urlsplit(ticket["url"]).path == f"/api/uploads/{ticket['upload_id']}/data"
    assert "token=" in ticket["url"]
    assert ticket["complete_url"].endswith(f"/api/uploads/{ticket['upload_id']}/complete")
    assert ticket["expires_at"].endswith("Z")


def test_ticket_is_not_cacheable(local_client: FlaskClient) -> None:
    response = local_client.post("/api/uploads", json={"content_type": "image/png", "size": 10})
    assert response.headers["Cache-Control"] == "no-store"


def test_put_then_complete_makes_a_record_in_the_gallery(
    make_app: AppFactory, local_store: LocalStore
) -> None:
    client = make_app().test_client()
    data = png(80, 60)
    ticket = create_ticket(client, size=len(data))
    assert put(client, ticket, data).get_json() == {
        "upload_id": ticket["upload_id"],
        "bytes": len(data),
    }
    assert local_store.get(f"tmp/{ticket['upload_id']}") == data

    response = complete(client, ticket, format="jpeg", width="40")
    assert response.status_code == 201, response.get_data(as_text=True)
    record = response.get_json()
    assert [v["format"] for v in record["variants"]] == ["jpeg"]
    assert record["variants"][0]["width"] == 40
    assert record["delete_key"]
    gallery = client.get("/api/images").get_json()["images"]
    assert [image["id"] for image in gallery] == [record["id"]]
    assert local_store.list("tmp/") == []


def test_completing_twice_returns_the_same_record(local_client: FlaskClient) -> None:
    data = png()
    ticket = create_ticket(local_client, size=len(data))
    put(local_client, ticket, data)
    first = complete(local_client, ticket)
    again = complete(local_client, ticket)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json()["id"] == first.get_json()["id"]
    assert "delete_key" not in again.get_json()  # shown once, to the first completion only
    assert len(local_client.get("/api/images").get_json()["images"]) == 1


def test_json_completion_options_reach_the_pipeline(local_client: FlaskClient) -> None:
    data = png(50, 50)
    ticket = create_ticket(local_client, size=len(data))
    put(local_client, ticket, data)
    response = local_client.post(
        urlsplit(ticket["complete_url"]).path,
        json={
            "format": ["png", "webp"],
            "width": 20,
            "lossless": True,
            "name": "from json",
            "completion_key": ticket["completion_key"],  # the body field works like the header
        },
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    record = response.get_json()
    assert [v["format"] for v in record["variants"]] == ["png", "webp"]
    assert {v["width"] for v in record["variants"]} == {20}
    assert record["name"] == "from json"


def test_a_json_focal_point_reaches_the_cover_crop(local_client: FlaskClient) -> None:
    data = png(200, 100)
    ticket = create_ticket(local_client, size=len(data))
    put(local_client, ticket, data)
    response = local_client.post(
        urlsplit(ticket["complete_url"]).path,
        json={"format": "png", "width": 50, "height": 50, "fit": "cover", "focus": [0.9, 0.5]},
        headers=completion(ticket),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    receipt = response.get_json()["receipt"]
    assert (receipt["crop"], receipt["focus"]) == ("focus", [0.9, 0.5])


def test_name_given_with_the_ticket_names_the_record(local_client: FlaskClient) -> None:
    data = png()
    ticket = create_ticket(local_client, size=len(data), name="holiday.png")
    put(local_client, ticket, data)
    assert complete(local_client, ticket).get_json()["name"] == "holiday.png"


def test_name_given_at_completion_wins_over_the_tickets(local_client: FlaskClient) -> None:
    data = png()
    ticket = create_ticket(local_client, size=len(data), name="first.png")
    put(local_client, ticket, data)
    response = local_client.post(
        ticket["complete_url"], data={"name": "second"}, headers=completion(ticket)
    )
    assert response.get_json()["name"] == "second"


def test_direct_upload_may_be_larger_than_max_upload_mb(make_app: AppFactory) -> None:
    client = make_app(max_upload_mb=1, direct_upload_max_mb=4).test_client()
    data = encode(noise(800, 600), "PNG")
    assert 1 * MiB < len(data) < 4 * MiB
    response = upload_directly(client, data)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["bytes"] == len(data)


def test_second_put_with_the_same_url_is_refused(
    local_client: FlaskClient, local_store: LocalStore
) -> None:
    data = png()
    ticket = create_ticket(local_client, size=len(data))
    assert put(local_client, ticket, data).status_code == 201
    again = put(local_client, ticket, png(10, 10))
    assert again.status_code == 409
    assert again.get_json()["error"] == "already_uploaded"
    assert local_store.get(f"tmp/{ticket['upload_id']}") == data


def test_put_after_completion_is_refused(local_client: FlaskClient) -> None:
    data = png()
    ticket = create_ticket(local_client, size=len(data))
    put(local_client, ticket, data)
    complete(local_client, ticket)
    assert put(local_client, ticket, data).status_code == 409


def test_forged_token_is_403(local_client: FlaskClient) -> None:
    data = png()
    ticket = create_ticket(local_client, size=len(data))
    forged = put_path(ticket).replace("token=", "token=x")
    response = local_client.put(forged, data=data, headers=ticket["headers"])
    assert response.status_code == 403


def test_token_of_another_upload_is_403(local_client: FlaskClient) -> None:
    data = png()
    mine = create_ticket(local_client, size=len(data))
    other = create_ticket(local_client, size=len(data))
    token = urlsplit(other["url"]).query
    response = local_client.put(
        f"/api/uploads/{mine['upload_id']}/data?{token}", data=data, headers=mine["headers"]
    )
    assert response.status_code == 403


def test_token_signed_with_another_secret_is_403(make_app: AppFactory) -> None:
    theirs = make_app(secret_key="another-secret").test_client()
    ours = make_app().test_client()
    ticket = create_ticket(theirs, size=10)
    assert put(ours, ticket, b"x" * 10).status_code == 403


def test_expired_put_url_is_410(local_app: Flask) -> None:
    ticket = mint(local_app, age=ttl(local_app) + 1)
    response = local_app.test_client().put(ticket.url, data=b"x" * 10, headers=ticket.headers)
    assert response.status_code == 410
    assert response.get_json()["error"] == "gone"


def test_expired_upload_id_cannot_be_completed(local_app: Flask, local_store: LocalStore) -> None:
    ticket = mint(local_app, age=ttl(local_app) + COMPLETE_WINDOW_SECONDS + 1)
    local_store.put(f"tmp/{ticket.upload_id}", png(), content_type="image/png")
    response = local_app.test_client().post(
        f"/api/uploads/{ticket.upload_id}/complete", headers=completion(ticket)
    )
    assert response.status_code == 410


def test_upload_finishing_after_its_url_expired_may_still_complete(
    local_app: Flask, local_store: LocalStore
) -> None:
    # GCS checks a signed URL's deadline when the PUT starts; a big file may end after it.
    ticket = mint(local_app, age=ttl(local_app) + 60)
    local_store.put(f"tmp/{ticket.upload_id}", png(), content_type="image/png")
    response = local_app.test_client().post(
        f"/api/uploads/{ticket.upload_id}/complete", headers=completion(ticket)
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    "upload_id",
    [
        "not-an-upload-id",
        f"{int(time.time()) + 600:010d}-0123456789abcdef-{'0' * 32}",  # well-formed, forged mac
    ],
)
def test_unknown_upload_id_is_404(local_client: FlaskClient, upload_id: str) -> None:
    response = local_client.post(f"/api/uploads/{upload_id}/complete")
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


def test_completing_before_the_put_is_409(local_client: FlaskClient) -> None:
    ticket = create_ticket(local_client, size=100)
    response = complete(local_client, ticket)
    assert response.status_code == 409
    assert response.get_json()["error"] == "not_uploaded"
    assert "PUT the file" in response.get_json()["message"]


@pytest.mark.parametrize("content_type", ["text/html", "application/pdf", "image/svg+xml", ""])
def test_ticket_for_a_type_we_do_not_read_is_400(
    local_client: FlaskClient, content_type: str
) -> None:
    response = local_client.post("/api/uploads", json={"content_type": content_type, "size": 100})
    assert response.status_code == 400
    assert "image/png" in response.get_json()["message"]


@pytest.mark.parametrize("size", ["0", "-5", "ten", ""])
def test_ticket_without_a_sensible_size_is_400(local_client: FlaskClient, size: str) -> None:
    response = local_client.post("/api/uploads", data={"content_type": "image/png", "size": size})
    assert response.status_code == 400


def test_ticket_over_the_direct_upload_limit_is_413(make_app: AppFactory) -> None:
    client = make_app(direct_upload_max_mb=2).test_client()
    response = client.post("/api/uploads", json={"content_type": "image/png", "size": 2 * MiB + 1})
    assert response.status_code == 413
    assert "2 MB" in response.get_json()["message"]


def test_put_with_another_content_type_is_400(local_client: FlaskClient) -> None:
    data = png()
    ticket = create_ticket(local_client, size=len(data))
    response = put(local_client, ticket, data, **{"Content-Type": "image/gif"})
    assert response.status_code == 400
    assert "image/png" in response.get_json()["message"]


def test_put_longer_than_announced_is_413(local_client: FlaskClient) -> None:
    ticket = create_ticket(local_client, size=100)
    assert put(local_client, ticket, b"x" * 101).status_code == 413


def test_chunked_put_is_cut_off_at_the_announced_size_and_may_be_retried(
    make_app: AppFactory, serve: Callable[[Flask], LiveServer], local_store: LocalStore
) -> None:
    server = serve(make_app())
    data = png(64, 64)
    ticket = requests.post(
        f"{server.url}/api/uploads",
        json={"content_type": "image/png", "size": len(data)},
        timeout=10,
    ).json()

    def too_long() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        yield data
        yield b"and then some"

    refused = requests.put(ticket["url"], data=too_long(), headers=ticket["headers"], timeout=10)
    assert refused.status_code == 413
    assert local_store.list("tmp/") == []
    # The refused PUT did not spend the single-use URL.
    retried = requests.put(ticket["url"], data=data, headers=ticket["headers"], timeout=10)
    assert retried.status_code == 201


def test_api_needs_the_upload_token(make_app: AppFactory) -> None:
    client = make_app(upload_tokens=("s3cret",)).test_client()
    body = {"content_type": "image/png", "size": 10}
    assert client.post("/api/uploads", json=body).status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    ticket = client.post("/api/uploads", json=body, headers=auth).get_json()
    assert client.post(urlsplit(ticket["complete_url"]).path).status_code == 401


def test_api_ignores_the_page_session(make_app: AppFactory) -> None:
    client = make_app(upload_tokens=("s3cret",)).test_client()
    client.get("/unlock")
    with client.session_transaction() as session:
        csrf = session["csrf_token"]
    client.post("/unlock", data={"token": "s3cret", "csrf_token": csrf})
    body = {"content_type": "image/png", "size": 10}
    assert client.post("/api/uploads", json=body).status_code == 401


def page_csrf(client: FlaskClient) -> str:
    client.get("/unlock")  # any page with a form starts the session's CSRF token
    with client.session_transaction() as session:
        token: str = session["csrf_token"]
    return token


def test_page_door_needs_the_csrf_token(local_client: FlaskClient) -> None:
    page_csrf(local_client)
    body = {"content_type": "image/png", "size": 10}
    assert local_client.post("/upload/direct", json=body).status_code == 403


def test_page_door_uploads_with_the_session(local_client: FlaskClient) -> None:
    csrf = {"X-CSRF-Token": page_csrf(local_client), "Accept": "application/json"}
    data = png()
    response = local_client.post(
        "/upload/direct",
        json={"content_type": "image/png", "size": len(data), "name": "page.png"},
        headers=csrf,
    )
    assert response.status_code == 201
    ticket = response.get_json()
    assert urlsplit(ticket["complete_url"]).path == f"/upload/direct/{ticket['upload_id']}/complete"
    assert put(local_client, ticket, data).status_code == 201
    done = local_client.post(ticket["complete_url"], headers={**csrf, **completion(ticket)})
    assert done.status_code == 201
    assert done.get_json()["name"] == "page.png"


def test_page_door_needs_an_unlocked_session_when_tokens_are_set(make_app: AppFactory) -> None:
    client = make_app(upload_tokens=("s3cret",)).test_client()
    csrf = {"X-CSRF-Token": page_csrf(client)}
    response = client.post(
        "/upload/direct", json={"content_type": "image/png", "size": 10}, headers=csrf
    )
    assert response.status_code == 401


def test_upload_page_tells_its_script_the_threshold(make_app: AppFactory) -> None:
    client = make_app(direct_upload_threshold_mb=0.5, direct_upload_max_mb=50).test_client()
    html = client.get("/upload").get_data(as_text=True)
    assert f'data-direct-threshold="{MiB // 2}"' in html
    assert f'data-direct-max-bytes="{50 * MiB}"' in html
    assert 'data-direct-url="/upload/direct"' in html
    assert "js/direct-upload.js" in html


def test_sweep_removes_only_expired_leftovers(local_app: Flask, local_store: LocalStore) -> None:
    old = mint(local_app, age=ttl(local_app) + COMPLETE_WINDOW_SECONDS + 5)
    fresh = mint(local_app)
    for ticket in (old, fresh):
        local_store.put(f"tmp/{ticket.upload_id}", b"bytes", content_type="image/png")
        local_store.put(f"upl/{ticket.upload_id}.put", b"claim", content_type="image/png")
    local_store.put("tmp/not-an-upload", b"someone else's", content_type="image/png")

    result = local_app.test_cli_runner().invoke(args=["uploads", "sweep"])
    assert result.exit_code == 0, result.output
    assert sorted(local_store.list("tmp/")) == sorted(
        ["tmp/not-an-upload", f"tmp/{fresh.upload_id}"]
    )
    assert local_store.list("upl/") == [f"upl/{fresh.upload_id}.put"]
    assert "2 expired" in result.output


def expired_age(app: Flask) -> float:
    """How long ago a ticket must have been minted to be past its completion window."""
    return ttl(app) + COMPLETE_WINDOW_SECONDS + 5


def temp_files(store: LocalStore) -> list[str]:
    """Every file under the store's tmp/ folder, the hidden ones of writes in progress too."""
    folder = store.root / "tmp"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_the_app_sweeps_expired_uploads_by_itself(
    local_app: Flask, local_store: LocalStore
) -> None:
    """Abandoned uploads vanish without `flask gc`: creating a ticket sweeps, once a minute."""
    uploads = sessions(local_app)
    old = mint(local_app, age=expired_age(local_app))
    fresh = mint(local_app)
    for ticket in (old, fresh):
        local_store.put(f"tmp/{ticket.upload_id}", b"bytes", content_type="image/png")
        local_store.put(f"upl/{ticket.upload_id}.put", b"claim", content_type="image/png")
    # The mints above swept already (nothing to sweep then): within a minute, no other sweep.
    assert uploads.sweep_soon() is None
    assert len(local_store.list("tmp/")) == 2

    later = time.time() + SWEEP_EVERY_SECONDS + 1
    uploads.create(content_type="image/png", size=10, app_put_url=lambda i, t: "/put", now=later)
    assert local_store.list("tmp/") == [f"tmp/{fresh.upload_id}"]
    assert local_store.list("upl/") == [f"upl/{fresh.upload_id}.put"]
    # Done for the next minute, then again.
    assert uploads.sweep_soon(now=later + 1) is None
    assert uploads.sweep_soon(now=later + SWEEP_EVERY_SECONDS + 1) == []


def test_a_put_sweeps_expired_uploads_too(local_app: Flask, local_store: LocalStore) -> None:
    client = local_app.test_client()
    ticket = create_ticket(client, size=4)
    old = mint(local_app, age=expired_age(local_app))
    local_store.put(f"tmp/{old.upload_id}", b"abandoned", content_type="image/png")
    sessions(local_app)._next_sweep = 0  # a minute has passed since the ticket's sweep
    assert put(client, ticket, b"data").status_code == 201
    assert local_store.list("tmp/") == [f"tmp/{ticket['upload_id']}"]


def test_flask_gc_sweeps_expired_uploads_too(local_app: Flask, local_store: LocalStore) -> None:
    old = mint(local_app, age=expired_age(local_app))
    fresh = mint(local_app)
    for ticket in (old, fresh):
        local_store.put(f"tmp/{ticket.upload_id}", b"bytes", content_type="image/png")
    result = local_app.test_cli_runner().invoke(args=["gc"])
    assert result.exit_code == 0, result.output
    assert f"removed tmp/{old.upload_id}" in result.output
    assert local_store.list("tmp/") == [f"tmp/{fresh.upload_id}"]


def test_a_put_past_the_tmp_room_is_503_and_may_be_retried(
    make_app: AppFactory, local_store: LocalStore
) -> None:
    client = make_app(direct_upload_max_mb=1, direct_upload_tmp_max_mb=1).test_client()
    first = create_ticket(client, size=600 * 1024)
    assert put(client, first, b"1" * 600 * 1024).status_code == 201
    second = create_ticket(client, size=600 * 1024)

    refused = put(client, second, b"2" * 600 * 1024)
    assert refused.status_code == 503
    assert refused.get_json()["error"] == "disk_full"
    assert int(refused.headers["Retry-After"]) > 0
    assert local_store.list("tmp/") == [f"tmp/{first['upload_id']}"]
    assert temp_files(local_store) == [first["upload_id"]]
    # Once the first is gone (completed, swept), the same URL goes through: it was not spent.
    local_store.delete(f"tmp/{first['upload_id']}")
    assert put(client, second, b"2" * 600 * 1024).status_code == 201


def test_a_put_whose_connection_fails_leaves_nothing_and_may_be_retried(
    local_client: FlaskClient, local_store: LocalStore
) -> None:
    data = os.urandom(3 * MiB)

    class DropsHalfWay(io.BytesIO):
        def readinto(self, buffer: Any) -> int:
            if self.tell() >= len(data) // 2:
                raise ConnectionResetError("the client went away")
            return super().readinto(buffer[: 256 * 1024])

        def read(self, size: int | None = -1, /) -> bytes:
            raise AssertionError("LimitedStream reads with readinto")  # pragma: no cover

    ticket = create_ticket(local_client, size=len(data))
    cut = local_client.put(
        put_path(ticket),
        input_stream=DropsHalfWay(data),
        headers=ticket["headers"],
    )
    assert cut.status_code == 400
    assert local_store.list("tmp/") == []
    assert temp_files(local_store) == []
    assert put(local_client, ticket, data).status_code == 201


def test_no_ticket_from_a_store_that_neither_signs_urls_nor_writes_streams(
    make_app: AppFactory, local_store: LocalStore
) -> None:
    """A PUT that could never be received is not offered: 503, said once, before any URL."""
    client = make_app(storage=FlakyStore(local_store)).test_client()
    refused = client.post("/api/uploads", json={"content_type": "image/png", "size": 10})
    assert refused.status_code == 503
    assert refused.get_json()["message"] == "Direct uploads are not available on this server."


def test_a_body_shorter_than_its_content_length_is_not_kept(local_app: Flask) -> None:
    """Under gunicorn a client that goes away mid-body just ends the stream; receive checks."""
    uploads = sessions(local_app)
    ticket = create_ticket(local_app.test_client(), size=100)
    token = dict(parse_qsl(urlsplit(ticket["url"]).query))["token"]
    grant = uploads.grant_put(ticket["upload_id"], token)
    with pytest.raises(Interrupted, match="after 60 of its 100 bytes"):
        uploads.receive(grant, io.BytesIO(b"x" * 60), content_length=100)
    store = uploads.store
    assert isinstance(store, LocalStore)
    assert store.list("tmp/") == []
    assert store.list("upl/") == []  # the claim was given back
    assert uploads.receive(grant, io.BytesIO(b"x" * 100), content_length=100) == 100


# -- GCS: V4 signed URLs, PUT into fake-gcs-server ----------------------------------------------
SERVICE_ACCOUNT = "uploader@test-project.iam.gserviceaccount.com"


@pytest.fixture(scope="session")
def signing_key() -> rsa.RSAPrivateKey:
    """A throwaway service-account key: URLs are signed here, never through IAM."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def service_account_key(
    tmp_path: Path, signing_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADC finds a service-account key file, as with GOOGLE_APPLICATION_CREDENTIALS in real life.

    google.auth turns the file into ``service_account.Credentials.from_service_account_info``.
    """
    pem = signing_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "throwaway",
        "private_key": pem,
        "client_email": SERVICE_ACCOUNT,
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(info))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))


@pytest.fixture
def gcs_store_for_uploads(gcs_bucket: str, service_account_key: None) -> ObjectStore:
    return make_gcs_store(gcs_bucket)


@pytest.fixture
def gcs_app(make_app: AppFactory, gcs_store_for_uploads: ObjectStore) -> Flask:
    return make_app(storage=gcs_store_for_uploads)


def test_signed_url_put_lands_in_the_emulator_and_completes_into_a_record(
    gcs_app: Flask,
    gcs_store_for_uploads: ObjectStore,
    gcs_emulator: GCSEmulator,
    gcs_bucket: str,
) -> None:
    client = gcs_app.test_client()
    data = png(90, 70)
    ticket = create_ticket(client, size=len(data))
    assert ticket["url"].startswith(f"{gcs_emulator.host}/{gcs_bucket}/tmp/{ticket['upload_id']}?")
    assert ticket["headers"] == {
        "Content-Type": "image/png",
        "x-goog-content-length-range": f"0,{len(data)}",
        "x-goog-if-generation-match": "0",
    }

    landed = requests.put(ticket["url"], data=data, headers=ticket["headers"], timeout=10)
    assert landed.status_code == 200, landed.text
    assert gcs_store_for_uploads.get(f"tmp/{ticket['upload_id']}") == data

    response = complete(client, ticket, format="webp,jpeg")
    assert response.status_code == 201, response.get_data(as_text=True)
    record = response.get_json()
    assert [v["format"] for v in record["variants"]] == ["webp", "jpeg"]
    assert [image["id"] for image in client.get("/api/images").get_json()["images"]] == [
        record["id"]
    ]
    assert gcs_store_for_uploads.list("tmp/") == []
    assert complete(client, ticket).get_json()["id"] == record["id"]


def test_a_direct_uploads_original_stays_private_and_only_its_variants_become_public(
    gcs_app: Flask,
    gcs_store_for_uploads: ObjectStore,
    gcs_emulator: GCSEmulator,
    gcs_bucket: str,
) -> None:
    """The signed URL points into the private bucket: the original (EXIF, GPS and all) is never
    in the public one, which after completion holds the record's variants and nothing else."""
    client = gcs_app.test_client()
    data = png(90, 70)
    ticket = create_ticket(client, size=len(data))
    public = public_bucket_of(gcs_bucket)
    assert f"/{public}/" not in ticket["url"]

    landed = requests.put(ticket["url"], data=data, headers=ticket["headers"], timeout=10)
    assert landed.status_code == 200, landed.text
    assert anonymous_names(public) == []
    assert anonymous_names(gcs_bucket) == [f"tmp/{ticket['upload_id']}"]
    tmp_url = f"https://storage.googleapis.com/{public}/tmp/{ticket['upload_id']}"
    assert anonymous_get(gcs_emulator, tmp_url)[0] == 404

    record = complete(client, ticket).get_json()

    files = [*record["variants"], record["thumbnail"]]
    assert anonymous_names(public) == sorted(
        urlsplit(f["url"]).path.removeprefix(f"/{public}/") for f in files
    )
    assert all(name.startswith(f"img/{record['id']}/") for name in anonymous_names(public))
    fetched = [anonymous_get(gcs_emulator, f["url"]) for f in files]
    assert [(status, len(body)) for status, body in fetched] == [(200, f["bytes"]) for f in files]


def test_signed_url_binds_the_type_the_size_range_and_create_only(
    gcs_app: Flask, signing_key: rsa.RSAPrivateKey
) -> None:
    # fake-gcs-server accepts any signature, so verify it as GCS does: rebuild the canonical
    # request from the URL and the headers the client will send, and check the RSA signature.
    ticket = create_ticket(gcs_app.test_client(), content_type="image/jpeg", size=5000)
    url = urlsplit(ticket["url"])
    query = dict(parse_qsl(url.query, keep_blank_values=True))
    signature = bytes.fromhex(query.pop("X-Goog-Signature"))
    assert query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert query["X-Goog-Credential"].startswith(f"{SERVICE_ACCOUNT}/")
    assert query["X-Goog-Expires"] == str(ttl(gcs_app))
    assert query["X-Goog-SignedHeaders"] == (
        "content-type;host;x-goog-content-length-range;x-goog-if-generation-match"
    )
    public_key = signing_key.public_key()

    def verify(headers: dict[str, str]) -> None:
        signed = {name.lower(): value for name, value in headers.items()} | {"host": url.netloc}
        canonical = "\n".join(
            [
                "PUT",
                url.path,
                "&".join(
                    f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in sorted(query.items())
                ),
                *(f"{name}:{signed[name]}" for name in sorted(signed)),
                "",
                ";".join(sorted(signed)),
                "UNSIGNED-PAYLOAD",
            ]
        )
        scope = query["X-Goog-Credential"].split("/", 1)[1]
        string_to_sign = "\n".join(
            [
                "GOOG4-RSA-SHA256",
                query["X-Goog-Date"],
                scope,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        public_key.verify(signature, string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())

    verify(ticket["headers"])
    for name, other in [
        ("Content-Type", "image/gif"),
        ("x-goog-content-length-range", "0,999999999"),
        ("x-goog-if-generation-match", "1"),
    ]:
        with pytest.raises(InvalidSignature):
            verify({**ticket["headers"], name: other})


def test_the_apps_put_endpoint_is_closed_when_the_bucket_takes_uploads(gcs_app: Flask) -> None:
    client = gcs_app.test_client()
    ticket = create_ticket(client, size=10)
    response = client.put(
        f"/api/uploads/{ticket['upload_id']}/data?token=anything",
        data=b"x" * 10,
        headers={"Content-Type": "image/png"},
    )
    assert response.status_code == 404


# -- the upload page, in Chromium ----------------------------------------------------------------
def record_requests(page: Page) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []

    def remember(request: Request) -> None:
        seen.append((request.method, urlsplit(request.url).path))

    page.on("request", remember)
    return seen


def upload_in_page(page: Page, server: LiveServer, name: str, data: bytes) -> None:
    page.goto(f"{server.url}/upload")
    page.get_by_test_id("file-input").set_input_files(
        {"name": name, "mimeType": "image/png", "buffer": data}
    )
    page.get_by_test_id("upload-button").click()
    bar = page.get_by_test_id("upload-item").get_by_test_id("progress")
    expect(bar).to_have_attribute("data-state", "done", timeout=30_000)
    page.get_by_test_id("to-gallery").click()
    expect(page.get_by_test_id("gallery-card").filter(has_text=name)).to_have_count(1)


@pytest.mark.browser
def test_page_sends_a_file_above_the_threshold_straight_to_storage(
    page: Page, console: ConsoleLog, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    server = serve(make_app(direct_upload_threshold_mb=0.01))
    data = encode(noise(120, 120), "PNG")
    assert len(data) > 0.01 * MiB
    requests_seen = record_requests(page)

    upload_in_page(page, server, "big.png", data)

    puts = [path for method, path in requests_seen if method == "PUT"]
    assert len(puts) == 1
    _, api, uploads, upload_id, data_ = puts[0].split("/")
    assert (api, uploads, data_) == ("api", "uploads", "data")
    assert ("POST", "/upload/direct") in requests_seen
    assert ("POST", f"/upload/direct/{upload_id}/complete") in requests_seen
    assert ("POST", "/upload") not in requests_seen
    assert console.csp_violations() == []
    assert console.page_errors == []


@pytest.mark.browser
def test_page_sends_a_file_below_the_threshold_through_the_form(
    page: Page, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    server = serve(make_app(direct_upload_threshold_mb=1))
    requests_seen = record_requests(page)

    upload_in_page(page, server, "small.png", png())

    assert ("POST", "/upload") in requests_seen
    assert [method for method, _ in requests_seen if method == "PUT"] == []


@pytest.mark.browser
def test_page_accepts_a_file_too_big_for_the_form_by_sending_it_directly(
    page: Page, make_app: AppFactory, serve: Callable[[Flask], LiveServer]
) -> None:
    # The threshold (8 MB) is above the form's 1 MB cap: the cap decides the path.
    server = serve(make_app(max_upload_mb=1, direct_upload_max_mb=4))
    data = encode(noise(800, 600), "PNG")
    assert len(data) > 1 * MiB
    requests_seen = record_requests(page)

    upload_in_page(page, server, "too-big-for-the-form.png", data)

    assert [method for method, _ in requests_seen if method == "PUT"] == ["PUT"]


# -- completion is bound to the ticket's creator (issue 14, item 4) ------------------------------
@pytest.mark.parametrize("key", [None, "", "0" * 64, "é"])
def test_a_third_party_who_knows_the_upload_id_cannot_complete_it(
    local_client: FlaskClient, key: str | None
) -> None:
    data = png()
    ticket = create_ticket(local_client, size=len(data), name="mine.png")
    assert put(local_client, ticket, data).status_code == 201
    headers = {} if key is None else {"X-Completion-Key": key}

    stolen = local_client.post(ticket["complete_url"] + "&name=theirs.png", headers=headers)

    assert stolen.status_code == 403
    assert stolen.get_json()["error"] == "forbidden"
    assert "delete_key" not in stolen.get_json()
    assert local_client.get("/api/images").get_json()["images"] == []
    own = complete(local_client, ticket)
    assert own.status_code == 201
    assert own.get_json()["name"] == "mine.png"
    assert own.get_json()["delete_key"]
    # Even after completion, the upload id alone tells a third party nothing.
    assert local_client.post(ticket["complete_url"], headers=headers).status_code == 403


def test_the_completion_key_is_in_the_ticket_only(local_client: FlaskClient) -> None:
    ticket = create_ticket(local_client, size=100)

    key = ticket["completion_key"]
    assert len(key) == 64
    assert key not in ticket["url"]
    assert key not in ticket["complete_url"]
    assert key not in ticket["upload_id"]
