"""Acting on several images at once: bulk delete (each id answers for itself) and the streamed ZIP.

Every test that stores images runs on LocalStore and on GCSStore against the emulator; held-back
images come from the real SafeSearch path (the local Vision stand-in finds them unsafe).
"""

from __future__ import annotations

import io
import re
import tracemalloc
import zipfile
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from imaging.errors import StorageUnavailable
from imaging.storage import ObjectStore
from imaging.storage.local import LocalStore
from tests import images
from tests.conftest import AppFactory
from tests.faults import FlakyStore
from tests.test_admin import UNSAFE
from tests.uploads import upload_ok
from tests.vision_server import SAFE_SEARCH_CATEGORIES, VisionServer

ADMIN_TOKEN = "admin-secret"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SAFE = dict.fromkeys(SAFE_SEARCH_CATEGORIES, "VERY_UNLIKELY")


@pytest.fixture
def app(make_app: AppFactory, store: ObjectStore, vision_server: VisionServer) -> Flask:
    """Vision labels (and judges) every upload; SafeSearch holds back what it finds unsafe."""
    vision_server.set_mode("labels", labels=(("Cat", 0.97),), safe_search=SAFE)
    return make_app(
        storage=store,
        labeler="vision",
        vision_api_endpoint=vision_server.endpoint,
        safe_search=True,
        safe_search_hide="LIKELY",
        admin_token="admin-secret",
    )


@pytest.fixture
def held(client: FlaskClient, vision_server: VisionServer) -> dict[str, Any]:
    """One image SafeSearch held back (its record, delete key and all)."""
    vision_server.set_mode("labels", safe_search=UNSAFE)
    created: dict[str, Any] = upload_ok(client, images.jpeg(44, 30), "held.jpg")
    vision_server.set_mode("labels", safe_search=SAFE)
    assert created["hidden"] is True
    return created


def upload(client: FlaskClient, name: str, width: int = 40, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = upload_ok(client, images.jpeg(width, 30), name, **fields)
    return body


def bulk_delete(client: FlaskClient, body: Any, **kw: Any) -> Any:
    return client.post("/api/images/delete", json=body, **kw)


def verdicts(response: Any) -> dict[str, int]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return {r["id"]: r["status"] for r in response.get_json()["results"]}


def exists(client: FlaskClient, image_id: str) -> bool:
    return client.get(f"/api/images/{image_id}", headers=ADMIN).status_code == 200


def stored_bytes(store: ObjectStore, url: str) -> bytes:
    """What a public URL serves, read from the store (GCS's URLs point at the real Google)."""
    return store.get("img/" + unquote(url.split("/img/", 1)[1]))


# -- bulk delete --------------------------------------------------------------------------------
def test_each_id_of_a_bulk_delete_answers_for_itself(
    client: FlaskClient, held: dict[str, Any], store: ObjectStore
) -> None:
    mine, other, wrong = (upload(client, f"{n}.jpg", 40 + i) for i, n in enumerate("abc"))
    missing = "0000000000000abcdef12"

    response = bulk_delete(
        client,
        {
            "ids": [mine["id"], other["id"], wrong["id"], held["id"], missing],
            "keys": {mine["id"]: mine["delete_key"], wrong["id"]: other["delete_key"]},
        },
    )

    assert verdicts(response) == {
        mine["id"]: 204,
        other["id"]: 401,  # no key sent for it
        wrong["id"]: 403,  # another image's key
        held["id"]: 404,  # held back: not there for this caller
        missing: 404,
    }
    assert response.get_json()["deleted"] == 1
    assert not exists(client, mine["id"])
    assert all(exists(client, i["id"]) for i in (other, wrong, held))
    assert store.list(f"img/{mine['id']}/") == []
    refused = {r["id"]: r for r in response.get_json()["results"]}[wrong["id"]]
    assert refused["error"] == "forbidden"
    assert refused["message"]


def test_the_uploader_deletes_a_held_back_image_with_its_key(
    client: FlaskClient, held: dict[str, Any], store: ObjectStore
) -> None:
    response = bulk_delete(client, {"ids": [held["id"]], "keys": {held["id"]: held["delete_key"]}})

    assert verdicts(response) == {held["id"]: 204}
    assert store.list(f"held/img/{held['id']}/") == []


def test_the_admin_token_deletes_any_image_without_keys(
    client: FlaskClient, held: dict[str, Any]
) -> None:
    a, b = upload(client, "a.jpg", 40), upload(client, "b.jpg", 41)

    response = bulk_delete(client, {"ids": [a["id"], b["id"], held["id"]]}, headers=ADMIN)

    assert verdicts(response) == {a["id"]: 204, b["id"]: 204, held["id"]: 204}
    assert client.get("/api/images").get_json()["images"] == []


def test_a_bulk_delete_naming_too_many_ids_deletes_nothing(make_app: AppFactory) -> None:
    client = make_app(max_bulk_images=2).test_client()
    made = [upload(client, f"{n}.jpg", 40 + i) for i, n in enumerate("abc")]

    response = bulk_delete(
        client, {"ids": [m["id"] for m in made], "keys": {m["id"]: m["delete_key"] for m in made}}
    )

    assert response.status_code == 400
    assert "at most 2" in response.get_json()["message"]
    assert len(client.get("/api/images").get_json()["images"]) == 3


def test_repeated_ids_are_deleted_and_answered_once(client: FlaskClient) -> None:
    a = upload(client, "a.jpg")

    response = bulk_delete(client, {"ids": [a["id"], a["id"]], "keys": {a["id"]: a["delete_key"]}})

    assert [r["id"] for r in response.get_json()["results"]] == [a["id"]]


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"ids": "abc"},
        {"ids": [1, 2]},
        {"ids": []},
        {"ids": ["", " "]},
        {"ids": ["x"], "keys": ["k"]},
        {"ids": ["x"], "keys": {"x": 5}},
    ],
)
def test_a_malformed_bulk_delete_is_a_clear_400(local_client: FlaskClient, body: Any) -> None:
    response = bulk_delete(local_client, body)

    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_request"


def test_a_storage_outage_answers_503_for_each_id_not_a_500(
    make_app: AppFactory, local_store: LocalStore
) -> None:
    flaky = FlakyStore(local_store)
    client = make_app(storage=flaky).test_client()
    a = upload(client, "a.jpg")
    flaky.down = True

    response = bulk_delete(client, {"ids": [a["id"]], "keys": {a["id"]: a["delete_key"]}})

    assert verdicts(response) == {a["id"]: 503}
    flaky.down = False
    assert client.get(f"/api/images/{a['id']}").status_code == 200


# -- the admin's browser session, and the page door -----------------------------------------------
def csrf(client: FlaskClient, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'(?:name="csrf_token" value|data-csrf)="([^"]+)"', page)
    assert match
    return match.group(1)


def unlock_admin(client: FlaskClient, token: str = ADMIN_TOKEN) -> Any:
    return client.post(
        "/admin/unlock", data={"token": token, "csrf_token": csrf(client, "/admin/unlock")}
    )


def page_delete(client: FlaskClient, body: Any, token: str | None = None) -> Any:
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["X-CSRF-Token"] = token
    return client.post("/images/delete", json=body, headers=headers)


def test_an_admin_session_deletes_any_image_through_the_page_door(client: FlaskClient) -> None:
    a, b = upload(client, "a.jpg", 40), upload(client, "b.jpg", 41)
    assert unlock_admin(client).status_code == 303

    response = page_delete(client, {"ids": [a["id"], b["id"]]}, csrf(client, "/"))

    assert verdicts(response) == {a["id"]: 204, b["id"]: 204}


def test_the_page_door_needs_the_csrf_token(client: FlaskClient) -> None:
    a = upload(client, "a.jpg")
    unlock_admin(client)

    response = page_delete(client, {"ids": [a["id"]]}, "forged")

    assert response.status_code == 403
    assert exists(client, a["id"])


def test_without_an_admin_session_the_page_door_needs_keys(client: FlaskClient) -> None:
    a, b = upload(client, "a.jpg", 40), upload(client, "b.jpg", 41)

    response = page_delete(
        client,
        {"ids": [a["id"], b["id"]], "keys": {a["id"]: a["delete_key"]}},
        csrf(client, "/admin/unlock"),
    )

    assert verdicts(response) == {a["id"]: 204, b["id"]: 401}


def test_the_api_door_ignores_an_admin_session_cookie(client: FlaskClient) -> None:
    a = upload(client, "a.jpg")
    unlock_admin(client)

    response = bulk_delete(client, {"ids": [a["id"]]})

    assert verdicts(response) == {a["id"]: 401}


def test_a_wrong_admin_token_does_not_unlock_the_session(client: FlaskClient) -> None:
    a = upload(client, "a.jpg")

    assert unlock_admin(client, "guess").status_code == 403
    assert client.get("/admin/stats").status_code == 401
    token = csrf(client, "/admin/unlock")
    assert verdicts(page_delete(client, {"ids": [a["id"]]}, token)) == {a["id"]: 401}


def test_signing_out_ends_the_admin_session(client: FlaskClient) -> None:
    unlock_admin(client)
    assert client.get("/admin/stats").status_code == 200

    client.post("/admin/lock", data={"csrf_token": csrf(client, "/admin/stats")})

    assert client.get("/admin/stats").status_code == 401


def test_a_rotated_admin_token_ends_the_sessions_unlocked_with_the_old_one(
    make_app: AppFactory, local_store: LocalStore
) -> None:
    old = make_app(admin_token="old-token").test_client()
    unlock_admin(old, "old-token")
    assert old.get("/admin/stats").status_code == 200
    rotated = make_app(admin_token="new-token").test_client()
    rotated.set_cookie("session", old.get_cookie("session").value)  # type: ignore[union-attr]

    assert rotated.get("/admin/stats").status_code == 401


def test_the_gallery_offers_the_admin_the_page_door_and_others_the_api_door(
    client: FlaskClient,
) -> None:
    upload(client, "a.jpg")

    stranger = client.get("/").get_data(as_text=True)
    unlock_admin(client)
    admin = client.get("/").get_data(as_text=True)

    assert 'data-admin="false"' in stranger
    assert 'data-delete-url="/api/images/delete"' in stranger
    assert "data-csrf" not in stranger
    assert 'data-admin="true"' in admin
    assert 'data-delete-url="/images/delete"' in admin


# -- the ZIP ------------------------------------------------------------------------------------
def zip_of(client: FlaskClient, ids: list[str], **kw: Any) -> Any:
    return client.get(f"/api/images.zip?ids={','.join(ids)}", **kw)


def test_the_zip_holds_each_images_main_variant_byte_for_byte(
    client: FlaskClient, store: ObjectStore
) -> None:
    a = upload(client, "chelsea.jpg", 40, format="jpeg,webp")
    b = upload(client, "coffee.png", 50, format="png")

    response = zip_of(client, [a["id"], b["id"]])

    assert response.status_code == 200
    assert response.mimetype == "application/zip"
    assert 'filename="images-2.zip"' in response.headers["Content-Disposition"]
    assert response.headers["Cache-Control"] == "no-store"
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    assert archive.testzip() is None
    assert archive.namelist() == ["chelsea.jpg", "coffee.png"]
    assert archive.read("chelsea.jpg") == stored_bytes(store, a["variants"][0]["url"])
    assert archive.read("coffee.png") == stored_bytes(store, b["variants"][0]["url"])
    assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}


def test_zip_entry_names_are_never_paths_and_never_clash(client: FlaskClient) -> None:
    made = [
        upload(client, "../../etc/passwd", 40),
        upload(client, "C:\\temp\\x.jpg", 41),
        upload(client, "same.jpg", 42),
        upload(client, "same.jpg", 43),
        upload(client, "...", 44),
    ]

    names = zipfile.ZipFile(io.BytesIO(zip_of(client, [m["id"] for m in made]).data)).namelist()

    assert names[0] == "etc_passwd.webp"
    assert names[1].startswith("C_")
    assert "\\" not in names[1]
    assert ":" not in names[1]
    assert names[2:] == ["same.webp", "same-2.webp", "image.webp"]
    assert not any(n.startswith((".", "/")) or "/" in n for n in names)


def test_the_zip_leaves_out_held_back_images_unless_the_admin_asks(
    client: FlaskClient, held: dict[str, Any]
) -> None:
    a = upload(client, "a.jpg")

    public = zip_of(client, [a["id"], held["id"]])
    admin = zip_of(client, [a["id"], held["id"]], headers=ADMIN)

    assert zipfile.ZipFile(io.BytesIO(public.data)).namelist() == ["a.webp"]
    assert public.headers["X-Skipped-Images"] == "1"
    assert zipfile.ZipFile(io.BytesIO(admin.data)).namelist() == ["a.webp", "held.webp"]
    assert "X-Skipped-Images" not in admin.headers


def test_the_uploaders_key_does_not_put_a_held_back_image_in_a_zip(
    client: FlaskClient, held: dict[str, Any]
) -> None:
    response = zip_of(client, [held["id"]], headers={"X-Delete-Key": held["delete_key"]})

    assert response.status_code == 404


@pytest.mark.parametrize("query", ["", "?ids=", "?ids=,,", "?ids=nope,0000000000000abcdef12"])
def test_a_zip_of_nothing_it_can_give_is_a_clear_4xx(local_client: FlaskClient, query: str) -> None:
    response = local_client.get(f"/api/images.zip{query}")

    assert response.status_code in (400, 404)
    assert response.get_json()["message"]


def test_a_zip_naming_too_many_images_is_refused_before_any_read(make_app: AppFactory) -> None:
    client = make_app(max_bulk_images=2).test_client()
    made = [upload(client, f"{n}.jpg", 40 + i) for i, n in enumerate("abc")]

    response = client.get("/api/images.zip?" + "&".join(f"ids={m['id']}" for m in made))

    assert response.status_code == 400
    assert "at most 2" in response.get_json()["message"]


def noise_png(side: int, seed: int) -> bytes:
    """A PNG that does not compress: its variant is about as large as its pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def test_the_zip_is_streamed_a_chunk_at_a_time_never_held_whole(
    make_app: AppFactory,
) -> None:
    client = make_app(max_upload_mb=4).test_client()
    ids = [
        upload_ok(client, noise_png(400, n), f"noise{n}.png", format="png")["id"] for n in range(6)
    ]

    tracemalloc.start()
    try:
        response = zip_of(client, ids)
        assert response.is_streamed
        sizes = [len(chunk) for chunk in response.response]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    total = sum(sizes)
    assert total > 6 * 400 * 400 * 3  # six incompressible images, stored
    assert len(sizes) > 6 * 4  # every image in several pieces
    assert max(sizes) <= 64 * 1024 + 1024  # a 64 KiB piece and at most a header with it
    # Reading one image at a time: the peak is a small part of the archive.
    assert peak < total / 2, (peak, total)


def test_a_storage_failure_mid_zip_cuts_the_stream_short(
    make_app: AppFactory, local_store: LocalStore
) -> None:
    flaky = FlakyStore(local_store)
    client = make_app(storage=flaky).test_client()
    ids = [upload(client, f"{n}.jpg", 40 + i)["id"] for i, n in enumerate("ab")]

    response = zip_of(client, ids)  # the records are read: the stream has not started
    flaky.down = True

    assert response.status_code == 200
    with pytest.raises(StorageUnavailable):
        response.get_data()
