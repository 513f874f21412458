"""Property tests: whatever bytes and form fields arrive, the API answers with a clear JSON verdict.

Hypothesis feeds POST /api/images random bytes, valid small images with bytes flipped, inserted,
deleted or cut off, and random form fields (junk format lists, numbers as text, huge and negative
sizes, unknown fit modes, names full of control characters and markup). Whatever it sends:

- the status is one the API documents (201, 200 for a duplicate, 400, 413, 415, 422, 429, 503);
- a refusal is JSON with ``error`` and ``message``; an acceptance is a committed record;
- no answer carries a traceback or a server path, and a refused upload leaves no object behind.

Then every route of the app's url_map, with every method it allows, gets hostile headers
(non-ASCII, huge, control characters in Authorization, X-CSRF-Token, Content-Type, Cookie and
X-Forwarded-*, Range) and hostile JSON (deep nesting, huge numbers, wrong types): only documented
statuses, never a 500, never a traceback, in process and (a bounded set) against gunicorn run as
the Dockerfile runs it. A stored file gets any Range: the bytes it names, the whole file, or a
416 that says the file's length.

Runs are derandomized (same examples every run, no example database), so CI cannot flake on a
rare draw; a failure prints the smallest input that reproduces it.
"""

from __future__ import annotations

import http.client
import io
import json
import random
import re
import socket
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import TestResponse, encode_multipart

from imaging.config import Settings
from imaging.formats import OUTPUT_FORMATS
from imaging.pipeline import FIT_MODES
from imaging.search import words as search_words
from imaging.storage.local import LocalStore
from tests import images
from tests.conftest import AppFactory

ALLOWED_STATUSES = {200, 201, 400, 413, 415, 422, 429, 503}
#: Substrings that only a leak could put in a body: the generated text never contains "/".
LEAKS = ("Traceback", 'File "', "/tmp/", "/work/", "site-packages", "/usr/lib/")

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def webp(im: Image.Image) -> bytes:
    return images.encode(im, "WEBP", quality=50)


#: Valid, tiny starting points in every family of decoder, so mutations reach deep into each.
SEEDS: tuple[bytes, ...] = (
    images.png(16, 12),
    images.rgba_png(12, 12),
    images.png(16, 12, mode="P"),
    images.jpeg(16, 12),
    images.jpeg(16, 12, progressive=True),
    images.animated_gif(frames=3, width=12, height=10),
    webp(images.gradient(16, 12)),
    images.encode(images.gradient(12, 8), "BMP"),
    images.encode(images.gradient(12, 8), "TIFF"),
)


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header (valid CRCs) announcing a canvas its few bytes cannot fill."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


#: Inputs each limit must refuse: too many pixels, too long a side, too many bytes.
OVER_LIMITS: tuple[bytes, ...] = (
    png_claiming(1200, 1000),
    png_claiming(4000, 10),
    png_claiming(2**31 - 1, 2**31 - 1),
    b"\xff" * (1024 * 1024 + 1),
)

#: Text without "/" (so LEAKS stay meaningful), with control characters, markup and any script.
junk_text = st.text(st.characters(exclude_characters="/"), max_size=40)
hostile_names = st.sampled_from(
    [
        "<img src=x onerror=alert(1)>.png",
        '"><script>alert(1)</script>',
        "..\\..\\windows\\win.ini",
        "name\x00with\x00nul.jpg",
        "\r\nSet-Cookie: evil=1",
        "\u202egnp.exe",
        "x" * 5000,
        "",
    ]
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed image with up to five byte-level mutations, biased towards the header."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 5))):
        if not data:
            break
        last = len(data) - 1
        at = draw(st.one_of(st.integers(0, min(63, last)), st.integers(0, last)))
        operation = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if operation == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif operation == "set":
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]))
        elif operation == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif operation == "delete":
            del data[at : at + draw(st.integers(1, 32))]
        else:
            del data[at:]
    return bytes(data)


upload_bytes = st.one_of(
    mutated(), st.binary(max_size=256), st.sampled_from(SEEDS), st.sampled_from(OVER_LIMITS)
)

format_words = st.one_of(
    st.sampled_from([*OUTPUT_FORMATS, "jpg", "JPEG", " WebP ", "bmp", "tiff", "svg", "", ","]),
    junk_text,
)
# Absent or sensible values are drawn often, so odd values also meet otherwise valid requests.
format_fields = st.one_of(
    st.none(),
    st.sampled_from(["webp", "png,jpeg", "jpg", "gif"]),
    st.lists(format_words, max_size=7).map(",".join),
    st.lists(format_words, min_size=2, max_size=4),  # the field repeated, as checkboxes send it
)
number_fields = st.one_of(
    st.none(),
    st.none(),
    st.integers(1, 100).map(str),
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(["", " ", "1e3", "0x10", "٣", "12.5", "NaN", "-0", "+7", " 8 ", "9" * 400]),
    junk_text,
)
fit_fields = st.one_of(
    st.none(), st.none(), st.sampled_from([*FIT_MODES, "COVER", " fill "]), junk_text
)
name_fields = st.one_of(st.none(), hostile_names, junk_text)


def post(client: FlaskClient, data: bytes, fields: dict[str, Any], filename: str) -> TestResponse:
    form: MultiDict[str, Any] = MultiDict()
    for key, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                form.add(key, item)
    form.add("image", FileStorage(io.BytesIO(data), filename))
    # Encoded here, not by the test client: its own spooled request body for uploads over
    # 500 KB is never closed, and pytest's ResourceWarning-as-error would blame the app.
    boundary, body = encode_multipart(form)
    return client.post(
        "/api/images", data=body, content_type=f"multipart/form-data; boundary={boundary}"
    )


def strings_in(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def check_answer(client: FlaskClient, response: TestResponse, media_root: Path) -> None:
    """The contract every answer keeps, whatever was sent."""
    text = response.get_data(as_text=True)
    event(f"HTTP {response.status_code}")  # pytest --hypothesis-show-statistics shows the mix
    assert response.status_code in ALLOWED_STATUSES, text
    assert response.is_json, text
    body = response.get_json()
    # Checked on the decoded strings too: JSON escapes could hide a path from the raw text.
    for candidate in (text, *strings_in(body)):
        for leak in (*LEAKS, str(media_root)):
            assert leak not in candidate, text
    if response.status_code in (200, 201):
        assert client.get(f"/api/images/{body['id']}").status_code == 200
        assert body["variants"], text
    else:
        assert isinstance(body["error"], str), text
        assert body["error"], text
        assert isinstance(body["message"], str), text
        assert body["message"], text
        assert set(body) == {"error", "message"}, text
    if response.status_code == 503:
        assert response.headers.get("Retry-After"), text


def image_objects(store: LocalStore) -> int:
    return len(store.list("img/", limit=10_000))


@pytest.fixture
def fuzz_client(make_app: AppFactory) -> FlaskClient:
    # Small limits keep a mutated header that claims a huge canvas cheap to refuse.
    return make_app(max_upload_mb=1, max_pixels=1_000_000, max_side=2048).test_client()


@FUZZ
@given(
    data=upload_bytes,
    formats=st.sampled_from(["webp", "png", "jpeg,gif", "avif", "webp,png,jpeg"]),
)
def test_any_bytes_get_a_documented_json_answer_and_refusals_leave_nothing(
    fuzz_client: FlaskClient, local_store: LocalStore, data: bytes, formats: str
) -> None:
    before = image_objects(local_store)

    response = post(fuzz_client, data, {"format": formats}, "upload.bin")

    check_answer(fuzz_client, response, local_store.root)
    if response.status_code >= 400:
        assert image_objects(local_store) == before


@FUZZ
@given(
    data=st.sampled_from(SEEDS),
    formats=format_fields,
    width=number_fields,
    height=number_fields,
    quality=number_fields,
    fit=fit_fields,
    name=name_fields,
    filename=st.one_of(hostile_names, junk_text),
    lossless=st.one_of(st.none(), st.sampled_from(["1", "true", "on", "no"]), junk_text),
)
def test_any_form_fields_get_a_documented_json_answer(
    fuzz_client: FlaskClient,
    local_store: LocalStore,
    data: bytes,
    formats: str | list[str] | None,
    width: str | None,
    height: str | None,
    quality: str | None,
    fit: str | None,
    name: str | None,
    filename: str,
    lossless: str | None,
) -> None:
    fields = {
        "format": formats,
        "width": width,
        "height": height,
        "quality": quality,
        "fit": fit,
        "name": name,
        "lossless": lossless,
    }

    response = post(fuzz_client, data, fields, filename)

    check_answer(fuzz_client, response, local_store.root)
    if response.status_code in (200, 201):
        # Whatever the name was, the record keeps a printable display name, never empty.
        text = response.get_data(as_text=True)
        shown = response.get_json()["name"]
        assert shown, text
        assert shown.isprintable(), json.dumps(shown)


#: Focal points as scripts send them, and worse: wrong arity, out of range, not numbers.
point_text = st.one_of(
    st.tuples(st.floats(0, 1), st.floats(0, 1)).map(lambda p: f"{p[0]},{p[1]}"),
    st.tuples(st.floats(-2, 3), st.floats(-2, 3)).map(lambda p: f"{p[0]},{p[1]}"),
    st.sampled_from(["", ",", "0.5", "0.5,0.5,0.5", "nan,0.5", "inf,0", "1e999,0", "0x1,0"]),
    junk_text,
)
focus_fields = st.dictionaries(
    st.sampled_from(["focus", "x", "y"]),
    st.one_of(point_text, number_fields.map(lambda v: v or "")),
    max_size=3,
)


@pytest.fixture(scope="module")
def cropped_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[FlaskClient, dict[str, Any]]:
    """An app holding one small cover-cropped image, with its delete key."""
    from cloud_image_app import create_app

    settings_ = Settings(
        secret_key="fuzz",
        labeler="none",
        testing=True,
        media_root=tmp_path_factory.mktemp("focus") / "media",
    )
    client = create_app(settings_).test_client()
    fields = {"format": "png", "width": "20", "height": "20", "fit": "cover"}
    response = post(client, images.png(60, 30), fields, "wide.png")
    assert response.status_code == 201, response.get_data(as_text=True)
    return client, response.get_json()


@FUZZ
@given(
    fields=focus_fields,
    as_json=st.booleans(),
    key=st.sampled_from(["right", "right", "right", "wrong", "none"]),
)
def test_any_focus_request_gets_a_documented_answer_and_the_image_stays_whole(
    cropped_image: tuple[FlaskClient, dict[str, Any]],
    fields: dict[str, str],
    as_json: bool,
    key: str,
) -> None:
    client, image = cropped_image
    headers = {"right": {"X-Delete-Key": image["delete_key"]}, "wrong": {"X-Delete-Key": "no"}}
    url = f"/api/images/{image['id']}/focus"
    send = {"json": fields} if as_json else {"data": fields}
    response = client.post(url, headers=headers.get(key, {}), **send)
    event(f"HTTP {response.status_code}")
    text = response.get_data(as_text=True)
    assert response.status_code in {200, 400, 401, 403}, text
    for leak in LEAKS:
        assert leak not in text, text
    body = response.get_json()
    if response.status_code == 200:
        x, y = body["receipt"]["focus"]
        assert 0 <= x <= 1
        assert 0 <= y <= 1
    else:
        assert set(body) == {"error", "message"}, text
    # Whatever was sent, the record names files that are there.
    record = client.get(f"/api/images/{image['id']}").get_json()
    for variant in (*record["variants"], record["thumbnail"]):
        assert client.get(variant["url"]).status_code == 200, variant["url"]


#: Queries as people and scripts type them, and worse: slashes, key-like text, huge words.
query_fields = st.one_of(
    st.text(max_size=60),
    st.text(st.characters(categories=["L", "N", "Zs"]), max_size=30),
    st.sampled_from(["../../rec", "idx/cat/", "phash/0/", "a//b", "*", "%2F", "\x00", "x" * 600]),
    st.lists(
        st.sampled_from(["cat", "red", "Photo", "photos", "grey", "√", "猫"]), max_size=10
    ).map(" ".join),
)


@pytest.fixture
def searched_client(fuzz_client: FlaskClient) -> FlaskClient:
    post(fuzz_client, images.jpeg(32, 24), {"name": "red cat photo"}, "a.jpg")
    return fuzz_client


@FUZZ
@given(
    query=query_fields,
    cursor=st.one_of(st.none(), junk_text, st.just("9" * 13 + "deadbeef")),
    limit=st.one_of(st.none(), st.sampled_from(["1", "0", "-5", "1000", "x"])),
)
def test_any_search_gets_a_documented_answer_and_only_matching_images(
    searched_client: FlaskClient, query: str, cursor: str | None, limit: str | None
) -> None:
    params = {"q": query, "cursor": cursor, "limit": limit}
    args = {k: v for k, v in params.items() if v is not None}

    response = searched_client.get("/api/images", query_string=args)
    page = searched_client.get("/", query_string=args)

    text = response.get_data(as_text=True)
    assert response.status_code in (200, 400), text
    assert response.is_json, text
    assert not any(leak in text for leak in LEAKS), text
    assert page.status_code in (200, 400)
    if response.status_code == 200 and query.strip():
        terms = set(search_words(query))
        for image in response.get_json()["images"]:
            # Everything found has every word of the query (a query of no words finds nothing).
            assert terms, query
            assert terms <= set(
                search_words(
                    image["name"]
                    + " "
                    + " ".join(
                        [
                            *(c["name"] for c in image["colours"]),
                            *(lab["description"] for lab in image["labels"]),
                        ]
                    )
                )
            ), (query, image["name"])


def test_the_seeds_themselves_are_accepted(fuzz_client: FlaskClient) -> None:
    # Guards the fuzzers' premise: mutations start from images the API takes.
    statuses = [
        post(fuzz_client, seed, {}, f"seed-{i}").status_code for i, seed in enumerate(SEEDS)
    ]
    assert statuses == [201] * len(SEEDS)


# -- every route, hostile headers and JSON (issue 14, item 7) -------------------------------------

#: What any route may answer; 500 is never one of them.
ROUTE_STATUSES = {200, 201, 204, 206, 302, 303, 304, 400, 401, 403, 404, 405, 409, 410, 413}
ROUTE_STATUSES |= {415, 416, 422, 429, 503}
HEADER_NAMES = (
    "Authorization",
    "X-CSRF-Token",
    "Content-Type",
    "Cookie",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "X-Delete-Key",
    "Accept",
    "Range",
    "If-Range",
)
#: Header values an attacker can put on the wire: any byte but CR, LF and NUL (which no server
#: passes on), read as Latin-1 the way WSGI servers hand them over.
header_text = st.text(st.characters(min_codepoint=1, max_codepoint=255, exclude_characters="\r\n"))
header_values = st.one_of(
    header_text.map(lambda v: v[:200]),
    st.sampled_from(
        [
            "Bearer jeton-volé",
            "Bearer \x01\x7f\x1b[31m",
            "Bearer " + "A" * 20_000,
            "Basic Zm9vOmJhcg==",
            "bearer",
            "application/json; charset=utf-8\x00",
            "application/json; charset=klingon",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=\xff\xfe",
            "application/cloudevents+json",
            "session=" + "x" * 5000,
            "session=eyJ\xe9.\x01.zz; csrf=\x7f",
            "1.2.3.4, ü, ::1, 999.999.999.999",
            "https, http, gopher",
            "evil.example",
            "text/html;q=\xff, application/json;q=NaN",
            "Ã©" * 4000,
        ]
    ),
)
DEEP = "[" * 50_000 + "]" * 50_000
HOSTILE_JSON = (
    DEEP,
    '{"a":' * 20_000 + "1" + "}" * 20_000,
    "1" * 5000,
    '{"size": ' + "9" * 5000 + "}",
    '{"size": 1e999, "content_type": "image/png"}',
    '{"size": -1, "content_type": ["image/png"]}',
    '{"content_type": {"$ne": 1}, "size": "x"}',
    '{"name": "\\ud800", "format": [[[]]]}',
    "[]",
    "null",
    '"text"',
    "{",
    "\xff\xfe",
)
json_bodies = st.one_of(
    st.sampled_from(HOSTILE_JSON),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    ).map(json.dumps),
)
#: A value for every kind of URL variable: ids, keys, upload ids.
PATH_VALUES = ("x", "0000000000000-abcdef", "..%2f..%2fetc", "img/x/a.webp", "%00", "é")


range_number = st.one_of(
    st.just(""), st.integers(0, 4000).map(str), st.sampled_from(["9" * 40, "-1", "1e3", " 5"])
)
range_headers = st.one_of(
    header_text.map(lambda v: v[:100]),
    st.tuples(range_number, range_number).map(lambda spec: f"bytes={spec[0]}-{spec[1]}"),
    st.lists(st.tuples(range_number, range_number), min_size=1, max_size=3).map(
        lambda specs: "bytes=" + ",".join(f"{a}-{b}" for a, b in specs)
    ),
    st.sampled_from(["items=0-1", "bytes 0-1", "bytes=0-0", "BYTES=0-1", "bytes=-0"]),
)


@FUZZ
@given(
    header=range_headers,
    if_range=st.one_of(st.none(), st.none(), st.none(), header_text.map(lambda v: v[:60])),
)
def test_any_range_on_a_media_file_gets_the_bytes_it_names_the_whole_file_or_a_416(
    cropped_image: tuple[FlaskClient, dict[str, Any]], header: str, if_range: str | None
) -> None:
    client, image = cropped_image
    # The focus fuzzer may have re-rendered it: the record says which file is current.
    url = client.get(f"/api/images/{image['id']}").get_json()["variants"][0]["url"]
    whole = client.get(url).data
    headers = {"Range": header, "Accept": "application/json"}
    if if_range is not None:
        headers["If-Range"] = if_range
    response = client.get(url, headers=headers)
    what = f"{headers!r}: {response.status_code} {response.headers.get('Content-Range')}"
    event(str(response.status_code))
    assert response.status_code in (200, 206, 416), what
    if response.status_code == 200:
        assert response.data == whole, what
    elif response.status_code == 206:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", response.headers["Content-Range"])
        assert match, what
        start, end, total = map(int, match.groups())
        assert total == len(whole), what
        assert 0 <= start <= end < total, what
        assert response.data == whole[start : end + 1], what
    else:
        assert response.headers["Content-Range"] == f"bytes */{len(whole)}", what
        assert response.get_json()["error"] == "requested_range_not_satisfiable", what


def route_calls(app: Any) -> list[tuple[str, str]]:
    """(method, URL template) for every rule of the app, every method it allows."""
    calls = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods or ()):
            calls.append((method, rule.rule))
    return sorted(set(calls))


def fill(template: str, value: str) -> str:
    return re.sub(r"<(?:[^:>]+:)?[^>]+>", value, template)


@pytest.fixture(scope="module")
def route_apps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FlaskClient]:
    """An open app and a locked one (upload, admin and metrics tokens), built once."""
    from cloud_image_app import create_app

    base = Settings(
        secret_key="fuzz",
        labeler="none",
        testing=True,
        media_root=tmp_path_factory.mktemp("routes") / "media",
    )
    locked = base.replace(
        upload_tokens=("t0ken",), admin_token="admin", metrics_token="m", trusted_proxy_hops=1
    )
    return {
        "open": create_app(base).test_client(),
        "locked": create_app(locked).test_client(),
    }


def check_route_answer(response: TestResponse, what: str) -> None:
    text = response.get_data(as_text=True)
    assert response.status_code in ROUTE_STATUSES, f"{what}: {response.status_code} {text[:500]}"
    for leak in LEAKS:
        assert leak not in text, f"{what}: {text[:500]}"
    if response.status_code >= 400 and response.is_json and response.data:
        body = response.get_json()
        assert isinstance(body.get("error"), str), what
        assert isinstance(body.get("message"), str), what


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.data(),
    which=st.sampled_from(["open", "locked"]),
    headers=st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=5),
    body=st.one_of(st.none(), json_bodies),
    path_value=st.sampled_from(PATH_VALUES),
)
def test_every_route_answers_hostile_headers_and_json_with_a_documented_status(
    route_apps: dict[str, FlaskClient],
    data: st.DataObject,
    which: str,
    headers: dict[str, str],
    body: str | None,
    path_value: str,
) -> None:
    client = route_apps[which]
    method, template = data.draw(st.sampled_from(route_calls(client.application)))
    if body is not None and "Content-Type" not in headers:
        headers = {**headers, "Content-Type": "application/json"}
    url = fill(template, path_value)
    response = client.open(url, method=method, headers=headers, data=body)
    event(f"{method} {template} -> {response.status_code}")
    check_route_answer(response, f"{method} {url} {headers!r}")


def test_every_route_answers_every_hostile_json_body_with_a_documented_status(
    route_apps: dict[str, FlaskClient],
) -> None:
    # Exhaustive, not drawn: each hostile body meets every route and method, both apps.
    for which, client in route_apps.items():
        for method, template in route_calls(client.application):
            if method in ("GET", "HEAD", "OPTIONS"):
                continue
            url = fill(template, "x")
            for body in HOSTILE_JSON:
                for content_type in ("application/json", "application/cloudevents+json"):
                    response = client.open(
                        url, method=method, data=body, headers={"Content-Type": content_type}
                    )
                    check_route_answer(response, f"{which} {method} {url} {body[:40]!r}")


def test_the_route_fuzzer_reaches_every_route_and_method(
    route_apps: dict[str, FlaskClient],
) -> None:
    # Guards the fuzzer's premise: it draws from the whole url_map, the doors included.
    calls = route_calls(route_apps["open"].application)
    assert ("POST", "/api/uploads") in calls
    assert ("POST", "/events/storage") in calls
    assert ("PUT", "/api/uploads/<upload_id>/data") in calls
    assert ("DELETE", "/api/images/<image_id>") in calls
    assert ("POST", "/api/images/<image_id>/focus") in calls
    assert ("POST", "/images/<image_id>/focus") in calls
    assert ("POST", "/api/images/delete") in calls
    assert ("POST", "/images/delete") in calls
    assert ("GET", "/api/images.zip") in calls
    assert ("GET", "/admin/stats") in calls
    assert ("POST", "/admin/unlock") in calls
    assert len(calls) >= 2 * len(list(route_apps["open"].application.url_map.iter_rules()))


# -- the same, bounded, against the production server ---------------------------------------------


def raw_request(
    url: str, method: str, path: str, headers: dict[str, bytes], body: bytes
) -> tuple[int, bytes]:
    """One request with headers as raw bytes (http.client would refuse non-Latin-1 text)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_gunicorn_answers_hostile_requests_to_every_route_without_a_500(
    tmp_path: Path, route_apps: dict[str, FlaskClient]
) -> None:
    from tests.container import start_container, stop

    # Uploads open, so bodies are read rather than refused at the token check.
    running = start_container(tmp_path, ADMIN_TOKEN="admin", METRICS_TOKEN="m")
    draw = random.Random(14)  # bounded and repeatable: the same requests every run
    hostile = [  # bytes on the wire: UTF-8, control characters, huge, a forged session
        "Bearer jeton-volé".encode(),
        b"\x01\x7f\x1b[31m\xff",
        "Ã©".encode() * 2000,
        b"session=eyJ\xe9.\x01.zz; csrf=\x7f",
    ]
    try:
        for method, template in route_calls(route_apps["open"].application):
            bodies = ("",) if method in ("GET", "HEAD", "OPTIONS") else HOSTILE_JSON
            for text in bodies:  # every hostile body to every route that takes one
                headers = {name: draw.choice(hostile) for name in draw.sample(HEADER_NAMES, 3)}
                headers["Content-Type"] = b"application/json"
                body = text.encode("utf-8", "surrogatepass")
                path = fill(template, draw.choice(["x", "0000000000000-abcdef"]))
                status, answer = raw_request(running.url, method, path, headers, body)
                what = f"{method} {path} {sorted(headers)}: {status} {answer[:300]!r}"
                assert status in ROUTE_STATUSES, what
                assert b"Traceback" not in answer, what
                assert b'File "' not in answer, what
    finally:
        stop(running)
    assert "Traceback" not in running.logs()


#: Chunked bodies whose framing breaks part-way, each after a first chunk that parses. (A huge
#: chunk size is not broken framing but a body still to come: the server's timeouts end it.)
BROKEN_CHUNKS = {
    "a chunk size that is not hex": b"ZZZ\r\nhello\r\n0\r\n\r\n",
    "a negative chunk size": b"-5\r\nhello\r\n0\r\n\r\n",
    "a chunk without its line end": b"5\r\nhelloXX0\r\n\r\n",
    "a trailer that is not a header": b"0\r\nX Y: z\r\n\r\n",
}


def raw_answers(url: str, request: bytes) -> bytes:
    """Everything the server writes back to ``request`` until it closes the connection."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_gunicorn_answers_a_broken_chunked_body_to_every_route_once_and_never_500(
    tmp_path: Path, route_apps: dict[str, FlaskClient]
) -> None:
    """A route that reads the body says 400 ``bad_body``; one that answers without reading it
    gets its answer, and the connection then closes: never a second, unasked-for answer, which
    a client (or a proxy reusing the connection) would take for the next request's."""
    from tests.container import start_container, stop

    running = start_container(tmp_path, ADMIN_TOKEN="admin", METRICS_TOKEN="m")
    bad_bodies = 0
    try:
        for method, template in route_calls(route_apps["open"].application):
            if method in ("GET", "HEAD", "OPTIONS"):
                continue
            path = fill(template, "0000000000000-abcdef")
            for case, broken in BROKEN_CHUNKS.items():
                for kind, first in (
                    ("multipart/form-data; boundary=XX", b"--XX\r\nContent-Disposition: "),
                    ("application/json", b'{"a": '),
                ):
                    head = (
                        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n"
                    ).encode()
                    chunk = f"{len(first):x}\r\n".encode() + first + b"\r\n"
                    answer = raw_answers(running.url, head + chunk + broken)
                    what = f"{method} {path}, {kind}, {case}: {answer[:400]!r}"
                    statuses = re.findall(rb"^HTTP/1\.1 (\d{3}) ", answer, re.MULTILINE)
                    assert len(statuses) == 1, what
                    assert int(statuses[0]) in ROUTE_STATUSES, what
                    assert b"Traceback" not in answer, what
                    bad_bodies += b'"bad_body"' in answer
    finally:
        stop(running)
    assert "Traceback" not in running.logs()
    assert "Error handling request" not in running.logs()
    assert bad_bodies > 0  # some routes did read the broken body, and said so
