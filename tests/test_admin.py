"""The admin's doors: SafeSearch holds an image back, only the admin token lets it into the gallery.

Labels and SafeSearch verdicts come from the local Vision stand-in through the real client, and
every test runs on LocalStore and on GCSStore against the emulator (approval rewrites a record
in a create-only store, which both must allow).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from imaging.catalog import Catalog
from imaging.storage import ObjectStore
from imaging.storage.local import LocalStore
from tests import images
from tests.conftest import AppFactory
from tests.faults import FlakyStore
from tests.gcs_emulator import (
    GCSEmulator,
    anonymous_get,
    anonymous_names,
    make_gcs_store,
    public_bucket_of,
)
from tests.uploads import upload_ok
from tests.vision_server import VisionServer

ADMIN = {"Authorization": "Bearer admin-secret"}
UNSAFE = {
    "adult": "VERY_LIKELY",
    "spoof": "UNLIKELY",
    "medical": "UNLIKELY",
    "violence": "UNLIKELY",
    "racy": "LIKELY",
}


HeldAppFactory = Callable[..., Flask]


@pytest.fixture
def make_held_app(make_app: AppFactory, vision_server: VisionServer) -> HeldAppFactory:
    """Apps whose uploads Vision finds unsafe, so SafeSearch holds every one of them back."""
    vision_server.set_mode("labels", labels=(("Cat", 0.97),), safe_search=UNSAFE)

    def build(storage: ObjectStore, **changes: Any) -> Flask:
        options: dict[str, Any] = {
            "labeler": "vision",
            "vision_api_endpoint": vision_server.endpoint,
            "safe_search": True,
            "safe_search_hide": "LIKELY",
            "admin_token": "admin-secret",
            **changes,
        }
        return make_app(storage=storage, **options)

    return build


@pytest.fixture
def client(make_held_app: HeldAppFactory, store: ObjectStore) -> FlaskClient:
    return make_held_app(store).test_client()


def upload(client: FlaskClient, name: str = "held.jpg", width: int = 40) -> dict[str, Any]:
    body: dict[str, Any] = upload_ok(client, images.jpeg(width, 30), name)
    return body


def listed_ids(client: FlaskClient, query: str = "") -> list[str]:
    return [image["id"] for image in client.get(f"/api/images{query}").get_json()["images"]]


def test_the_uploader_gets_the_held_back_record(client: FlaskClient) -> None:
    created = upload(client)

    assert created["hidden"] is True
    assert created["safe_search"]["adult"] == "VERY_LIKELY"
    own = client.get(
        f"/api/images/{created['id']}", headers={"X-Delete-Key": created["delete_key"]}
    )
    assert own.get_json()["hidden"] is True


def test_a_held_back_image_is_in_neither_the_gallery_nor_the_api_listing(
    client: FlaskClient,
) -> None:
    created = upload(client, "held-back-image.jpg")

    assert created["id"] not in listed_ids(client)
    assert created["id"] not in listed_ids(client, "?label=cat")
    assert "held-back-image.jpg" not in client.get("/").get_data(as_text=True)


def test_admin_approval_puts_the_image_in_the_gallery(client: FlaskClient) -> None:
    created = upload(client, "approved-image.jpg")

    response = client.post(f"/api/images/{created['id']}/approve", headers=ADMIN)

    assert response.status_code == 200
    assert response.get_json()["hidden"] is False
    assert listed_ids(client) == [created["id"]]
    assert listed_ids(client, "?label=cat") == [created["id"]]
    assert "approved-image.jpg" in client.get("/").get_data(as_text=True)
    assert client.get(f"/api/images/{created['id']}").get_json()["hidden"] is False


def test_approval_keeps_everything_else_in_the_record(client: FlaskClient) -> None:
    created = upload(client)

    approved = client.post(f"/api/images/{created['id']}/approve", headers=ADMIN).get_json()

    before = {k: v for k, v in created.items() if k not in ("hidden", "delete_key", "duplicate")}
    assert {k: v for k, v in approved.items() if k != "hidden"} == before


def test_the_delete_key_still_works_after_approval(client: FlaskClient) -> None:
    created = upload(client)
    assert client.post(f"/api/images/{created['id']}/approve", headers=ADMIN).status_code == 200

    response = client.delete(
        f"/api/images/{created['id']}", headers={"X-Delete-Key": created["delete_key"]}
    )

    assert response.status_code == 204
    assert listed_ids(client) == []


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer guess"}, 403),
        ({"Authorization": "Basic YWRtaW46YWRtaW4="}, 401),
        ({"X-Delete-Key": "anything"}, 401),
    ],
    ids=["no-token", "wrong-token", "basic-auth", "delete-key"],
)
def test_only_the_admin_token_approves(
    client: FlaskClient, headers: dict[str, str], status: int
) -> None:
    created = upload(client)

    response = client.post(f"/api/images/{created['id']}/approve", headers=headers)

    assert response.status_code == status
    assert response.get_json()["error"] in ("unauthorized", "forbidden")
    assert listed_ids(client) == []


def test_the_uploaders_delete_key_does_not_approve(client: FlaskClient) -> None:
    created = upload(client)

    response = client.post(
        f"/api/images/{created['id']}/approve",
        headers={"Authorization": f"Bearer {created['delete_key']}"},
    )

    assert response.status_code == 403
    assert listed_ids(client) == []


def test_without_an_admin_token_configured_nobody_approves(
    make_held_app: HeldAppFactory, local_store: LocalStore
) -> None:
    client = make_held_app(local_store, admin_token="").test_client()
    created = upload(client)

    response = client.post(
        f"/api/images/{created['id']}/approve", headers={"Authorization": "Bearer "}
    )
    guessed = client.post(f"/api/images/{created['id']}/approve", headers=ADMIN)

    assert response.status_code == 401
    assert guessed.status_code == 403
    assert listed_ids(client) == []


def test_a_stranger_cannot_tell_whether_an_id_exists(client: FlaskClient) -> None:
    created = upload(client)

    real = client.post(f"/api/images/{created['id']}/approve")
    unknown = client.post("/api/images/0000000000000deadbeef/approve")

    assert real.status_code == unknown.status_code == 401


def test_approving_an_unknown_image_is_404(client: FlaskClient) -> None:
    response = client.post("/api/images/0000000000000deadbeef/approve", headers=ADMIN)

    assert response.status_code == 404
    assert response.get_json()["message"] == "No image with that id."


def test_approving_twice_is_harmless(client: FlaskClient) -> None:
    created = upload(client)
    first = client.post(f"/api/images/{created['id']}/approve", headers=ADMIN)

    second = client.post(f"/api/images/{created['id']}/approve", headers=ADMIN)

    assert first.status_code == second.status_code == 200
    assert second.get_json() == first.get_json()
    assert listed_ids(client) == [created["id"]]


def test_the_admin_lists_only_the_held_back_images(
    client: FlaskClient, vision_server: VisionServer
) -> None:
    held = upload(client, "held.jpg")
    vision_server.set_mode("labels", safe_search=dict.fromkeys(UNSAFE, "VERY_UNLIKELY"))
    shown = client.post(
        "/api/images",
        data={"image": (io.BytesIO(images.png(30, 20)), "fine.png")},
        content_type="multipart/form-data",
    ).get_json()

    response = client.get("/api/admin/held", headers=ADMIN)

    assert shown["hidden"] is False
    assert [image["id"] for image in response.get_json()["images"]] == [held["id"]]
    assert client.get("/api/admin/held").status_code == 401


def test_a_storage_failure_while_approving_keeps_the_image_held(
    make_held_app: HeldAppFactory, local_store: LocalStore
) -> None:
    flaky = FlakyStore(local_store)
    client = make_held_app(flaky).test_client()
    created = upload(client)
    flaky.fail_on = flaky.puts + 1  # the approved record's write

    response = client.post(f"/api/images/{created['id']}/approve", headers=ADMIN)

    assert response.status_code == 503
    assert response.headers["Retry-After"]
    record = client.get(f"/api/images/{created['id']}", headers=ADMIN)
    assert record.status_code == 200
    assert record.get_json()["hidden"] is True
    assert listed_ids(client) == []
    retried = client.post(f"/api/images/{created['id']}/approve", headers=ADMIN)
    assert retried.status_code == 200
    assert listed_ids(client) == [created["id"]]


def test_a_storage_outage_while_approving_changes_nothing(
    make_held_app: HeldAppFactory, local_store: LocalStore
) -> None:
    flaky = FlakyStore(local_store)
    client = make_held_app(flaky).test_client()
    created = upload(client)
    flaky.down = True

    response = client.post(f"/api/images/{created['id']}/approve", headers=ADMIN)

    assert response.status_code == 503
    flaky.down = False
    assert client.get(f"/api/images/{created['id']}", headers=ADMIN).get_json()["hidden"] is True


def test_the_detail_page_says_the_image_awaits_review_until_approved(
    client: FlaskClient,
) -> None:
    created = upload(client)
    held_page = client.get(f"/images/{created['id']}?key={created['delete_key']}").get_data(
        as_text=True
    )

    client.post(f"/api/images/{created['id']}/approve", headers=ADMIN)

    assert 'data-testid="held-back"' in held_page
    approved_page = client.get(f"/images/{created['id']}").get_data(as_text=True)
    assert 'data-testid="held-back"' not in approved_page


# -- a held-back image is private until approved (issue 14, item 1) --------------------------


def test_a_held_back_image_is_not_found_by_id_page_or_media_url(client: FlaskClient) -> None:
    created = upload(client)
    image_id = created["id"]
    media = urlsplit(created["variants"][0]["url"]).path

    for headers in ({}, {"X-Delete-Key": "a-guess"}, {"Authorization": "Bearer guess"}):
        assert client.get(f"/api/images/{image_id}", headers=headers).status_code == 404
        assert client.delete(f"/api/images/{image_id}", headers=headers).status_code == 404
    assert client.get(f"/images/{image_id}").status_code == 404
    assert client.get(f"/images/{image_id}?key=a-guess").status_code == 404
    assert client.get(media).status_code == 404
    assert client.get(f"/api/images/{image_id}", headers=ADMIN).status_code == 200
    assert client.get(f"/images/{image_id}?key={created['delete_key']}").status_code == 200


def test_a_held_back_image_is_stored_only_under_held(
    client: FlaskClient, store: ObjectStore
) -> None:
    created = upload(client)

    held = store.list("held/")
    assert f"held/rec/{created['id']}.json" in held
    assert len([k for k in held if k.startswith(f"held/img/{created['id']}/")]) == 2
    assert [
        k for k in store.list("") if created["id"] in k and not k.startswith(("held/", "sha/"))
    ] == []


def test_approval_moves_the_image_out_of_held(client: FlaskClient, store: ObjectStore) -> None:
    created = upload(client)

    client.post(f"/api/images/{created['id']}/approve", headers=ADMIN)

    assert store.list("held/") == []
    assert store.list(f"img/{created['id']}/") != []
    assert store.list("lbl/cat/") == [f"lbl/cat/{created['id']}"]
    assert client.get(f"/api/images/{created['id']}").status_code == 200


def test_walking_the_cursor_one_image_at_a_time_never_meets_a_held_id(
    client: FlaskClient, vision_server: VisionServer
) -> None:
    safe = dict.fromkeys(UNSAFE, "VERY_UNLIKELY")
    held_ids: set[str] = set()
    shown_ids: list[str] = []
    for n in range(5):
        vision_server.set_mode(
            "labels", labels=(("Cat", 0.97),), safe_search=UNSAFE if n % 2 else safe
        )
        created = upload(client, f"{n}.jpg", width=40 + n)
        if created["hidden"]:
            held_ids.add(created["id"])
        else:
            shown_ids.insert(0, created["id"])
    for query in ("", "&label=cat"):
        seen, cursor = [], ""
        while True:
            body = client.get(f"/api/images?limit=1{query}&cursor={cursor}").get_json()
            seen += [image["id"] for image in body["images"]]
            if body["next_cursor"] is None:
                break
            assert body["next_cursor"] not in held_ids
            cursor = body["next_cursor"]
        assert seen == shown_ids
    assert len(held_ids) == 2


def test_the_uploader_deletes_a_held_back_image(client: FlaskClient, store: ObjectStore) -> None:
    created = upload(client)

    response = client.delete(
        f"/api/images/{created['id']}", headers={"X-Delete-Key": created["delete_key"]}
    )

    assert response.status_code == 204
    assert store.list("held/") == []
    assert client.get(f"/api/images/{created['id']}", headers=ADMIN).status_code == 404


def test_gc_keeps_held_images_and_removes_what_an_approval_left(
    client: FlaskClient, store: ObjectStore
) -> None:
    kept, approved = upload(client, "kept.jpg"), upload(client, "approved.jpg", width=41)
    leftovers = store.list(f"held/img/{approved['id']}/")
    client.post(f"/api/images/{approved['id']}/approve", headers=ADMIN)
    for key in leftovers:  # as if the approval died before removing them
        store.put(key, b"left", content_type="image/webp")

    removed = Catalog(store).sweep(grace_seconds=0)

    assert sorted(removed) == sorted(leftovers)
    assert f"held/rec/{kept['id']}.json" in store.list("held/")
    assert client.get(f"/api/images/{kept['id']}", headers=ADMIN).status_code == 200


# -- on GCS: what the public bucket shows (issue 14, items 1 and 4) -----------------------------
def test_on_gcs_the_public_reads_approved_variants_and_nothing_else(
    make_held_app: HeldAppFactory,
    vision_server: VisionServer,
    gcs_emulator: GCSEmulator,
    gcs_bucket: str,
) -> None:
    """Listing the public bucket as anyone would finds only approved variants: no record, no
    marker, no held-back image; approval moves a held image across, deletion takes it away."""
    store = make_gcs_store(gcs_bucket)
    public = public_bucket_of(gcs_bucket)
    client = make_held_app(store).test_client()
    held = upload(client, "held.jpg")
    vision_server.set_mode(
        "labels", labels=(("Cat", 0.97),), safe_search=dict.fromkeys(UNSAFE, "VERY_UNLIKELY")
    )
    shown = upload(client, "shown.jpg", width=41)
    assert (held["hidden"], shown["hidden"]) == (True, False)

    def urls(record: dict[str, Any]) -> list[str]:
        return [v["url"] for v in [*record["variants"], record["thumbnail"]]]

    shown_keys = store.list(f"img/{shown['id']}/")
    assert len(shown_keys) == 2
    assert anonymous_names(public) == shown_keys
    assert [anonymous_get(gcs_emulator, url)[0] for url in urls(shown)] == [200, 200]
    assert [anonymous_get(gcs_emulator, url)[0] for url in urls(held)] == [404, 404]
    assert f"held/rec/{held['id']}.json" in store.list("held/")

    assert client.post(f"/api/images/{held['id']}/approve", headers=ADMIN).status_code == 200

    held_keys = store.list(f"img/{held['id']}/")
    assert anonymous_names(public) == sorted(shown_keys + held_keys)
    assert [anonymous_get(gcs_emulator, url)[0] for url in urls(held)] == [200, 200]
    assert store.list("held/") == []  # moved, not copied: nothing left in the private bucket

    deleted = client.delete(
        f"/api/images/{shown['id']}", headers={"X-Delete-Key": shown["delete_key"]}
    )
    assert deleted.status_code == 204
    assert anonymous_names(public) == held_keys
    assert [anonymous_get(gcs_emulator, url)[0] for url in urls(shown)] == [404, 404]
