"""The HTML pages through Flask's test client: gallery, filters, detail, upload form, errors."""

from __future__ import annotations

import html
import io
import json
import re

from flask.testing import FlaskClient

from imaging.services import services_of
from imaging.web.presentation import alt_text
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


def test_media_answers_one_byte_range_with_a_206_as_gcs_does(local_client: FlaskClient) -> None:
    created = upload_via_api(local_client, images.jpeg(), "a.jpg")
    url = created["variants"][0]["url"]  # type: ignore[index]
    whole = local_client.get(url)
    data, etag, n = whole.data, whole.headers["ETag"], len(whole.data)
    assert whole.headers["Accept-Ranges"] == "bytes"
    cases = {
        "bytes=0-9": (0, 10),
        "bytes=10-": (10, n),
        "bytes=-7": (n - 7, n),
        f"bytes=5-{n + 100}": (5, n),  # an end past the file stops at it
    }
    for header, (start, stop) in cases.items():
        part = local_client.get(url, headers={"Range": header})
        assert part.status_code == 206, header
        assert part.data == data[start:stop], header
        assert part.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{n}", header
        assert part.mimetype == "image/webp"
        assert part.headers["X-Content-Type-Options"] == "nosniff"
    # If-Range: the range only while the file is the one the client had.
    assert local_client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}).data == data[:10]
    stale = local_client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert (stale.status_code, stale.data) == (200, data)


def test_media_answers_a_range_past_the_end_with_416_and_ignores_one_it_cannot_serve(
    local_client: FlaskClient,
) -> None:
    created = upload_via_api(local_client, images.jpeg(), "a.jpg")
    url = created["variants"][0]["url"]  # type: ignore[index]
    data = local_client.get(url).data
    api = {"Accept": "application/json"}
    past = local_client.get(url, headers={"Range": f"bytes={len(data)}-", **api})
    assert past.status_code == 416
    assert past.headers["Content-Range"] == f"bytes */{len(data)}"
    assert past.get_json()["error"] == "requested_range_not_satisfiable"
    page = local_client.get(url, headers={"Range": "bytes=99999999-", "Accept": "text/html"})
    assert page.status_code == 416
    assert "Range not satisfiable" in page.get_data(as_text=True)
    # Garbage, several ranges or another unit: the whole file, as RFC 9110 allows.
    for header in ("bytes=9-1", "bytes=0-1,4-5", "items=0-1", "bytes=", "bytes=a-b", "\xff"):
        response = local_client.get(url, headers={"Range": header})
        assert (response.status_code, response.data) == (200, data), header


def test_media_never_serves_records(local_client: FlaskClient) -> None:
    created = upload_via_api(local_client, images.jpeg(), "a.jpg")
    assert local_client.get(f"/media/rec/{created['id']}.json").status_code == 404


def test_every_response_carries_security_headers(local_client: FlaskClient) -> None:
    response = local_client.get("/")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"]


# -- placeholders, camera facts, sizes, srcset and "copy HTML" (issue 12) -------------------


def test_the_gallery_thumbnail_carries_its_placeholder_and_a_srcset_of_its_widths(
    client: FlaskClient,
) -> None:
    created = upload_ok(client, images.jpeg(1200, 900), "wide.jpg", format="webp,jpeg,avif")
    page = client.get("/").get_data(as_text=True)
    thumb = re.search(r'<img class="thumb"[^>]*>', page)
    assert thumb
    tag = html.unescape(thumb.group(0))
    assert f'data-thumbhash="{created["thumbhash"]}"' in tag
    srcset = re.search(r'srcset="([^"]+)"', tag)
    assert srcset
    # The 480 px thumbnail, then the full size in the fewest bytes of WebP and JPEG (not AVIF:
    # a plain <img> has no type switch for browsers without it).
    by_type = {v["format"]: v for v in created["variants"]}
    full = min((by_type["webp"], by_type["jpeg"]), key=lambda v: v["bytes"])
    assert srcset.group(1) == f"{created['thumbnail']['url']} 480w, {full['url']} 1200w"
    assert 'sizes="' in tag


def test_a_variant_of_another_shape_stays_out_of_the_srcset(client: FlaskClient) -> None:
    created = upload_ok(
        client,
        images.jpeg(1200, 900),
        "square.jpg",
        format="webp",
        width=600,
        height=600,
        fit="cover",
    )
    tag = re.search(r'<img class="thumb"[^>]*>', client.get("/").get_data(as_text=True))
    assert tag
    assert created["variants"][0]["url"] not in html.unescape(tag.group(0))


def test_the_detail_page_shows_what_the_camera_recorded(client: FlaskClient) -> None:
    created = upload_ok(client, images.camera_photo(), "trip.jpg")
    assert created["camera"] == images.CAMERA_FACTS
    page = client.get(f"/images/{created['id']}").get_data(as_text=True)
    facts = dict(re.findall(r'data-testid="camera-([a-z-]+)">(.*?)</dd>', page, re.S))
    assert facts["body"] == "Fujifilm X-T5"
    assert facts["lens"] == "XF 35mm F1.4 R"
    assert "2025-06-14 18:42" in facts["taken"]
    assert html.unescape(facts["exposure"]) == "1/250 s at ƒ/2.8"
    assert facts["iso"] == "400"
    assert facts["focal-length"] == "35 mm"


def test_a_photos_location_is_nowhere_in_the_record_its_json_or_its_page(
    client: FlaskClient,
) -> None:
    created = upload_ok(client, images.camera_photo(gps=True), "where.jpg")
    stored = services_of(client.application).store.get(f"rec/{created['id']}.json").decode()
    api = client.get(f"/api/images/{created['id']}").get_data(as_text=True)
    page = client.get(f"/images/{created['id']}").get_data(as_text=True)
    for text in (stored, api, page):
        assert "gps" not in text.lower()
        for coordinate in ("48.0", "51.0", "29.5", "17.0", "40.2"):
            assert coordinate not in text


def test_the_detail_page_shows_each_variants_bytes_and_what_it_saved(
    client: FlaskClient,
) -> None:
    created = upload_ok(client, images.photo("chelsea"), "cat.jpg", format="webp,png")
    page = client.get(f"/images/{created['id']}").get_data(as_text=True)
    sizes = re.findall(r'data-testid="variant-bytes">([^<]+)<', page)
    savings = [
        re.sub(r"<[^>]+>", "", s).strip()
        for s in re.findall(r'data-testid="variant-saving">(.*?)</td>', page, re.S)
    ]
    webp, png = created["variants"]
    assert len(sizes) == 2
    assert webp["bytes"] < created["bytes"] < png["bytes"]  # the photo makes both cases
    assert savings == [
        f"{round(100 - 100 * webp['bytes'] / created['bytes'])} % smaller",
        f"{round(100 * png['bytes'] / created['bytes'] - 100)} % larger",
    ]


def test_copy_html_is_a_picture_of_the_web_formats_with_size_and_alt(client: FlaskClient) -> None:
    created = upload_ok(
        client, images.jpeg(300, 200), format="jpeg,avif,webp", name='a "quoted" <name>'
    )
    page = client.get(f"/images/{created['id']}").get_data(as_text=True)
    box = re.search(r'<textarea[^>]*data-testid="picture-html"[^>]*>(.*?)</textarea>', page, re.S)
    assert box
    by_format = {v["format"]: v["url"] for v in created["variants"]}
    assert html.unescape(box.group(1)) == "\n".join(
        [
            "<picture>",
            f'  <source type="image/avif" srcset="{by_format["avif"]}">',
            f'  <source type="image/webp" srcset="{by_format["webp"]}">',
            f'  <img src="{by_format["jpeg"]}" width="300" height="200" '
            'alt="a &quot;quoted&quot; &lt;name&gt;" loading="lazy" decoding="async">',
            "</picture>",
        ]
    )


def test_a_record_from_before_placeholders_and_camera_facts_still_renders(
    client: FlaskClient,
) -> None:
    created = upload_ok(client, images.jpeg(), "old.jpg")
    store = services_of(client.application).store
    key = f"rec/{created['id']}.json"
    old = json.loads(store.get(key))
    del old["thumbhash"], old["camera"]
    store.delete(key)
    store.put(key, json.dumps(old).encode(), content_type="application/json")

    gallery = client.get("/")
    detail = client.get(f"/images/{created['id']}")
    assert gallery.status_code == detail.status_code == 200
    assert "data-thumbhash" not in gallery.get_data(as_text=True)
    assert 'data-testid="camera"' not in detail.get_data(as_text=True)
    assert client.get(f"/api/images/{created['id']}").get_json()["camera"] == {}


def test_the_alt_text_is_the_caption_else_the_best_labels_broad_to_specific_else_the_name() -> None:
    labels = [{"description": d} for d in ("animal", "cat", "tabby cat", "Egyptian Mau")]
    assert alt_text({"name": "IMG_1234.jpg", "labels": labels}) == "animal, cat, tabby cat"
    assert alt_text({"name": "IMG_1234.jpg", "labels": []}) == "IMG_1234.jpg"
    captioned = {"name": "IMG_1234.jpg", "labels": labels, "caption": "A cat on a mat."}
    assert alt_text(captioned) == "A cat on a mat."


#: What an image file may do when opened on its own: nothing (no script, no fetch, sandboxed).
SVG_POLICY = "default-src 'none'; style-src 'unsafe-inline'; sandbox"


def test_media_serves_an_svg_with_a_policy_that_forbids_script(
    local_client: FlaskClient,
) -> None:
    created = upload_ok(local_client, images.encode(images.logo(), "PNG"), "logo.png", format="svg")
    response = local_client.get(created["variants"][0]["url"])
    assert response.status_code == 200
    assert response.mimetype == "image/svg+xml"
    assert response.headers["Content-Security-Policy"] == SVG_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert b"<path" in response.data
    assert b"<script" not in response.data
    response.close()


def test_the_pages_show_an_svg_variant_and_the_srcset_leaves_it_out(
    local_client: FlaskClient,
) -> None:
    created = upload_ok(local_client, images.encode(images.logo(), "PNG"), "logo.png", format="svg")
    svg_url = created["variants"][0]["url"]
    detail = local_client.get(f"/images/{created['id']}").get_data(as_text=True)
    assert re.search(rf'data-testid="preview" src="{re.escape(svg_url)}"', detail)
    assert f'<img src="{html.escape(svg_url)}" width="400" height="300"' in html.unescape(detail)
    gallery = local_client.get("/").get_data(as_text=True)
    (srcset,) = re.findall(r'srcset="([^"]*)"', gallery)
    assert srcset == f"{created['thumbnail']['url']} 400w"  # rasters only: the SVG is left out


def test_an_inline_svg_answer_carries_the_same_policy(local_client: FlaskClient) -> None:
    response = local_client.post(
        "/api/images?inline=1",
        data={"image": (io.BytesIO(images.encode(images.logo(), "PNG")), "l.png"), "format": "svg"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201
    assert response.mimetype == "image/svg+xml"
    assert response.headers["Content-Security-Policy"] == SVG_POLICY
    assert response.data.startswith(b"<svg ")
