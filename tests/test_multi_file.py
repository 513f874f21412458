"""Issue 14, item 17: each file of a multi-file upload answers for itself.

A request with one good and one bad file once answered 415 for the whole request while the good
file stayed stored and listed, its delete key shown to no one. Now the stored files come back
as records (with their delete keys) and the refused ones as errors with their own status.
"""

from __future__ import annotations

import io

from flask.testing import FlaskClient

from tests import images
from tests.test_pages import csrf


def good_and_bad_files() -> dict[str, object]:
    return {
        "image": [
            (io.BytesIO(images.png()), "good.png"),
            (io.BytesIO(b"this is no image"), "bad.jpg"),
        ]
    }


def test_a_multi_file_upload_shows_what_it_stored_and_what_it_refused(
    client: FlaskClient,
) -> None:
    response = client.post(
        "/api/images", data=good_and_bad_files(), content_type="multipart/form-data"
    )

    assert response.status_code == 201
    body = response.get_json()
    [stored] = body["images"]
    assert stored["name"] == "good.png"
    assert stored["delete_key"]
    [refused] = body["errors"]
    assert refused == {
        "index": 1,
        "file": "bad.jpg",
        "status": 415,
        "error": refused["error"],
        "message": refused["message"],
    }
    assert "Traceback" not in refused["message"]
    # The key shown is the one that deletes it.
    deleted = client.delete(
        f"/api/images/{stored['id']}", headers={"X-Delete-Key": stored["delete_key"]}
    )
    assert deleted.status_code == 204


def test_a_multi_file_upload_with_nothing_stored_is_the_first_files_error(
    client: FlaskClient,
) -> None:
    data = {"image": [(io.BytesIO(b"no image"), "a.jpg"), (io.BytesIO(b"nor this"), "b.png")]}
    response = client.post("/api/images", data=data, content_type="multipart/form-data")
    assert response.status_code == 415
    assert client.get("/api/images").get_json()["images"] == []


def test_the_plain_upload_form_shows_each_files_result_with_its_delete_key(
    local_client: FlaskClient,
) -> None:
    response = local_client.post(
        "/upload",
        data={**good_and_bad_files(), "csrf_token": csrf(local_client)},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201
    html = response.get_data(as_text=True)
    [stored] = local_client.get("/api/images").get_json()["images"]
    assert stored["detail_url"] in html
    assert html.count('data-testid="delete-key"') == 1
    assert 'data-testid="refused"' in html
    assert "bad.jpg" in html


def test_inline_with_two_files_is_refused_before_anything_is_stored(client: FlaskClient) -> None:
    data = {"image": [(io.BytesIO(images.png()), "a.png"), (io.BytesIO(images.jpeg()), "b.jpg")]}
    response = client.post(
        "/api/images?inline=1&format=webp", data=data, content_type="multipart/form-data"
    )

    assert response.status_code == 400
    assert "exactly one file" in response.get_json()["message"]
    assert client.get("/api/images").get_json()["images"] == []
