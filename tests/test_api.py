"""The JSON API and the curl doors, on LocalStore and on GCSStore (emulator) alike."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from typing import Any, NoReturn

import pytest
import werkzeug.formparser
from flask import request
from flask.testing import FlaskClient

from imaging.errors import ObjectNotFound
from imaging.processing import encoding
from imaging.storage import ObjectStore
from tests import images
from tests.conftest import AppFactory
from tests.uploads import UploadActions, post_image


def test_upload_answers_201_with_the_record(uploads: UploadActions) -> None:
    response = uploads.post(images.jpeg(80, 60), format="webp,jpg")
    assert response.status_code == 201
    body = response.get_json()
    assert body["name"] == "photo.jpg"
    assert (body["width"], body["height"], body["source_format"]) == (80, 60, "jpeg")
    assert [v["format"] for v in body["variants"]] == ["webp", "jpeg"]
    for variant in body["variants"]:
        assert variant["url"]
        assert variant["bytes"] > 0
        assert (variant["width"], variant["height"]) == (80, 60)
    assert body["label_status"] == "off"
    assert body["labels"] == []
    assert body["delete_key"]
    assert response.headers["Location"].endswith(f"/api/images/{body['id']}")


def test_default_format_is_webp(uploads: UploadActions) -> None:
    body = uploads.post(images.png()).get_json()
    assert [v["format"] for v in body["variants"]] == ["webp"]


def test_width_and_height_bound_the_variants(uploads: UploadActions) -> None:
    body = uploads.post(images.jpeg(400, 200), format="png", width="100").get_json()
    assert (body["variants"][0]["width"], body["variants"][0]["height"]) == (100, 50)


def test_seed_convert_form_works_unchanged(uploads: UploadActions) -> None:
    response = uploads.post(images.png(), "logo.png", url="/convert", name="logo2", format="jpg")
    assert response.status_code == 201
    body = response.get_json()
    assert body["name"] == "logo2"
    assert [v["format"] for v in body["variants"]] == ["jpeg"]
    assert "logo2" not in body["variants"][0]["url"]  # a display name, never a storage path


def test_inline_answers_with_the_converted_bytes(client: FlaskClient) -> None:
    response = client.post(
        "/api/images?inline=1",
        data={"image": (io.BytesIO(images.png()), "a.png"), "format": "jpg"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201
    assert response.mimetype == "image/jpeg"
    assert images.open_image(response.data).format == "JPEG"
    assert response.headers["X-Image-Id"]


def test_inline_with_two_formats_is_400(client: FlaskClient) -> None:
    response = client.post(
        "/api/images?inline=1",
        data={"image": (io.BytesIO(images.png()), "a.png"), "format": "jpg,webp"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_request"


def test_several_files_in_one_request_each_get_a_record(client: FlaskClient) -> None:
    response = client.post(
        "/api/images",
        data={"image": [(io.BytesIO(images.png()), "a.png"), (io.BytesIO(images.jpeg()), "b.jpg")]},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201
    assert [i["name"] for i in response.get_json()["images"]] == ["a.png", "b.jpg"]


def test_missing_file_is_400(client: FlaskClient) -> None:
    response = client.post("/api/images", data={"format": "webp"})
    assert response.status_code == 400
    assert response.get_json() == {
        "error": "missing_file",
        "message": "No file was sent. Send the image in the form field 'image'.",
    }


def test_empty_file_is_400(uploads: UploadActions) -> None:
    response = uploads.post(b"", "empty.png")
    assert response.status_code == 400


def multipart_body(data: bytes, filename: str) -> tuple[bytes, str]:
    """A hand-built multipart body: werkzeug's test client spools big ones to a file it leaks."""
    boundary = "----cloud-image-app-test"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), boundary


def test_file_over_the_upload_limit_is_413(make_app: AppFactory) -> None:
    client = make_app(max_upload_mb=1).test_client()
    body, boundary = multipart_body(b"\xff" * (1024 * 1024 + 10), "big.jpg")
    response = client.post(
        "/api/images", data=body, content_type=f"multipart/form-data; boundary={boundary}"
    )
    assert response.status_code == 413
    assert response.get_json()["error"] == "too_large"


def test_request_over_the_body_limit_is_413_before_parsing(make_app: AppFactory) -> None:
    client = make_app(max_upload_mb=1).test_client()
    body, boundary = multipart_body(b"\xff" * (2 * 1024 * 1024), "huge.jpg")
    response = client.post(
        "/api/images", data=body, content_type=f"multipart/form-data; boundary={boundary}"
    )
    assert response.status_code == 413
    assert response.get_json()["message"].startswith("The upload is larger than")


def test_a_2_mb_upload_is_kept_in_memory_never_spooled_to_a_temporary_file(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_temporary_file(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("an upload was spooled to disk")

    monkeypatch.setattr(werkzeug.formparser, "SpooledTemporaryFile", no_temporary_file)
    data = images.encode(images.noise(1000, 800), "PNG")
    assert len(data) > 2 * 1024 * 1024

    body, boundary = multipart_body(data, "big.png")  # raw: the test client spools its own
    response = client.post(
        "/api/images", data=body, content_type=f"multipart/form-data; boundary={boundary}"
    )

    assert response.status_code == 201, response.get_json()


def test_file_parts_stay_in_memory_only_within_the_request_cap(make_app: AppFactory) -> None:
    app = make_app(max_upload_mb=1)
    body, boundary = multipart_body(b"\xff" * (600 * 1024), "x.jpg")
    context = app.test_request_context(
        "/api/images",
        method="POST",
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    with context:
        assert isinstance(request.files["image"].stream, io.BytesIO)
        request.close()
    with app.test_request_context(
        "/api/images",
        method="POST",
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
    ):
        # A request allowed more than MAX_CONTENT_LENGTH gets Werkzeug's spooled file back.
        request.max_content_length = 64 * 1024 * 1024
        assert not isinstance(request.files["image"].stream, io.BytesIO)
        request.close()


def test_not_an_image_is_415_naming_the_accepted_formats(uploads: UploadActions) -> None:
    response = uploads.post(b"<html><script>alert(1)</script></html>", "evil.png")
    assert response.status_code == 415
    body = response.get_json()
    assert body["error"] == "unsupported_format"
    assert "JPEG" in body["message"]
    assert "WebP" in body["message"]


def test_image_over_the_pixel_limit_is_422(make_app: AppFactory) -> None:
    client = make_app(max_pixels=1000).test_client()
    response = post_image(client, images.png(64, 48))
    assert response.status_code == 422
    assert response.get_json()["error"] == "limit_exceeded"


def test_image_over_the_side_limit_is_422(make_app: AppFactory) -> None:
    client = make_app(max_side=50).test_client()
    assert post_image(client, images.png(64, 48)).status_code == 422


@pytest.mark.parametrize(
    ("field", "value"),
    [("format", "bmp"), ("width", "wide"), ("width", "0"), ("quality", "101"), ("fit", "zoom")],
)
def test_bad_option_is_400_with_a_message(uploads: UploadActions, field: str, value: str) -> None:
    response = uploads.post(images.png(), **{field: value})
    assert response.status_code == 400
    assert (
        field in response.get_json()["message"].lower() or value in response.get_json()["message"]
    )


def test_listing_is_newest_first_with_a_cursor(client: FlaskClient, uploads: UploadActions) -> None:
    ids = [uploads.post(images.jpeg(20 + i, 20)).get_json()["id"] for i in range(5)]
    first = client.get("/api/images?limit=2").get_json()
    assert [i["id"] for i in first["images"]] == ids[::-1][:2]
    second = client.get(f"/api/images?limit=2&cursor={first['next_cursor']}").get_json()
    assert [i["id"] for i in second["images"]] == ids[::-1][2:4]
    last = client.get(f"/api/images?limit=2&cursor={second['next_cursor']}").get_json()
    assert [i["id"] for i in last["images"]] == ids[:1]
    assert last["next_cursor"] is None


def test_cursor_is_stable_while_new_uploads_arrive(
    client: FlaskClient, uploads: UploadActions
) -> None:
    ids = [uploads.post(images.jpeg(20 + i, 20)).get_json()["id"] for i in range(3)]
    first = client.get("/api/images?limit=1").get_json()
    uploads.post(images.jpeg(99, 20))
    second = client.get(f"/api/images?limit=1&cursor={first['next_cursor']}").get_json()
    assert [i["id"] for i in second["images"]] == [ids[1]]


def test_show_returns_the_record(client: FlaskClient, uploads: UploadActions) -> None:
    created = uploads.post(images.jpeg()).get_json()
    shown = client.get(f"/api/images/{created['id']}").get_json()
    assert shown["id"] == created["id"]
    assert "delete_key" not in shown
    assert "delete_key_hash" not in shown


def test_unknown_id_is_404(client: FlaskClient) -> None:
    assert client.get("/api/images/0000000000000deadbeef").status_code == 404
    assert client.get("/api/images/../../etc/passwd").status_code == 404


def test_delete_removes_the_record_and_every_variant(
    client: FlaskClient, uploads: UploadActions, store: ObjectStore
) -> None:
    created = uploads.post(images.jpeg(), format="webp,png").get_json()
    keys = [k for k in store.list(f"img/{created['id']}/")]
    assert len(keys) == 3  # webp, png, thumb
    response = client.delete(
        f"/api/images/{created['id']}", headers={"X-Delete-Key": created["delete_key"]}
    )
    assert response.status_code == 204
    assert client.get(f"/api/images/{created['id']}").status_code == 404
    for key in keys:
        with pytest.raises(ObjectNotFound):
            store.get(key)
    assert client.get("/api/images").get_json()["images"] == []


def test_duplicate_upload_returns_the_existing_record(
    uploads: UploadActions, store: ObjectStore
) -> None:
    data = images.jpeg(70, 50)
    first = uploads.post(data, format="webp")
    again = uploads.post(data, "other-name.jpg", format="webp")
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.get_json()["duplicate"] is True
    assert len(store.list("rec/")) == 1


def test_same_bytes_with_other_options_is_a_new_image(uploads: UploadActions) -> None:
    data = images.jpeg(70, 50)
    first = uploads.post(data, format="webp").get_json()
    other = uploads.post(data, format="png").get_json()
    assert other["id"] != first["id"]


def test_formats_endpoint_lists_the_registry(local_client: FlaskClient) -> None:
    names = [f["name"] for f in local_client.get("/api/formats").get_json()["formats"]]
    assert names == ["webp", "jpeg", "png", "avif", "gif", "svg"]


def test_ids_minted_in_one_millisecond_still_sort_newest_first() -> None:
    from imaging.catalog import new_id

    ids = [new_id() for _ in range(50)]
    assert ids == sorted(ids, reverse=True)


def test_outputs_never_exceed_max_output_side(make_app: AppFactory) -> None:
    client = make_app(max_output_side=40).test_client()
    body = post_image(client, images.jpeg(80, 60), format="webp,png").get_json()
    assert {(v["width"], v["height"]) for v in body["variants"]} == {(40, 30)}
    assert (body["width"], body["height"]) == (80, 60)  # the record keeps the source's size


def test_a_box_larger_than_max_output_side_is_400(make_app: AppFactory) -> None:
    client = make_app(max_output_side=40).test_client()
    assert post_image(client, images.jpeg(80, 60), width="41").status_code == 400


def test_a_logo_asked_for_as_svg_gets_a_traced_svg_variant(
    uploads: UploadActions, store: ObjectStore
) -> None:
    response = uploads.post(images.encode(images.logo(), "PNG"), "logo.png", format="svg,png")
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    svg = body["variants"][0]
    assert (svg["format"], svg["content_type"]) == ("svg", "image/svg+xml")
    assert (svg["width"], svg["height"]) == (400, 300)
    (key,) = [k for k in store.list(f"img/{body['id']}/") if k.endswith(".svg")]
    root = ET.fromstring(store.get(key))  # noqa: S314 (our own output)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(root) >= 3
    assert {child.tag for child in root} == {"{http://www.w3.org/2000/svg}path"}


def test_a_photo_asked_for_as_svg_is_422_and_nothing_is_stored(
    uploads: UploadActions, store: ObjectStore
) -> None:
    response = uploads.post(images.photo("astronaut"), format="webp,svg")
    assert response.status_code == 422
    assert response.get_json()["error"] == "too_detailed"
    assert response.get_json()["message"] == (
        "This picture is too detailed to trace as SVG; ask for png or webp."
    )
    assert store.list("") == []


def test_a_photo_refused_as_svg_costs_no_other_encode(
    local_client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[str] = []
    pillow = encoding.RENDERERS["pillow"]

    def counted(decoded: Any, spec: Any, **kw: Any) -> Any:
        encoded.append(spec.format)
        return pillow(decoded, spec, **kw)

    monkeypatch.setitem(encoding.RENDERERS, "pillow", counted)
    response = post_image(local_client, images.photo("astronaut"), format="webp,png,svg")
    assert response.status_code == 422
    assert encoded == []  # the trace is tried first, and refused before any raster was made
    logo = post_image(local_client, images.encode(images.logo(), "PNG"), format="webp,svg")
    assert [v["format"] for v in logo.get_json()["variants"]] == ["webp", "svg"]
    assert sorted(encoded) == ["webp", "webp"]  # the variant and the thumbnail
