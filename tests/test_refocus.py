"""Moving the focal point after upload (imaging/refocus.py, POST /api/images/<id>/focus and the
detail page's form), on LocalStore and on GCSStore against the emulator."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from imaging.catalog import new_id, source_key
from imaging.errors import StorageUnavailable
from imaging.services import services_of
from imaging.storage import ObjectStore
from imaging.storage.gcs import GCSStore
from tests import images
from tests.conftest import AppFactory
from tests.faults import FlakyStore
from tests.gcs_emulator import anonymous_get, anonymous_names
from tests.uploads import post_image, upload_ok

COVER: dict[str, Any] = {"format": "png,webp", "width": "300", "height": "300", "fit": "cover"}
BLUE, RED = (0, 0, 255), (255, 0, 0)


def striped() -> bytes:
    """1200x600: a blue stripe at the left edge, a red one at the right, a busy square near the
    right (where a saliency crop goes), flat grey between."""
    picture = Image.new("RGB", (1200, 600), (60, 60, 60))
    picture.paste(BLUE, (0, 0, 120, 600))
    picture.paste(RED, (1080, 0, 1200, 600))
    picture.paste(images.noise(200, 200), (850, 200))
    return images.encode(picture, "PNG")


def public_get(request: pytest.FixtureRequest, client: FlaskClient, url: str) -> tuple[int, bytes]:
    """GET a variant's public URL as anyone: the media route, or the emulator's public bucket."""
    if url.startswith("https://storage.googleapis.com"):
        return anonymous_get(request.getfixturevalue("gcs_emulator"), url)
    response = client.get(url)
    return response.status_code, response.data


def left_pixel(data: bytes) -> object:
    return Image.open(io.BytesIO(data)).convert("RGB").getpixel((5, 150))


def refocus(client: FlaskClient, body: dict[str, Any], focus: str = "0.02,0.5", **kw: Any) -> Any:
    return client.post(
        f"/api/images/{body['id']}/focus",
        data={"focus": focus},
        headers={"X-Delete-Key": body["delete_key"], **kw.pop("headers", {})},
        **kw,
    )


def test_a_cover_upload_keeps_its_original_privately(
    request: pytest.FixtureRequest, client: FlaskClient, store: ObjectStore
) -> None:
    data = striped()
    body = upload_ok(client, data, "striped.png", **COVER)
    assert body["refocusable"] is True
    assert "original" not in body  # never in the API
    assert store.get(source_key(body["id"])) == data
    if isinstance(store, GCSStore):
        with pytest.raises(ValueError, match="private"):  # only img/ keys have a public URL
            store.public_url(source_key(body["id"]))
        assert [n for n in anonymous_names(store.public_bucket_name) if "src/" in n] == []
        bucket = f"https://storage.googleapis.com/{store.public_bucket_name}"
        assert public_get(request, client, f"{bucket}/{source_key(body['id'])}")[0] == 404
    assert client.get(f"/media/{source_key(body['id'])}").status_code == 404


def test_an_upload_that_is_not_cropped_keeps_no_original(
    client: FlaskClient, store: ObjectStore
) -> None:
    body = upload_ok(client, striped(), "striped.png", format="png", width="300")
    assert body["refocusable"] is False
    assert store.list("src/") == []


def test_the_owner_moves_the_crop_and_gets_new_urls(
    request: pytest.FixtureRequest, client: FlaskClient, store: ObjectStore
) -> None:
    body = upload_ok(client, striped(), "striped.png", **COVER)
    assert body["receipt"]["crop"] == "saliency"
    old = [v["url"] for v in body["variants"]]
    assert left_pixel(public_get(request, client, old[0])[1]) != BLUE

    response = refocus(client, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    moved = response.get_json()
    assert (moved["receipt"]["crop"], moved["receipt"]["focus"]) == ("focus", [0.02, 0.5])
    new = [v["url"] for v in moved["variants"]]
    assert set(new).isdisjoint(old)
    for url in new:  # every cover variant cut again around the left edge, and public
        status, data = public_get(request, client, url)
        assert status == 200
        assert left_pixel(data) == BLUE
    assert [public_get(request, client, url)[0] for url in old] == [404, 404]
    assert moved["thumbnail"] == body["thumbnail"]  # the thumbnail is not cropped
    assert client.get(f"/api/images/{body['id']}").get_json()["variants"] == moved["variants"]
    assert {v["name"]: v["bytes"] for v in moved["variants"]} == {
        k: v for k, v in moved["receipt"]["bytes"].items() if k != "thumb"
    }


def test_moving_the_crop_back_to_the_upload_focus_gives_the_same_bytes(
    request: pytest.FixtureRequest, local_client: FlaskClient
) -> None:
    body = upload_ok(local_client, striped(), "s.png", focus="0.9,0.5", **COVER)
    before = [public_get(request, local_client, v["url"])[1] for v in body["variants"]]
    refocus(local_client, body, "0.1,0.5")
    moved = refocus(local_client, body, "0.9,0.5").get_json()
    after = [public_get(request, local_client, v["url"])[1] for v in moved["variants"]]
    assert after == before


def test_the_admin_token_may_move_any_crop(make_app: AppFactory) -> None:
    client = make_app(admin_token="admin-secret").test_client()
    body = upload_ok(client, striped(), "s.png", **COVER)
    response = client.post(
        f"/api/images/{body['id']}/focus",
        json={"focus": [0.5, 0.5]},
        headers={"Authorization": "Bearer admin-secret"},
    )
    assert response.status_code == 200
    assert response.get_json()["receipt"]["focus"] == [0.5, 0.5]


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"X-Delete-Key": "not-the-key"}, 403)],
)
def test_moving_a_crop_needs_the_delete_key(
    local_client: FlaskClient, headers: dict[str, str], status: int
) -> None:
    body = upload_ok(local_client, striped(), "s.png", **COVER)
    response = local_client.post(
        f"/api/images/{body['id']}/focus", data={"focus": "0.1,0.5"}, headers=headers
    )
    assert response.status_code == status
    kept = local_client.get(f"/api/images/{body['id']}").get_json()
    assert kept["variants"] == body["variants"]


@pytest.mark.parametrize("focus", ["", "0.5", "1.5,0.5", "x,y", "nan,0.5"])
def test_a_bad_point_is_a_400(local_client: FlaskClient, focus: str) -> None:
    body = upload_ok(local_client, striped(), "s.png", **COVER)
    response = refocus(local_client, body, focus)
    assert response.status_code == 400
    assert "focus" in response.get_json()["message"]


def test_no_such_image_is_a_404(local_client: FlaskClient) -> None:
    for image_id in ("0000000000000deadbeef", "nonsense"):
        response = local_client.post(f"/api/images/{image_id}/focus", data={"focus": "0.5,0.5"})
        assert response.status_code == 404


def test_an_image_without_cropped_variants_is_a_409(local_client: FlaskClient) -> None:
    body = upload_ok(local_client, striped(), "s.png", format="png", width="300")
    response = refocus(local_client, body)
    assert response.status_code == 409
    assert "no cropped variants" in response.get_json()["message"]


def test_an_image_whose_original_is_gone_is_a_409(app: Flask, client: FlaskClient) -> None:
    body = upload_ok(client, striped(), "s.png", **COVER)
    services_of(app).store.delete(source_key(body["id"]))
    response = refocus(client, body)
    assert response.status_code == 409
    assert "not kept" in response.get_json()["message"]
    assert client.get(f"/api/images/{body['id']}").get_json()["variants"] == body["variants"]


class FailingRecordWrites(FlakyStore):
    """Every record overwrite fails (the commit of a re-crop); every other call works."""

    def overwrite(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        raise StorageUnavailable(detail=f"injected failure overwriting {key}")


def test_a_failed_record_write_leaves_the_image_as_it_was(
    request: pytest.FixtureRequest, make_app: AppFactory, store: ObjectStore
) -> None:
    client = make_app(storage=store).test_client()
    body = upload_ok(client, striped(), "s.png", **COVER)
    before = sorted(store.list("img/", limit=1000))
    failing = make_app(storage=FailingRecordWrites(store)).test_client()
    response = refocus(failing, body)
    assert response.status_code == 503
    assert "unchanged" in response.get_json()["message"]
    assert client.get(f"/api/images/{body['id']}").get_json()["variants"] == body["variants"]
    for v in body["variants"]:
        assert public_get(request, client, v["url"])[0] == 200
    assert sorted(store.list("img/", limit=1000)) == before  # the new files removed again


def test_storage_down_is_a_503(local_client: FlaskClient, make_app: AppFactory) -> None:
    body = upload_ok(local_client, striped(), "s.png", **COVER)
    flaky = FlakyStore(services_of(local_client.application).store)
    flaky.down = True
    response = refocus(make_app(storage=flaky).test_client(), body)
    assert response.status_code == 503


def test_deleting_the_image_removes_its_original(client: FlaskClient, store: ObjectStore) -> None:
    body = upload_ok(client, striped(), "s.png", **COVER)
    refocus(client, body)
    response = client.delete(
        f"/api/images/{body['id']}", headers={"X-Delete-Key": body["delete_key"]}
    )
    assert response.status_code == 204
    assert store.list("src/") == []
    assert store.list("img/") == []


def test_gc_sweeps_an_orphaned_original_and_replaced_files(app: Flask, client: FlaskClient) -> None:
    body = upload_ok(client, striped(), "s.png", **COVER)
    catalog = services_of(app).catalog
    store = services_of(app).store
    # What a crash leaves: an original with no record, and a file the record no longer names.
    orphan = source_key(new_id(time.time() - 3600))
    store.put(orphan, b"x", content_type="application/octet-stream")
    stray = f"img/{body['id']}/png-0000000000001abcdef.png"
    store.put(stray, b"x", content_type="image/png")
    removed = catalog.sweep(grace_seconds=60)
    assert orphan in removed
    assert stray in removed
    assert store.get(source_key(body["id"]))  # the live image keeps its original
    assert all(v["url"] for v in body["variants"])
    kept = {k for k in store.list(f"img/{body['id']}/")}
    assert len(kept) == 3  # png, webp, thumb


def test_the_zip_holds_no_original(local_client: FlaskClient) -> None:
    import zipfile

    body = upload_ok(local_client, striped(), "s.png", **COVER)
    response = local_client.get(f"/api/images.zip?ids={body['id']}")
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    names = archive.namelist()
    assert names
    assert not [n for n in names if "original" in n]
    assert all(len(data) < len(striped()) for data in map(archive.read, names))


def test_the_stats_count_the_kept_original(make_app: AppFactory) -> None:
    client = make_app(admin_token="admin-secret").test_client()
    data = striped()
    body = upload_ok(client, data, "s.png", **COVER)
    stats = client.get("/api/admin/stats", headers={"Authorization": "Bearer admin-secret"})
    files = sum(v["bytes"] for v in [*body["variants"], body["thumbnail"]])
    assert stats.get_json()["bytes_stored"] == files + len(data)


# -- the detail page's form ----------------------------------------------------------------------
def csrf_of(client: FlaskClient, image_id: str) -> str:
    page = client.get(f"/images/{image_id}").get_data(as_text=True)
    marker = 'name="csrf_token" value="'
    return page.split(marker, 1)[1].split('"', 1)[0]


def test_the_detail_page_offers_the_focal_point_form(local_client: FlaskClient) -> None:
    body = upload_ok(local_client, striped(), "s.png", **COVER)
    page = local_client.get(f"/images/{body['id']}").get_data(as_text=True)
    assert 'data-testid="focus-form"' in page
    flat = upload_ok(local_client, striped(), "s.png", format="png", width="300")
    assert 'data-testid="focus-form"' not in local_client.get(f"/images/{flat['id']}").get_data(
        as_text=True
    )


def test_the_no_script_form_moves_the_crop(local_client: FlaskClient) -> None:
    body = upload_ok(local_client, striped(), "s.png", **COVER)
    response = local_client.post(
        f"/images/{body['id']}/focus",
        data={
            "csrf_token": csrf_of(local_client, body["id"]),
            "delete_key": body["delete_key"],
            "x": "2",
            "y": "50",
        },
    )
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/images/{body['id']}#focus")
    moved = local_client.get(f"/api/images/{body['id']}").get_json()
    assert moved["receipt"]["focus"] == [0.02, 0.5]
    assert left_pixel(local_client.get(moved["variants"][0]["url"]).data) == BLUE


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"x": "200", "y": "50"}, 400),
        ({"x": "a", "y": "50"}, 400),
        ({"x": "20", "y": "50", "delete_key": "wrong"}, 403),
        ({"x": "20", "y": "50", "delete_key": ""}, 401),
    ],
)
def test_the_form_answers_every_error_with_a_page(
    local_client: FlaskClient, fields: dict[str, str], status: int
) -> None:
    body = upload_ok(local_client, striped(), "s.png", **COVER)
    data = {"csrf_token": csrf_of(local_client, body["id"]), "delete_key": body["delete_key"]}
    response = local_client.post(f"/images/{body['id']}/focus", data={**data, **fields})
    assert response.status_code == status
    assert response.mimetype == "text/html"
    assert "<h1" in response.get_data(as_text=True)


def test_the_form_needs_the_csrf_token(local_client: FlaskClient) -> None:
    body = upload_ok(local_client, striped(), "s.png", **COVER)
    response = local_client.post(
        f"/images/{body['id']}/focus",
        data={"delete_key": body["delete_key"], "x": "2", "y": "50"},
    )
    assert response.status_code in (400, 403)
    assert local_client.get(f"/api/images/{body['id']}").get_json()["variants"] == body["variants"]


def test_an_unlocked_admin_session_needs_no_key(make_app: AppFactory) -> None:
    client = make_app(admin_token="admin-secret").test_client()
    body = upload_ok(client, striped(), "s.png", **COVER)
    token = csrf_of(client, body["id"])
    client.post("/admin/unlock", data={"csrf_token": token, "token": "admin-secret"})
    response = client.post(
        f"/images/{body['id']}/focus",
        data={"csrf_token": csrf_of(client, body["id"]), "x": "2", "y": "50"},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["receipt"]["focus"] == [0.02, 0.5]


def test_an_image_uploaded_before_originals_were_kept_is_a_409(local_client: FlaskClient) -> None:
    body = upload_ok(
        local_client,
        images.png(80, 60),
        "old.png",
        format="png",
        width="40",
        height="40",
        fit="cover",
    )
    catalog = services_of(local_client.application).catalog
    record = catalog.get(body["id"])
    from dataclasses import replace

    catalog.update(record, replace(record, original={}))
    response = post_image(local_client, images.png(), "x.png")  # the app still uploads
    assert response.status_code == 201
    answer = refocus(local_client, body)
    assert answer.status_code == 409
    assert "not kept" in answer.get_json()["message"]


def test_a_relabel_during_a_re_crop_keeps_the_new_files(local_client: FlaskClient) -> None:
    from imaging.doors.relabel import Relabeller
    from imaging.labeling import Label, LabelResult

    body = upload_ok(local_client, striped(), "s.png", **COVER)

    class ReCropMeanwhile:
        """Labels "stripes", after the owner re-cropped the image (between read and write)."""

        name = "fixed"

        def label(self, image: object) -> LabelResult:
            assert refocus(local_client, body).status_code == 200
            return LabelResult(labels=(Label("stripes", 0.9, self.name),))

        def check(self) -> None:
            return None

    svc = services_of(local_client.application)
    assert Relabeller(svc.settings, ReCropMeanwhile(), svc.catalog).relabel(
        f"rec/{body['id']}.json"
    )
    record = local_client.get(f"/api/images/{body['id']}").get_json()
    assert [label["description"] for label in record["labels"]] == ["stripes"]
    assert record["receipt"]["focus"] == [0.02, 0.5]
    for v in record["variants"]:
        assert local_client.get(v["url"]).status_code == 200


class UnsafeLabeler:
    """SafeSearch finds every picture unsafe: SAFE_SEARCH_HIDE holds each one back."""

    name = "fixed"

    def label(self, image: object) -> Any:
        from imaging.labeling import LabelResult

        return LabelResult(safe_search={"adult": "VERY_LIKELY", "racy": "LIKELY"})

    def check(self) -> None:
        return None


def test_a_held_back_image_is_re_cropped_in_private(
    request: pytest.FixtureRequest, make_app: AppFactory, store: ObjectStore
) -> None:
    app = make_app(storage=store, labeler_impl=UnsafeLabeler(), safe_search_hide="LIKELY")
    client = app.test_client()
    body = upload_ok(client, striped(), "s.png", **COVER)
    assert body["hidden"] is True
    response = refocus(client, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    moved = response.get_json()
    assert moved["hidden"] is True
    record = services_of(app).catalog.get(body["id"])
    for v in record.variants:  # under held/, never public, not even briefly
        assert store.get(record.stored_key(v.key))
    assert [public_get(request, client, v["url"])[0] for v in moved["variants"]] == [404, 404]
    assert store.list("img/") == []


def test_a_failed_file_write_leaves_the_image_as_it_was(
    request: pytest.FixtureRequest, make_app: AppFactory, store: ObjectStore
) -> None:
    client = make_app(storage=store).test_client()
    body = upload_ok(client, striped(), "s.png", **COVER)
    before = sorted(store.list("img/", limit=1000))
    failing = make_app(storage=FlakyStore(store, fail_on=2)).test_client()
    response = refocus(failing, body)
    assert response.status_code == 503
    assert client.get(f"/api/images/{body['id']}").get_json()["variants"] == body["variants"]
    assert sorted(store.list("img/", limit=1000)) == before
    for v in body["variants"]:
        assert public_get(request, client, v["url"])[0] == 200


def test_a_re_crop_waits_for_a_conversion_slot_like_an_upload(make_app: AppFactory) -> None:
    app = make_app(conversion_slots=1, conversion_wait=0.1)
    client = app.test_client()
    body = upload_ok(client, striped(), "s.png", **COVER)
    with services_of(app).pipeline.conversion_slot():  # another request holds the only one
        response = refocus(client, body)
    assert response.status_code == 503
    assert response.get_json()["error"] == "busy"
    assert response.headers["Retry-After"]
    assert client.get(f"/api/images/{body['id']}").get_json()["variants"] == body["variants"]
    assert refocus(client, body).status_code == 200  # once the slot is free
