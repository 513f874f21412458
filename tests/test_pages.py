"""The HTML pages through Flask's test client: gallery, filters, detail, upload form, errors."""

from __future__ import annotations

import io
import re

from flask.testing import FlaskClient

from tests import images
from tests.conftest import AppFactory
from tests.uploads import upload_ok


def csrf(client: FlaskClient) -> str:
    page = client.get("/upload").get_data(as_text=True)
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', page
    )
    assert match, "the upload form carries a CSRF token"
    return match.group(1)


def upload_via_api(client: FlaskClient, data: bytes, name: str) -> dict[str, object]:
    body: dict[str, object] = upload_ok(client, data, name)
    return body


def test_gallery_shows_uploads_newest_first(client: FlaskClient) -> None:
    upload_via_api(client, images.jpeg(30, 20), "first.jpg")
    upload_via_api(client, images.jpeg(31, 20), "second.jpg")
    page = client.get("/").get_data(as_text=True)
    assert page.index("second.jpg") < page.index("first.jpg")
    assert page.count('data-testid="gallery-card"') == 2


def test_gallery_filters_by_label_through_the_label_index(
    make_app: AppFactory, vision_server: object
) -> None:
    endpoint = vision_server.endpoint  # type: ignore[attr-defined]
    client = make_app(labeler="vision", vision_api_endpoint=endpoint).test_client()
    cat = upload_via_api(client, images.jpeg(40, 30), "cat.jpg")
    vision_server.set_mode("labels", labels=(("Coffee cup", 0.9),))  # type: ignore[attr-defined]
    upload_via_api(client, images.jpeg(41, 30), "cup.jpg")
    page = client.get("/?label=cat").get_data(as_text=True)
    assert "cat.jpg" in page
    assert "cup.jpg" not in page
    api = client.get("/api/images?label=coffee-cup").get_json()
    assert [i["name"] for i in api["images"]] == ["cup.jpg"]
    assert cat["labels"][0]["description"] == "Cat"  # type: ignore[index]


def test_gallery_pages_with_an_older_link(make_app: AppFactory) -> None:
    client = make_app().test_client()
    from imaging.web import pages

    for i in range(pages.PAGE_SIZE + 1):
        upload_via_api(client, images.jpeg(10 + i, 10), f"img{i}.jpg")
    first = client.get("/").get_data(as_text=True)
    match = re.search(r'href="(/\?cursor=[0-9a-f]+)[^"]*"', first)
    assert match
    older = client.get(match.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert older.count('data-testid="gallery-card"') == 1
    assert "img0.jpg" in older


def test_detail_page_lists_every_variant_url(client: FlaskClient) -> None:
    created = upload_via_api(client, images.png(), "logo.png")
    page = client.get(f"/images/{created['id']}").get_data(as_text=True)
    for variant in created["variants"]:  # type: ignore[attr-defined]
        assert variant["url"] in page


def test_upload_form_post_without_csrf_is_refused(local_client: FlaskClient) -> None:
    response = local_client.post(
        "/upload",
        data={"image": (io.BytesIO(images.jpeg()), "a.jpg")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 403
    assert "text/html" in response.content_type


def test_upload_form_post_with_csrf_redirects_to_the_image(local_client: FlaskClient) -> None:
    token = csrf(local_client)
    response = local_client.post(
        "/upload",
        data={"image": (io.BytesIO(images.jpeg()), "a.jpg"), "csrf_token": token},
        content_type="multipart/form-data",
    )
    assert response.status_code == 303
    assert "/images/" in response.headers["Location"]


def test_upload_page_script_gets_json(local_client: FlaskClient) -> None:
    token = csrf(local_client)
    response = local_client.post(
        "/upload",
        data={"image": (io.BytesIO(images.jpeg()), "a.jpg"), "csrf_token": token},
        content_type="multipart/form-data",
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 201
    assert response.get_json()["name"] == "a.jpg"


def test_browser_errors_are_a_readable_page(local_client: FlaskClient) -> None:
    token = csrf(local_client)
    response = local_client.post(
        "/upload",
        data={"image": (io.BytesIO(b"not an image"), "a.jpg"), "csrf_token": token},
        content_type="multipart/form-data",
        headers={"Accept": "text/html"},
    )
    assert response.status_code == 415
    page = response.get_data(as_text=True)
    assert "<html" in page
    assert "Accepted" in page


def test_unknown_image_page_is_404_page(local_client: FlaskClient) -> None:
    response = local_client.get("/images/0000000000000deadbeef", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert "text/html" in response.content_type


def test_media_serves_variants_with_our_content_type_and_long_cache(
    local_client: FlaskClient,
) -> None:
    created = upload_via_api(local_client, images.jpeg(), "a.jpg")
    url = created["variants"][0]["url"]  # type: ignore[index]
    response = local_client.get(url)
    assert response.status_code == 200
    assert response.mimetype == "image/webp"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "immutable" in response.headers["Cache-Control"]
    response.close()


def test_media_answers_304_to_a_matching_etag(local_client: FlaskClient) -> None:
    created = upload_via_api(local_client, images.jpeg(), "a.jpg")
    url = created["variants"][0]["url"]  # type: ignore[index]
    etag = local_client.get(url).headers["ETag"]
    again = local_client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""


def test_media_never_serves_records(local_client: FlaskClient) -> None:
    created = upload_via_api(local_client, images.jpeg(), "a.jpg")
    assert local_client.get(f"/media/rec/{created['id']}.json").status_code == 404


def test_every_response_carries_security_headers(local_client: FlaskClient) -> None:
    response = local_client.get("/")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"]
