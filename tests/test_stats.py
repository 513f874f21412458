"""The admin's stats: figures summed from the catalog's records, admin only, never a 500.

Figures are checked against what the uploads' own records say; the pages on LocalStore and on
GCSStore against the emulator.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import date
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from imaging.catalog import ImageRecord, Scan
from imaging.labeling import Label
from imaging.stats import CHART_DAYS, NO_LABELS, summarize
from imaging.storage import ObjectStore
from tests import images
from tests.conftest import AppFactory
from tests.test_bulk import unlock_admin
from tests.uploads import upload_ok

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture
def app(make_app: AppFactory, store: ObjectStore) -> Flask:
    return make_app(storage=store, admin_token="admin-secret")


def stats(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/admin/stats", headers=ADMIN)
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def test_the_figures_add_up_the_records(client: FlaskClient) -> None:
    a = upload_ok(client, images.jpeg(60, 40), "a.jpg", format="webp,jpeg")
    b = upload_ok(client, images.png(30, 20), "b.png", format="png")

    figures = stats(client)

    assert figures["images"] == 2
    assert figures["complete"] is True
    assert figures["unreadable"] == 0
    assert figures["formats"] == {"webp": 1, "jpeg": 1, "png": 1}
    assert figures["label_sources"] == {NO_LABELS: 2}  # LABELER=none
    files = [*a["variants"], a["thumbnail"], *b["variants"], b["thumbnail"]]
    assert figures["bytes_stored"] == sum(f["bytes"] for f in files)
    originals = a["bytes"] + b["bytes"]
    best = min(v["bytes"] for v in a["variants"]) + b["variants"][0]["bytes"]
    assert figures["bytes_saved"] == originals - best
    days = figures["uploads_per_day"]
    assert len(days) == CHART_DAYS
    assert days[-1] == {"date": a["created_at"][:10], "uploads": 2}
    assert sum(d["uploads"] for d in days) == 2


def test_an_empty_catalog_has_a_stats_page_not_a_500(client: FlaskClient) -> None:
    assert stats(client)["images"] == 0

    page = client.get("/admin/stats", headers=ADMIN)

    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "No uploads in these days" in text
    assert 'data-testid="formats-empty"' in text


def test_the_stats_page_draws_accessible_svg_charts_with_tables(client: FlaskClient) -> None:
    upload_ok(client, images.jpeg(60, 40), "a.jpg", format="webp,avif")

    text = client.get("/admin/stats", headers=ADMIN).get_data(as_text=True)

    for chart in ("uploads", "formats", "sources"):
        assert re.search(rf'<svg[^>]*role="img"[^>]*aria-labelledby="{chart}-title', text)
        assert f'<title id="{chart}-title">' in text
    assert text.count('data-testid="day-bar"') == CHART_DAYS
    assert 'data-testid="formats-table"' in text
    assert ">avif</th>" in text
    assert "style=" not in text  # the CSP allows no inline style


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 403),
        ({"Authorization": "Basic YWRtaW46YWRtaW4="}, 401),
    ],
)
def test_the_stats_are_for_the_admin_only(
    client: FlaskClient, headers: dict[str, str], status: int
) -> None:
    upload_ok(client, images.jpeg(60, 40), "secret-name.jpg")

    for path in ("/api/admin/stats", "/admin/stats"):
        for accept in ("application/json", "text/html"):
            response = client.get(path, headers={**headers, "Accept": accept})
            assert response.status_code == status, (path, accept)
            assert "bytes_stored" not in response.get_data(as_text=True)


def test_a_browser_without_the_token_gets_the_way_in(client: FlaskClient) -> None:
    response = client.get("/admin/stats", headers={"Accept": "text/html"})

    assert response.status_code == 401
    assert 'action="/admin/unlock"' in response.get_data(as_text=True)


def test_without_an_admin_token_configured_nobody_sees_the_stats(
    make_app: AppFactory,
) -> None:
    client = make_app().test_client()

    assert client.get("/api/admin/stats", headers=ADMIN).status_code == 403
    assert client.get("/admin/stats", headers={"Accept": "text/html"}).status_code == 401


def test_old_and_broken_records_are_counted_as_unreadable_not_a_500(
    client: FlaskClient, store: ObjectStore
) -> None:
    good = upload_ok(client, images.jpeg(60, 40), "a.jpg")
    raw = json.loads(store.get(f"rec/{good['id']}.json"))
    # A record from before created_at was kept, and others no code wrote.
    old = {k: v for k, v in raw.items() if k != "created_at"} | {"id": "8000000000000aaaaaaaa"}
    old["created_at"] = "yesterday-ish"
    store.put("rec/8000000000000aaaaaaaa.json", json.dumps(old).encode(), content_type="x/json")
    store.put("rec/8000000000001bbbbbbbb.json", b"{not json", content_type="x/json")
    extra = raw | {"id": "8000000000002cccccccc", "from_the_future": 1}
    store.put("rec/8000000000002cccccccc.json", json.dumps(extra).encode(), content_type="x/json")
    texty = raw | {"id": "8000000000003dddddddd", "bytes": "many"}
    store.put("rec/8000000000003dddddddd.json", json.dumps(texty).encode(), content_type="x/json")

    figures = stats(client)

    assert figures["images"] == 2  # the good one, and the one with an unreadable date
    assert figures["unreadable"] == 3
    assert client.get("/admin/stats", headers=ADMIN).status_code == 200


def test_past_the_cap_the_stats_say_they_counted_only_the_newest(
    make_app: AppFactory, store: ObjectStore
) -> None:
    client = make_app(storage=store, admin_token="admin-secret", stats_max_records=2).test_client()
    for n in range(3):
        upload_ok(client, images.jpeg(40 + n, 30), f"{n}.jpg")

    figures = stats(client)

    assert figures["images"] == 2
    assert figures["complete"] is False
    page = client.get("/admin/stats", headers=ADMIN).get_data(as_text=True)
    assert "The newest 2 records only" in page


def test_label_sources_count_each_image_once_per_labeler() -> None:
    base = ImageRecord.from_json(
        json.dumps(
            {
                "id": "7999999999999aaaaaaaa",
                "name": "a",
                "created_at": "2026-01-02T03:04:05Z",
                "source_format": "jpeg",
                "width": 1,
                "height": 1,
                "bytes": 100,
                "variants": [
                    {"name": "webp", "format": "webp", "key": "k", "content_type": "image/webp"}
                    | {"bytes": 40, "width": 1, "height": 1}
                ],
                "thumbnail": {"name": "thumb", "format": "webp", "key": "t"}
                | {"content_type": "image/webp", "bytes": 10, "width": 1, "height": 1},
            }
        ).encode()
    )
    twice = replace(base, labels=(Label("cat", 0.9, "vision"), Label("pet", 0.8, "vision")))
    local = replace(base, labels=(Label("cat", 0.9, "local"),))

    figures = summarize(Scan([twice, local, base], 0, True), limit=10, today=date(2026, 1, 2))

    assert dict(figures.label_sources) == {"vision": 1, "local": 1, NO_LABELS: 1}
    assert figures.uploads_per_day[-1] == (date(2026, 1, 2), 3)
    assert figures.bytes_saved == 3 * (100 - 40)
    assert figures.bytes_stored == 3 * 50


def test_the_navigation_shows_the_stats_to_an_unlocked_admin_only(client: FlaskClient) -> None:
    assert 'data-testid="nav-stats"' not in client.get("/").get_data(as_text=True)
    assert unlock_admin(client, "admin-secret").status_code in (302, 303)

    page = client.get("/").get_data(as_text=True)
    assert 'data-testid="nav-stats"' in page
    assert 'href="/admin/stats"' in page
