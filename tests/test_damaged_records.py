"""A record that no longer parses (hand-edited or truncated storage): every route answers sanely.

The record reads as unreadable: the detail routes answer 404 ``unreadable_record`` (JSON for API
clients, a page for browsers), every listing, search and ZIP leaves it out, bulk requests answer
for it on its own, ``flask relabel`` skips it by name, and ``flask gc`` keeps what it owns
(``--check-records`` names it). Its key goes to the log once, without its content. Each test
runs on LocalStore and on the emulator.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from imaging.catalog import record_key
from imaging.storage import ObjectStore
from tests import images
from tests.conftest import AppFactory
from tests.uploads import upload_ok

ADMIN_TOKEN = "admin-secret"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: A record cut short, the way a hand edit or a half-copied backup leaves one.
DAMAGED = b'{"id": "secret-bytes-of-the-record", "variants": [{"name": "we'


@pytest.fixture
def app(make_app: AppFactory, store: ObjectStore) -> Flask:
    return make_app(storage=store, admin_token=ADMIN_TOKEN)


@pytest.fixture
def pair(client: FlaskClient, store: ObjectStore) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two uploads whose names share the word "zebra": the first one's record then damaged."""
    damaged = upload_ok(client, images.jpeg(40, 30), "damaged-zebra.jpg")
    healthy = upload_ok(client, images.jpeg(50, 30), "healthy-zebra.jpg")
    store.overwrite(record_key(damaged["id"]), DAMAGED, content_type="application/json")
    return damaged, healthy


def test_the_api_answers_404_json_for_a_damaged_record(
    client: FlaskClient, pair: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    damaged, _ = pair

    response = client.get(f"/api/images/{damaged['id']}")

    assert response.status_code == 404
    body = response.get_json()
    assert body["error"] == "unreadable_record"
    assert "damaged" in body["message"]


def test_the_detail_page_answers_a_readable_404_page(
    client: FlaskClient, pair: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    damaged, _ = pair

    response = client.get(f"/images/{damaged['id']}", headers={"Accept": "text/html"})

    assert response.status_code == 404
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "damaged" in page
    assert "Traceback" not in page
    assert "secret-bytes" not in page


def test_the_gallery_and_the_api_listing_leave_it_out(
    client: FlaskClient, pair: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    _, healthy = pair

    listed = client.get("/api/images")
    gallery = client.get("/", headers={"Accept": "text/html"})

    assert listed.status_code == 200
    assert [i["id"] for i in listed.get_json()["images"]] == [healthy["id"]]
    assert gallery.status_code == 200
    assert "healthy-zebra.jpg" in gallery.get_data(as_text=True)
    assert "damaged-zebra.jpg" not in gallery.get_data(as_text=True)


def test_a_search_leaves_it_out(
    client: FlaskClient, pair: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    _, healthy = pair

    found = client.get("/api/images?q=zebra")
    page = client.get("/?q=zebra", headers={"Accept": "text/html"})

    assert found.status_code == 200
    assert [i["id"] for i in found.get_json()["images"]] == [healthy["id"]]
    assert page.status_code == 200


def test_the_healthy_images_detail_page_still_shows_despite_a_damaged_neighbour(
    client: FlaskClient, pair: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    # The detail page lists similar images: the damaged one may be a candidate.
    _, healthy = pair

    assert client.get(f"/images/{healthy['id']}").status_code == 200


def test_a_zip_skips_it_and_says_so(
    client: FlaskClient, pair: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    damaged, healthy = pair

    both = client.get(f"/api/images.zip?ids={damaged['id']},{healthy['id']}")
    only_damaged = client.get(f"/api/images.zip?ids={damaged['id']}")

    assert both.status_code == 200
    assert both.headers["X-Skipped-Images"] == "1"
    assert only_damaged.status_code == 404
    assert only_damaged.get_json()["error"] == "not_found"


def test_a_bulk_delete_answers_for_it_on_its_own(
    client: FlaskClient, pair: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    damaged, healthy = pair

    response = client.post(
        "/api/images/delete", json={"ids": [damaged["id"], healthy["id"]]}, headers=ADMIN
    )

    assert response.status_code == 200
    results = {r["id"]: r for r in response.get_json()["results"]}
    assert results[damaged["id"]]["status"] == 404
    assert results[damaged["id"]]["error"] == "unreadable_record"
    assert results[healthy["id"]]["status"] == 204


def test_deleting_it_answers_404_not_500(
    client: FlaskClient, pair: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    damaged, _ = pair

    response = client.delete(
        f"/api/images/{damaged['id']}", headers={"X-Delete-Key": damaged["delete_key"]}
    )

    assert response.status_code == 404
    assert response.get_json()["error"] == "unreadable_record"


def test_it_is_logged_once_with_its_key_and_not_its_content(
    client: FlaskClient,
    pair: tuple[dict[str, Any], dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    damaged, _ = pair
    caplog.set_level(logging.INFO)

    for _ in range(2):
        client.get(f"/api/images/{damaged['id']}")
        client.get("/api/images")
        client.get("/api/images?q=zebra")

    lines = [r.getMessage() for r in caplog.records if record_key(damaged["id"]) in r.getMessage()]
    assert len(lines) == 1, lines
    assert "secret-bytes" not in caplog.text


def test_relabel_skips_it_by_name_and_goes_on(
    app: Flask, pair: tuple[dict[str, Any], dict[str, Any]], tmp_path: Any
) -> None:
    damaged, _ = pair

    result = app.test_cli_runner().invoke(
        args=["relabel", "--cursor-file", str(tmp_path / "cursor")]
    )

    assert result.exit_code == 0, result.output
    assert f"skipped {record_key(damaged['id'])}" in result.stderr
    assert "of 2 record(s) changed" in result.output
    assert "1 unreadable record(s) skipped" in result.output


def test_gc_keeps_what_a_damaged_record_owns(
    app: Flask, store: ObjectStore, pair: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    # Its id is committed (the record is there), so its files are not leftovers to remove.
    damaged, _ = pair
    files = store.list(f"img/{damaged['id']}/")

    result = app.test_cli_runner().invoke(args=["gc", "--grace", "0"])

    assert result.exit_code == 0, result.output
    assert files
    assert store.list(f"img/{damaged['id']}/") == files
    assert store.get(record_key(damaged["id"])) == DAMAGED
    assert "unreadable" not in result.output  # without --check-records it reads no record


def test_gc_check_records_names_each_damaged_record(
    app: Flask, store: ObjectStore, pair: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    damaged, healthy = pair

    result = app.test_cli_runner().invoke(args=["gc", "--check-records"])

    assert result.exit_code == 0, result.output
    assert f"unreadable {record_key(damaged['id'])}" in result.output
    assert record_key(healthy["id"]) not in result.output
    assert "1 unreadable record(s) kept" in result.output


def test_a_record_edited_into_the_wrong_kinds_answers_404_not_500(
    client: FlaskClient, store: ObjectStore
) -> None:
    created = upload_ok(client, images.jpeg(40, 30), "edited.jpg")
    key = record_key(created["id"])
    edited = json.loads(store.get(key)) | {"bytes": "many"}
    store.overwrite(key, json.dumps(edited).encode(), content_type="application/json")

    assert client.get(f"/images/{created['id']}").status_code == 404
    assert client.get(f"/api/images/{created['id']}").status_code == 404
    assert client.get("/").status_code == 200


def test_the_same_bytes_uploaded_again_are_saved_anew(
    client: FlaskClient, pair: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    # The damaged record's claim names it as the owner of these bytes: the claim is taken over
    # (its owner is long past the stale bound), not waited on, and not a 500.
    damaged, _ = pair

    again = upload_ok(client, images.jpeg(40, 30), "again.jpg")

    assert again["id"] != damaged["id"]
    assert again["duplicate"] is False
    assert client.get(f"/api/images/{again['id']}").status_code == 200
