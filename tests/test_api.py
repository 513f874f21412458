"""The JSON API and the curl doors, on LocalStore and on GCSStore (emulator) alike."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest
import werkzeug.formparser
from flask import request
from flask.testing import FlaskClient
from PIL import Image

from imaging.errors import ObjectNotFound
from imaging.labeling import Box
from imaging.labeling.faces import FaceDetector
from imaging.labeling.local import LocalLabeler
from imaging.processing import encoding
from imaging.storage import ObjectStore
from imaging.web import forms
from tests import images
from tests.conftest import AppFactory
from tests.uploads import UploadActions, post_image, upload_ok


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


def test_the_form_parser_asks_the_server_for_large_pieces_of_the_body(
    client: FlaskClient,
) -> None:
    class Recording:
        """A server's body stream (read only, as gunicorn's) that notes each read's size."""

        def __init__(self, body: bytes) -> None:
            self.body = io.BytesIO(body)
            self.asked: list[int] = []

        def read(self, size: int = -1, /) -> bytes:
            self.asked.append(size)
            return self.body.read(size)

        def tell(self) -> int:  # the test client's environ builder asks
            return self.body.tell()

        def seek(self, offset: int, whence: int = 0, /) -> int:
            return self.body.seek(offset, whence)

    data = images.encode(images.noise(1000, 800), "PNG")
    body, boundary = multipart_body(data, "big.png")
    stream = Recording(body)
    response = client.post(
        "/api/images",
        input_stream=stream,
        content_length=len(body),
        content_type=f"multipart/form-data; boundary={boundary}",
    )

    assert response.status_code == 201, response.get_json()
    assert response.get_json()["bytes"] == len(data)
    # Werkzeug's parser reads 64 KiB at a time (37 reads here); the server is asked for 1 MiB
    # pieces (and the rest of the body, and at most one read more to find its end).
    assert len(stream.asked) <= -(-len(body) // forms.FORM_READ_BUFFER) + 1

    small = Recording(multipart_body(images.jpeg(80, 60), "small.jpg")[0])
    response = client.post(
        "/api/images",
        input_stream=small,
        content_length=len(small.body.getvalue()),
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    assert response.status_code == 201, response.get_json()
    assert small.asked[0] == len(small.body.getvalue())  # a small body: one read of all of it


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


# -- smart crop: fit=cover keeps the subject, and the receipt says how -------------------------
COVER: dict[str, Any] = {"format": "png", "width": "300", "height": "300", "fit": "cover"}


def _off_centre_subject() -> Image.Image:
    """A flat 1200x600 picture with a bright textured square near the right edge."""
    picture = Image.new("RGB", (1200, 600), (60, 60, 60))
    picture.paste(images.noise(200, 200), (950, 200))
    return picture


def _variant(client: FlaskClient, body: dict[str, Any]) -> Image.Image:
    response = client.get(body["variants"][0]["url"])
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.data)).convert("L")


def _detail(im: Image.Image) -> float:
    return float(np.asarray(im, dtype=np.float32).std())


def test_cover_keeps_an_off_centre_subject_and_says_so(local_client: FlaskClient) -> None:
    data = images.encode(_off_centre_subject(), "PNG")
    body = upload_ok(local_client, data, "square.png", **COVER)
    assert body["receipt"]["crop"] == "saliency"
    out = _variant(local_client, body)
    assert out.size == (300, 300)
    assert _detail(out.crop((180, 105, 270, 195))) > 15  # the square, whole


def test_smart_crop_off_cuts_the_centre(make_app: AppFactory) -> None:
    client = make_app(smart_crop="off").test_client()
    body = upload_ok(client, images.encode(_off_centre_subject(), "PNG"), "square.png", **COVER)
    assert body["receipt"]["crop"] == "centre"
    assert _detail(_variant(client, body)) < 2  # only the flat background


def test_a_flat_picture_is_cut_at_the_centre(local_client: FlaskClient) -> None:
    flat = images.encode(Image.new("RGB", (1200, 600), (90, 90, 90)), "PNG")
    body = upload_ok(local_client, flat, "flat.png", **COVER)
    assert body["receipt"]["crop"] == "centre"


def test_an_upload_that_is_not_cropped_has_no_crop_in_its_receipt(
    local_client: FlaskClient,
) -> None:
    data = images.encode(_off_centre_subject(), "PNG")
    body = upload_ok(local_client, data, "square.png", format="png", width="300")
    assert "crop" not in body["receipt"]


def test_a_focal_point_given_at_upload_wins_and_is_kept(local_client: FlaskClient) -> None:
    picture = _off_centre_subject()
    picture.paste((0, 0, 255), (0, 0, 120, 600))  # a blue stripe at the left edge
    data = images.encode(picture, "PNG")
    body = upload_ok(local_client, data, "square.png", focus="0.02, 0.5", **COVER)
    assert (body["receipt"]["crop"], body["receipt"]["focus"]) == ("focus", [0.02, 0.5])
    out = Image.open(io.BytesIO(local_client.get(body["variants"][0]["url"]).data))
    assert out.convert("RGB").getpixel((5, 150)) == (0, 0, 255)
    kept = local_client.get(f"/api/images/{body['id']}").get_json()
    assert kept["receipt"]["focus"] == [0.02, 0.5]


def test_the_same_bytes_with_another_focus_are_another_conversion(
    local_client: FlaskClient,
) -> None:
    data = images.encode(_off_centre_subject(), "PNG")
    first = upload_ok(local_client, data, "a.png", focus="0.1,0.5", **COVER)
    second = upload_ok(local_client, data, "a.png", focus="0.9,0.5", **COVER)
    assert first["id"] != second["id"]


@pytest.mark.parametrize("focus", ["0.5", "0.5,0.5,0.5", "x,y", "1.5,0.5", "0.5,-0.1", "nan,0.5"])
def test_a_bad_focal_point_is_a_400(local_client: FlaskClient, focus: str) -> None:
    response = post_image(local_client, images.png(), "a.png", focus=focus, **COVER)
    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_request"
    assert response.get_json()["message"] == "focus must be two numbers x,y between 0 and 1."


class _CountingDetector(FaceDetector):
    """The real detector, counting its runs: an upload detects faces once, not twice."""

    def __init__(self) -> None:
        super().__init__()
        self.runs = 0

    def detect(self, picture: Image.Image) -> tuple[Box, ...]:
        self.runs += 1
        return super().detect(picture)


def test_cover_keeps_the_face_found_and_labels_reuse_it(
    make_app: AppFactory, model_cache: Path
) -> None:
    detector = _CountingDetector()
    labeler = LocalLabeler(cache_dir=model_cache, faces=detector)
    client = make_app(labeler_impl=labeler).test_client()
    canvas = Image.new("RGB", (1600, 600), (200, 200, 200))
    canvas.paste(images.noise(300, 300), (50, 150))  # more detail than the face, far from it
    canvas.paste(images.portrait().resize((500, 500)), (1050, 50))
    data = images.encode(canvas, "JPEG", quality=90)
    body = upload_ok(client, data, "astronaut.jpg", **{**COVER, "format": "jpg"})
    assert body["receipt"]["crop"] == "faces"
    assert detector.runs == 1  # for the crop, and the labels read the same boxes
    assert body["people"] >= 1
    assert {"person", "people"} & {label["description"] for label in body["labels"]}
    # The window (at half size: 800x300) centres on the faces, so the best face is inside it.
    faces = body["faces"]
    left = min(f["left"] for f in faces)
    right = max(f["left"] + f["width"] for f in faces)
    start = round(min(max((left + right) / 2 * 800 - 150, 0), 800 - 300))
    best = faces[0]
    assert start <= best["left"] * 800
    assert (best["left"] + best["width"]) * 800 <= start + 300
    assert start > 175  # past the noise on the left (25..175 at half size)
    expected = canvas.resize((800, 300), Image.Resampling.LANCZOS).crop(
        (start, 0, start + 300, 300)
    )
    out = Image.open(io.BytesIO(client.get(body["variants"][0]["url"]).data)).convert("RGB")
    assert out.size == (300, 300)
    diff = np.abs(np.asarray(out, np.int16) - np.asarray(expected, np.int16))
    assert float(diff.mean()) < 6


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
