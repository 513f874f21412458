"""Who may upload and delete, and how often: tokens, delete keys, rate limits, headers."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re

import pytest
from flask.testing import FlaskClient

from imaging.storage.local import LocalStore
from tests import images
from tests.conftest import AppFactory
from tests.uploads import post_image


def post(client: FlaskClient, headers: dict[str, str] | None = None, **fields: str) -> object:
    return post_image(client, images.jpeg(), "a.jpg", headers=headers, **fields)


def csrf(client: FlaskClient, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match
    return match.group(1)


@pytest.fixture
def locked(make_app: AppFactory) -> FlaskClient:
    return make_app(upload_tokens=("old-token", "new-token"), admin_token="admin").test_client()


@pytest.mark.parametrize("url", ["/api/images", "/convert"])
def test_api_upload_without_a_token_is_401(locked: FlaskClient, url: str) -> None:
    response = locked.post(
        url,
        data={"image": (io.BytesIO(images.jpeg()), "a.jpg")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"


def test_api_upload_with_a_wrong_token_is_403(locked: FlaskClient) -> None:
    response = post(locked, {"Authorization": "Bearer guess"})
    assert response.status_code == 403  # type: ignore[attr-defined]


@pytest.mark.parametrize("token", ["old-token", "new-token"])
def test_every_configured_token_is_accepted_for_rotation(locked: FlaskClient, token: str) -> None:
    response = post(locked, {"Authorization": f"Bearer {token}"})
    assert response.status_code == 201  # type: ignore[attr-defined]


def test_the_api_ignores_an_unlocked_session_cookie(locked: FlaskClient) -> None:
    token = csrf(locked, "/unlock")
    locked.post("/unlock", data={"token": "new-token", "csrf_token": token})
    response = post(locked)  # cookie set, but no Authorization header
    assert response.status_code == 401  # type: ignore[attr-defined]


def test_upload_page_asks_for_the_token_once(locked: FlaskClient) -> None:
    assert locked.get("/upload").headers["Location"].endswith("/unlock")
    token = csrf(locked, "/unlock")
    wrong = locked.post("/unlock", data={"token": "nope", "csrf_token": token})
    assert wrong.status_code == 403
    right = locked.post("/unlock", data={"token": "new-token", "csrf_token": token})
    assert right.status_code == 303
    assert locked.get("/upload").status_code == 200
    response = locked.post(
        "/upload",
        data={"image": (io.BytesIO(images.jpeg()), "a.jpg"), "csrf_token": csrf(locked, "/upload")},
        headers={"Accept": "application/json"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201


def test_the_session_keeps_a_hash_never_the_token(locked: FlaskClient) -> None:
    token = csrf(locked, "/unlock")
    locked.post("/unlock", data={"token": "new-token", "csrf_token": token})
    app = locked.application
    cookie = locked.get_cookie(app.config.get("SESSION_COOKIE_NAME", "session"))
    assert cookie is not None
    session = app.session_interface.get_signing_serializer(app).loads(cookie.value)  # type: ignore[attr-defined]
    assert "new-token" not in json.dumps(session)


def test_page_upload_without_unlocking_is_401(locked: FlaskClient) -> None:
    token = csrf(locked, "/unlock")
    response = locked.post(
        "/upload",
        data={"image": (io.BytesIO(images.jpeg()), "a.jpg"), "csrf_token": token},
        content_type="multipart/form-data",
    )
    assert response.status_code == 401


def test_delete_needs_a_key_or_the_admin_token(local_client: FlaskClient) -> None:
    created = post(local_client).get_json()  # type: ignore[attr-defined]
    assert local_client.delete(f"/api/images/{created['id']}").status_code == 401


def test_a_delete_key_deletes_only_its_own_image(local_client: FlaskClient) -> None:
    mine = post(local_client).get_json()  # type: ignore[attr-defined]
    theirs = local_client.post(
        "/api/images",
        data={"image": (io.BytesIO(images.png()), "b.png")},
        content_type="multipart/form-data",
    ).get_json()
    wrong = local_client.delete(
        f"/api/images/{theirs['id']}", headers={"X-Delete-Key": mine["delete_key"]}
    )
    assert wrong.status_code == 403
    right = local_client.delete(
        f"/api/images/{mine['id']}", headers={"X-Delete-Key": mine["delete_key"]}
    )
    assert right.status_code == 204
    assert local_client.get(f"/api/images/{theirs['id']}").status_code == 200


def test_the_admin_token_deletes_anything(make_app: AppFactory) -> None:
    client = make_app(admin_token="admin").test_client()
    created = post(client).get_json()  # type: ignore[attr-defined]
    response = client.delete(
        f"/api/images/{created['id']}", headers={"Authorization": "Bearer admin"}
    )
    assert response.status_code == 204


def test_delete_keys_are_not_recoverable_from_records(
    local_client: FlaskClient, local_store: LocalStore
) -> None:
    created = post(local_client).get_json()  # type: ignore[attr-defined]
    raw = local_store.get(f"rec/{created['id']}.json")
    assert created["delete_key"].encode() not in raw
    shown = local_client.get(f"/api/images/{created['id']}").get_data()
    assert b"delete_key" not in shown


def test_uploads_over_the_rate_limit_get_429_with_retry_after(make_app: AppFactory) -> None:
    client = make_app(rate_limit="2/minute").test_client()
    statuses = [post(client).status_code for _ in range(3)]  # type: ignore[attr-defined]
    assert statuses[:2] == [201, 200]  # the second is a duplicate of the first
    assert statuses[2] == 429
    response = post(client)
    assert response.get_json()["error"] == "rate_limited"  # type: ignore[attr-defined]
    assert int(response.headers["Retry-After"]) > 0  # type: ignore[attr-defined]


def test_reads_are_not_rate_limited(make_app: AppFactory) -> None:
    client = make_app(rate_limit="1/minute").test_client()
    assert all(client.get("/api/images").status_code == 200 for _ in range(5))


def test_display_names_are_escaped_in_pages(local_client: FlaskClient) -> None:
    evil = "<img src=x onerror=alert(1)>.png"
    local_client.post(
        "/api/images",
        data={"image": (io.BytesIO(images.png()), evil)},
        content_type="multipart/form-data",
    )
    page = local_client.get("/").get_data(as_text=True)
    assert "<img src=x onerror" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in page


# -- hostile input is a 4xx, never a 500 (issue 14, item 7) ---------------------------------------

DEEP_JSON = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("path", ["/unlock", "/upload/direct"])
def test_a_non_ascii_csrf_token_is_403_not_500(locked: FlaskClient, path: str) -> None:
    csrf(locked, "/unlock")  # a session with a CSRF token to compare against
    response = locked.post(
        path,
        data={"token": "new-token", "csrf_token": "jeton-volé-ü"},
        headers={"X-CSRF-Token": "ü"},
    )
    assert response.status_code == 403
    assert "Traceback" not in response.get_data(as_text=True)


def test_a_non_ascii_bearer_token_is_403_not_500(locked: FlaskClient) -> None:
    response = post(locked, {"Authorization": "Bearer jeton-volé"})
    assert response.status_code == 403  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", ["/api/uploads", "/api/images", "/convert"])
def test_deeply_nested_json_is_a_400(local_client: FlaskClient, path: str) -> None:
    response = local_client.post(path, data=DEEP_JSON, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"] in ("bad_request", "missing_file")


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},  # a Pub/Sub push
        {"Content-Type": "application/cloudevents+json"},  # a structured CloudEvent
    ],
)
def test_a_deeply_nested_event_body_is_a_bad_request(headers: dict[str, str]) -> None:
    from imaging.doors.events import parse_delivery
    from imaging.errors import BadRequest

    with pytest.raises(BadRequest):
        parse_delivery(headers, DEEP_JSON)


def test_a_pubsub_message_with_deeply_nested_data_is_a_bad_request() -> None:
    from imaging.doors.events import parse_delivery
    from imaging.errors import BadRequest

    envelope = {"message": {"data": base64.b64encode(DEEP_JSON).decode(), "attributes": {}}}
    with pytest.raises(BadRequest):
        parse_delivery({"Content-Type": "application/json"}, json.dumps(envelope).encode())


def test_every_json_body_is_read_by_one_reader_that_answers_400() -> None:
    from imaging.errors import BadRequest
    from imaging.untrusted import read_json

    for hostile in (DEEP_JSON, b"{", b"\xff", b"1" * 5000):
        with pytest.raises(BadRequest):
            read_json(hostile)


# -- the session cookie (issue 14, item 10) --------------------------------------------------------


def session_of(client: FlaskClient) -> dict[str, object]:
    app = client.application
    cookie = client.get_cookie(app.config.get("SESSION_COOKIE_NAME", "session"))
    assert cookie is not None
    data = app.session_interface.get_signing_serializer(app).loads(cookie.value)  # type: ignore[attr-defined]
    assert isinstance(data, dict)
    return data


def test_the_session_holds_no_plain_hash_of_the_token(locked: FlaskClient) -> None:
    locked.post("/unlock", data={"token": "new-token", "csrf_token": csrf(locked, "/unlock")})
    held = json.dumps(session_of(locked))
    assert hashlib.sha256(b"new-token").hexdigest() not in held  # guessable offline
    assert "new-token" not in held


def test_a_session_unlocked_under_another_secret_key_is_not_unlocked(
    make_app: AppFactory,
) -> None:
    # What the session holds is keyed with SECRET_KEY: copied into an app with another key
    # (and so re-signed there), it does not open the upload page.
    first = make_app(upload_tokens=("t0ken",), secret_key="one").test_client()
    first.post("/unlock", data={"token": "t0ken", "csrf_token": csrf(first, "/unlock")})
    held = session_of(first)
    other = make_app(upload_tokens=("t0ken",), secret_key="two").test_client()
    with other.session_transaction() as session:
        session.update(held)
    assert other.get("/upload").status_code == 302
    with first.session_transaction() as session:
        session.update(held)
    assert first.get("/upload").status_code == 200


def test_session_cookies_are_secure_whenever_the_request_came_over_https(
    make_app: AppFactory,
) -> None:
    client = make_app(trusted_proxy_hops=1).test_client()
    plain = client.get("/unlock")
    assert "Secure" not in plain.headers["Set-Cookie"]
    proxied = make_app(trusted_proxy_hops=1).test_client()
    over_https = proxied.get("/unlock", headers={"X-Forwarded-Proto": "https"})
    assert "; Secure" in over_https.headers["Set-Cookie"]
    direct = make_app().test_client().get("/unlock", base_url="https://localhost")
    assert "; Secure" in direct.headers["Set-Cookie"]


# -- headers and metrics (issue 14, item 11) -------------------------------------------------------


def csp_sources(policy: str, directive: str) -> list[str]:
    for part in policy.split(";"):
        name, *sources = part.split()
        if name == directive:
            return sources
    raise AssertionError(f"no {directive} in {policy}")


def test_images_and_fetches_are_allowed_only_from_us_locally(local_client: FlaskClient) -> None:
    policy = local_client.get("/").headers["Content-Security-Policy"]
    assert csp_sources(policy, "img-src") == ["'self'", "data:", "blob:"]
    assert csp_sources(policy, "connect-src") == ["'self'"]


GCS = {"storage_backend": "gcs", "gcs_bucket": "private", "gcs_public_bucket": "public"}


@pytest.mark.parametrize(
    ("changes", "images", "uploads"),
    [
        (
            GCS,
            ["https://storage.googleapis.com/public/"],
            ["https://storage.googleapis.com/private/tmp/"],
        ),
        (
            {**GCS, "public_base_url": "https://cdn.x/img"},
            ["https://cdn.x/img/"],
            ["https://storage.googleapis.com/private/tmp/"],
        ),
        ({"public_base_url": "https://cdn.x/"}, ["https://cdn.x/"], []),
    ],
)
def test_images_come_only_from_the_public_bucket_and_uploads_go_only_to_the_private_tmp(
    changes: dict[str, str], images: list[str], uploads: list[str]
) -> None:
    """Not the whole storage host: a page may show no other bucket's objects (nor our private
    ones by a signed link) and send nothing to any bucket but our uploads prefix."""
    from imaging.config import Settings
    from imaging.web import content_security_policy

    policy = content_security_policy(Settings(**changes).validated())  # type: ignore[arg-type]
    assert csp_sources(policy, "img-src") == ["'self'", "data:", "blob:", *images]
    assert csp_sources(policy, "connect-src") == ["'self'", *uploads]
    assert "https:" not in policy.split()
    assert "https://storage.googleapis.com" not in policy.split()


def test_metrics_need_the_metrics_token_when_one_is_set(make_app: AppFactory) -> None:
    client = make_app(metrics_token="scrape-me").test_client()
    assert client.get("/metrics").status_code == 401
    wrong = client.get(
        "/metrics", headers={"Authorization": "Bearer guess-é", "Accept": "application/json"}
    )
    assert wrong.status_code == 403
    assert wrong.get_json()["error"] == "forbidden"
    right = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert right.status_code == 200
    assert b"# TYPE" in right.data


def test_metrics_are_open_without_a_metrics_token(local_client: FlaskClient) -> None:
    assert local_client.get("/metrics").status_code == 200


@pytest.mark.parametrize("doc", ["README.md", "docs/security.md"])
def test_the_docs_state_the_form_limits_the_code_enforces(
    local_client: FlaskClient, doc: str
) -> None:
    from pathlib import Path

    text = " ".join((Path(__file__).parent.parent / doc).read_text().split())
    config = local_client.application.config
    assert f"at most {config['MAX_FORM_PARTS']} parts" in text
    assert f"at most {config['MAX_FORM_MEMORY_SIZE'] // 1024} KiB" in text


class BreaksMidway(io.RawIOBase):
    """A server's input stream that fails part-way, as a chunked body with a bad chunk makes
    gunicorn's (its own exception) or Werkzeug's dev server's (OSError)."""

    def __init__(self, first: bytes, error: Exception) -> None:
        self.first, self.error = first, error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self.first:
            raise self.error
        size = min(len(buffer), len(self.first))
        buffer[:size], self.first = self.first[:size], self.first[size:]
        return size


class ServerParseError(Exception):
    """Stands for an exception type of the server's own (gunicorn's InvalidChunkSize)."""


@pytest.mark.parametrize("error", [OSError("Invalid chunk header"), ServerParseError("ZZZ")])
@pytest.mark.parametrize(
    ("path", "content_type", "first", "accept"),
    [
        ("/api/images", "multipart/form-data; boundary=XX", b"--XX\r\nContent-Disp", "*/*"),
        ("/upload", "multipart/form-data; boundary=XX", b"--XX\r\nContent-Disp", "text/html"),
        ("/api/images/delete", "application/json", b'{"ids": ["', "*/*"),
    ],
)
def test_a_body_the_server_cannot_read_is_a_400_not_a_500(
    local_client: FlaskClient,
    path: str,
    content_type: str,
    first: bytes,
    accept: str,
    error: Exception,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="imaging")
    response = local_client.post(
        path,
        headers={"Content-Type": content_type, "Accept": accept, "X-CSRF-Token": "x"},
        environ_overrides={"wsgi.input": BreaksMidway(first, error), "wsgi.input_terminated": True},
    )
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    if accept == "text/html":
        assert response.mimetype == "text/html"
        assert "could not be read" in response.get_data(as_text=True)
    else:
        assert response.get_json()["error"] == "bad_body"
    assert str(error) not in response.get_data(as_text=True)
    assert "Traceback" not in caplog.text
    assert f"{type(error).__name__} reading the body" in caplog.text
