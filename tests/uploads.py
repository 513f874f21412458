"""The one way tests post an upload: a multipart form with the file in the ``image`` field.

Like flaskr's ``AuthActions``: ``UploadActions`` (the ``uploads`` fixture in conftest.py) wraps a
test client; ``post_image`` and ``upload_ok`` are the same calls for tests that hold a client of
their own (a second app, a token header).
"""

from __future__ import annotations

import io
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests import images


def post_image(
    client: FlaskClient,
    data: bytes | None = None,
    filename: str = "photo.jpg",
    *,
    url: str = "/api/images",
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> TestResponse:
    """POST ``data`` (default: a small JPEG) as ``filename`` with the form ``fields``."""
    payload = images.jpeg() if data is None else data
    return client.post(
        url,
        data={"image": (io.BytesIO(payload), filename), **fields},
        content_type="multipart/form-data",
        headers=headers or {},
    )


def upload_ok(
    client: FlaskClient, data: bytes | None = None, filename: str = "photo.jpg", **kw: Any
) -> Any:
    """``post_image`` that must succeed (201); its JSON body."""
    response = post_image(client, data, filename, **kw)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


class UploadActions:
    """Uploads through one client: ``uploads.post(...)`` answers, ``uploads.ok(...)`` records."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def post(
        self, data: bytes | None = None, filename: str = "photo.jpg", **kw: Any
    ) -> TestResponse:
        return post_image(self.client, data, filename, **kw)

    def ok(self, data: bytes | None = None, filename: str = "photo.jpg", **kw: Any) -> Any:
        return upload_ok(self.client, data, filename, **kw)
