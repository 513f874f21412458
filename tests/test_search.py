"""Search: words from labels (with their parents), names and colours; the index in the store."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from imaging.catalog import Catalog
from imaging.catalog.keys import RECORD_PREFIX
from imaging.labeling import Label, LabelResult
from imaging.pipeline import NEAR_COPIES_NAMED
from imaging.processing import LabelImage, phash
from imaging.search import (
    INDEX_PREFIX,
    NEAR_COPY_WAVE,
    PHASH_PREFIX,
    RECORDS_READ,
    Search,
    band_prefixes,
    parents,
    words,
)
from imaging.storage import ObjectStore
from tests import images
from tests.conftest import AppFactory
from tests.faults import CountingStore
from tests.uploads import upload_ok

ADMIN = {"Authorization": "Bearer admin-secret"}


class FixedLabeler:
    """Labels every image with ``labels``; SafeSearch says ``racy``."""

    name = "fixed"

    def __init__(self, *labels: str, racy: str = "VERY_UNLIKELY") -> None:
        self.labels = labels
        self.racy = racy

    def label(self, image: LabelImage) -> LabelResult:
        found = tuple(Label(text, 0.9 - 0.1 * i, self.name) for i, text in enumerate(self.labels))
        return LabelResult(found, {"racy": self.racy})

    def check(self) -> None:
        return None


class ReadingLabeler(FixedLabeler):
    """Finds one face and reads ``text`` in every picture, as the local detectors report them."""

    def __init__(self, text: str) -> None:
        super().__init__("person")
        self.text = text

    def label(self, image: LabelImage) -> LabelResult:
        return dataclasses.replace(super().label(image), people=1, text=self.text)


def flat(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    return images.encode(Image.new("RGB", size, colour), "PNG")


def found(client: FlaskClient, query: str, **params: Any) -> list[str]:
    response = client.get("/api/images", query_string={"q": query, **params})
    assert response.status_code == 200, response.get_data(as_text=True)
    return [image["id"] for image in response.get_json()["images"]]


def app_labelling(make_app: AppFactory, store: ObjectStore, *labels: str, **kw: Any) -> Flask:
    return make_app(storage=store, labeler_impl=FixedLabeler(*labels), **kw)


# -- words -------------------------------------------------------------------------------------
def test_words_fold_case_accents_plurals_and_synonyms() -> None:
    assert words("Café  Cats, PUPPIES & kittens!") == ["cafe", "cat", "dog"]
    assert words("Gray bus / glass") == ["grey", "bus", "glass"]
    assert words("the") == []


def test_a_label_rolls_up_to_the_vocabulary_words_above_it() -> None:
    assert parents("Tabby cat") == ("cat", "animal")
    assert parents("cat") == ("animal",)
    assert parents("no such thing") == ()


# -- searching through the API, on both backends -------------------------------------------------
def test_a_parent_word_finds_a_tabby(make_app: AppFactory, store: ObjectStore) -> None:
    client = app_labelling(make_app, store, "tabby cat").test_client()
    tabby = upload_ok(client, images.jpeg(), "kitchen.jpg")

    assert found(client, "cat") == [tabby["id"]]
    assert found(client, "Animals") == [tabby["id"]]
    assert found(client, "kitten") == [tabby["id"]]
    assert found(client, "dog") == []


def test_names_are_tokenised(client: FlaskClient) -> None:
    image = upload_ok(client, images.jpeg(), "Beach-Holiday_2024.JPG")

    assert found(client, "holiday") == [image["id"]]
    assert found(client, "2024 beach") == [image["id"]]
    assert found(client, "jpg") == []  # the extension is not a word of the name


def test_colour_search_finds_the_dominant_colour(client: FlaskClient) -> None:
    red = upload_ok(client, flat((200, 20, 30)), "a.png")
    blue = upload_ok(client, flat((30, 60, 200)), "b.png")

    assert found(client, "red") == [red["id"]]
    assert found(client, "blue") == [blue["id"]]
    assert red["colours"][0]["name"] == "red"
    assert red["colours"][0]["hex"].startswith("#")


def test_text_read_in_the_picture_and_its_people_are_searchable(
    make_app: AppFactory, store: ObjectStore
) -> None:
    labeler = ReadingLabeler("Invoice number 4711\nis due on Friday")
    client = make_app(storage=store, labeler_impl=labeler).test_client()
    receipt = upload_ok(client, images.jpeg(), "scan.jpg")

    assert receipt["text"].startswith("Invoice number 4711")
    assert found(client, "invoice friday") == [receipt["id"]]
    assert found(client, "4711 person") == [receipt["id"]]
    assert found(client, "invoice monday") == []


def test_several_words_mean_all_of_them(make_app: AppFactory, store: ObjectStore) -> None:
    client = app_labelling(make_app, store, "cat").test_client()
    red_cat = upload_ok(client, flat((200, 20, 30)), "one.png")
    blue_cat = upload_ok(client, flat((30, 60, 200)), "two.png")

    assert found(client, "red cat") == [red_cat["id"]]
    assert found(client, "cat blue") == [blue_cat["id"]]
    assert found(client, "cat") == [blue_cat["id"], red_cat["id"]]  # newest first
    assert found(client, "red blue") == []


def test_results_page_newest_first_with_cursors(make_app: AppFactory, store: ObjectStore) -> None:
    client = app_labelling(make_app, store, "boat").test_client()
    ids = [upload_ok(client, images.jpeg(40 + i, 30), f"b{i}.jpg")["id"] for i in range(5)]
    newest_first = ids[::-1]

    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params = {"q": "boat", "limit": "2", **({"cursor": cursor} if cursor else {})}
        body = client.get("/api/images", query_string=params).get_json()
        seen += [image["id"] for image in body["images"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first


def test_held_images_never_appear_until_approved(make_app: AppFactory, store: ObjectStore) -> None:
    app = make_app(
        storage=store,
        labeler_impl=FixedLabeler("cat", racy="VERY_LIKELY"),
        safe_search_hide="LIKELY",
        admin_token="admin-secret",
    )
    client = app.test_client()
    held = upload_ok(client, flat((200, 20, 30)), "held-cat.png")
    assert held["hidden"] is True

    for query in ("cat", "red", "held", "held cat red"):
        assert found(client, query) == []
    assert store.list(INDEX_PREFIX) == []
    assert store.list(PHASH_PREFIX) == []

    assert client.post(f"/api/images/{held['id']}/approve", headers=ADMIN).status_code == 200
    assert found(client, "held cat red") == [held["id"]]


def test_delete_takes_the_image_out_of_the_index(client: FlaskClient, store: ObjectStore) -> None:
    image = upload_ok(client, flat((200, 20, 30)), "gone.png")
    assert found(client, "gone") == [image["id"]]
    assert any(key.endswith(image["id"]) for key in store.list(INDEX_PREFIX, limit=1000))

    key = {"X-Delete-Key": image["delete_key"]}
    response = client.delete(f"/api/images/{image['id']}", headers=key)
    assert response.status_code == 204

    assert found(client, "gone") == []
    assert store.list(INDEX_PREFIX) == []
    assert store.list(PHASH_PREFIX) == []


@pytest.mark.parametrize(
    "query",
    ["", " ", "!!!", "../../etc", "a/b/c", "idx/", "猫", "😀 cat", "%00", "\x00\x1f", "x" * 500],
)
def test_odd_queries_answer_without_error(client: FlaskClient, query: str) -> None:
    upload_ok(client, images.jpeg(), "photo.jpg")
    response = client.get("/api/images", query_string={"q": query})

    assert response.status_code == 200
    assert client.get("/", query_string={"q": query}).status_code == 200


def test_a_query_too_long_is_a_clear_400(client: FlaskClient) -> None:
    for query in ("x" * 10_000, " ".join(f"w{i}" for i in range(9))):
        response = client.get("/api/images", query_string={"q": query})
        assert response.status_code == 400
        assert "search" in response.get_json()["message"].lower()
        assert client.get("/", query_string={"q": query}).status_code == 400


def test_a_stale_marker_never_shows_a_wrong_image(client: FlaskClient, store: ObjectStore) -> None:
    image = upload_ok(client, flat((200, 20, 30)), "red.png")
    # What a crash between a relabel's record write and its marker clean-up leaves.
    store.put(f"{INDEX_PREFIX}giraffe/{image['id']}", b"", content_type="application/octet-stream")

    assert found(client, "giraffe") == []
    assert found(client, "giraffe red") == []


# -- near copies -------------------------------------------------------------------------------
def test_a_near_copy_says_so_with_the_other_id(client: FlaskClient) -> None:
    original = upload_ok(client, images.photo("chelsea"), "cat.jpg")
    smaller = images.encode(
        images.open_image(images.photo("chelsea")).resize((300, 200)), "JPEG", quality=70
    )
    copy = upload_ok(client, smaller, "cat-small.jpg")

    assert any(original["id"] in warning for warning in copy["warnings"])
    assert not any("near copy" in warning for warning in original["warnings"])


def test_near_copy_warnings_can_be_turned_off(make_app: AppFactory, store: ObjectStore) -> None:
    client = make_app(storage=store, near_copy_distance=0).test_client()
    upload_ok(client, images.photo("chelsea"), "cat.jpg")
    copy = upload_ok(client, images.photo("chelsea"), "cat.png", format="png")

    assert not any("near copy" in warning for warning in copy["warnings"])


class RecordReads(CountingStore):
    """Counts, besides the calls, every record read (``rec/`` keys) since the last ``reset``."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.records_read = 0

    def reset(self) -> None:
        super().reset()
        self.records_read = 0

    def get(self, key: str) -> bytes:
        if key.startswith(RECORD_PREFIX):
            with self._lock:
                self.records_read += 1
        return super().get(key)


def test_a_burst_of_look_alikes_costs_an_upload_one_wave_of_reads(
    make_app: AppFactory, store: ObjectStore
) -> None:
    reads = RecordReads(store)
    client = make_app(storage=reads).test_client()
    cat = images.open_image(images.photo("chelsea"))
    for quality in range(60, 60 + RECORDS_READ):  # the same picture, a different file each
        upload_ok(client, images.encode(cat, "JPEG", quality=quality), "cat.jpg")

    reads.reset()
    copy = upload_ok(client, images.encode(cat, "JPEG", quality=95), "cat.jpg")

    assert len([w for w in copy["warnings"] if "near copy" in w]) == NEAR_COPIES_NAMED
    assert reads.records_read <= NEAR_COPY_WAVE


def test_the_near_copy_look_reads_on_past_a_wave_of_other_colours(client: FlaskClient) -> None:
    red = upload_ok(client, flat((200, 20, 30)), "red.png")
    for i in range(NEAR_COPY_WAVE + 1):  # newer, so read first: the same (flat) hash, blue
        upload_ok(client, flat((30, 60, 200), (64 + i, 48)), "blue.png")

    copy = upload_ok(client, flat((200, 20, 30), (80, 60)), "red.png")

    near = [w for w in copy["warnings"] if "near copy" in w]
    assert near == [f"This image looks like a near copy of image {red['id']}."]


def test_hashes_up_to_three_bits_apart_always_share_a_band() -> None:
    rng = random.Random(11)
    for _ in range(500):
        value = rng.getrandbits(64)
        flipped = value
        for bit in rng.sample(range(64), 3):
            flipped ^= 1 << bit
        a, b = f"{value:016x}", f"{flipped:016x}"
        assert set(band_prefixes(a)) & set(band_prefixes(b)), (a, b)


def test_a_different_picture_is_no_near_copy(client: FlaskClient) -> None:
    upload_ok(client, images.photo("chelsea"), "cat.jpg")
    coffee = upload_ok(client, images.photo("coffee"), "coffee.jpg")
    red = upload_ok(client, flat((200, 20, 30)), "red.png")
    blue = upload_ok(client, flat((30, 60, 200)), "blue.png")  # the same dHash as red: all 0

    for record in (coffee, red, blue):
        assert not any("near copy" in warning for warning in record["warnings"])


def test_the_detail_page_lists_similar_images(client: FlaskClient) -> None:
    original = upload_ok(client, images.photo("chelsea"), "cat.jpg")
    copy = upload_ok(client, images.photo("chelsea"), "cat.png", format="png")
    other = upload_ok(client, images.photo("coffee"), "coffee.jpg")

    page = client.get(f"/images/{original['id']}").get_data(as_text=True)
    assert f'data-image-id="{copy["id"]}"' in page
    assert f'data-image-id="{other["id"]}"' not in page
    assert 'data-testid="swatch"' in page


# -- the index under the catalog ---------------------------------------------------------------
def test_sweep_removes_index_markers_of_no_record(client: FlaskClient, store: ObjectStore) -> None:
    upload_ok(client, flat((200, 20, 30)), "kept.png")
    orphan = "9999999990000deadbeef"  # minted in 1970: older than any grace period
    store.put(f"{INDEX_PREFIX}ghost/{orphan}", b"", content_type="application/octet-stream")
    store.put(f"{PHASH_PREFIX}0/0000/{orphan}", b"", content_type="application/octet-stream")

    removed = Catalog(store).sweep(grace_seconds=60)

    assert sorted(removed) == [f"{INDEX_PREFIX}ghost/{orphan}", f"{PHASH_PREFIX}0/0000/{orphan}"]
    assert found(client, "kept") != []


def test_many_words_are_checked_by_marker_beyond_the_first_listing(
    make_app: AppFactory, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("imaging.search.SCAN_CHUNK", 2)
    client = app_labelling(make_app, store, "car").test_client()
    reds = [upload_ok(client, flat((200, 20, 30), (40 + i, 30)))["id"] for i in range(3)]
    blues = [upload_ok(client, flat((30, 60, 200), (40 + i, 30)))["id"] for i in range(3)]

    assert found(client, "car red") == reds[::-1]
    assert found(client, "blue car") == blues[::-1]
    results = Search(Catalog(store)).find("car red", limit=2)
    assert [r.id for r in results.records] == reds[::-1][:2]
    assert results.next_cursor == reds[1]


# -- flask relabel -----------------------------------------------------------------------------
def relabel(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["relabel", *args])


def test_relabel_moves_records_and_index_to_the_new_labels(
    make_app: AppFactory, store: ObjectStore, tmp_path: Path
) -> None:
    old = app_labelling(make_app, store, "dog").test_client()
    ids = [upload_ok(old, images.jpeg(40 + i, 30), f"pet{i}.jpg")["id"] for i in range(3)]
    assert found(old, "dog") == ids[::-1]

    upgraded = app_labelling(make_app, store, "tabby cat")
    result = relabel(upgraded, "--cursor-file", str(tmp_path / "cursor"))

    assert result.exit_code == 0, result.output
    assert "3 of 3 record(s) changed." in result.output
    assert "relabel" in result.stderr  # the progress bar
    client = upgraded.test_client()
    assert found(client, "cat") == ids[::-1]
    assert found(client, "dog") == []
    assert store.list(f"{INDEX_PREFIX}dog/") == []
    assert client.get(f"/api/images/{ids[0]}").get_json()["labels"][0]["description"] == "tabby cat"
    assert not (tmp_path / "cursor").exists()  # a finished run starts over next time


def test_relabel_resumes_after_the_cursor(
    make_app: AppFactory, store: ObjectStore, tmp_path: Path
) -> None:
    old = app_labelling(make_app, store, "dog").test_client()
    ids = [upload_ok(old, images.jpeg(40 + i, 30), f"pet{i}.jpg")["id"] for i in range(3)]
    cursor = tmp_path / "cursor"
    cursor.write_text(f"rec/{ids[2]}.json\n")  # the newest was done before a crash

    result = relabel(app_labelling(make_app, store, "bird"), "--cursor-file", str(cursor))

    assert result.exit_code == 0, result.output
    assert "2 of 2 record(s) changed." in result.output
    assert found(old, "bird") == [ids[1], ids[0]]
    assert found(old, "dog") == [ids[2]]


def test_relabel_fills_in_colours_and_hash_of_old_records(
    client: FlaskClient, app: Flask, store: ObjectStore, tmp_path: Path
) -> None:
    image = upload_ok(client, flat((200, 20, 30)), "old.png")
    catalog = Catalog(store)
    record = catalog.get(image["id"])
    before = dataclasses.replace(record, colours=(), phash="")
    catalog.update(record, before)  # a record from before colours and hashes
    assert found(client, "red") == []

    result = relabel(app, "--cursor-file", str(tmp_path / "cursor"))

    assert result.exit_code == 0, result.output
    assert found(client, "red") == [image["id"]]
    # Read back from the stored WebP, not the upload: the hash may move a bit, never far.
    assert phash.distance(catalog.get(image["id"]).phash, record.phash) <= 8


def test_relabel_keeps_a_held_image_held_and_unlisted(
    make_app: AppFactory, store: ObjectStore, tmp_path: Path
) -> None:
    held_settings = {"safe_search_hide": "LIKELY", "admin_token": "admin-secret"}
    old = make_app(
        storage=store, labeler_impl=FixedLabeler("dog", racy="VERY_LIKELY"), **held_settings
    )
    held = upload_ok(old.test_client(), flat((200, 20, 30)), "held.png")
    upgraded = make_app(storage=store, labeler_impl=FixedLabeler("bird"), **held_settings)

    result = relabel(upgraded, "--cursor-file", str(tmp_path / "cursor"))

    assert result.exit_code == 0, result.output
    record = Catalog(store).get(held["id"])
    assert record.hidden is True
    assert [label.description for label in record.labels] == ["bird"]
    assert found(upgraded.test_client(), "bird") == []
    assert store.list(INDEX_PREFIX) == []


def test_words_in_any_script_are_found(client: FlaskClient) -> None:
    image = upload_ok(client, images.jpeg(), "猫と Ümlaut.jpg")

    assert found(client, "猫と") == [image["id"]]
    assert found(client, "umlaut") == [image["id"]]
