"""The catalog: what a gallery page costs in storage calls, and which records it shows.

Every test runs on LocalStore and on GCSStore (fake-gcs-server) through ``any_store``, with a
counting wrapper around the real store where the cost of a page is the point.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from imaging.catalog import Catalog, ImageRecord, Variant, new_id
from imaging.errors import NotFound, StorageUnavailable, UnreadableRecord
from imaging.labeling import Box, Label
from imaging.storage import ObjectStore
from tests.faults import CountingStore, FlakyStore

START = 1_750_000_000.0  # a fixed "now", so ids (and thus the gallery order) are known


def record(n: int, *, labels: tuple[str, ...] = ("Cat",), hidden: bool = False) -> ImageRecord:
    """The ``n``-th upload after START: a larger ``n`` is newer, so it comes earlier in pages."""
    image_id = new_id(START + n)

    def variant(name: str, ext: str) -> Variant:
        return Variant(name, name, f"img/{image_id}/{name}.{ext}", f"image/{name}", 100, 8, 8)

    return ImageRecord(
        id=image_id,
        name=f"photo-{n}.jpg",
        created_at="2025-06-15T00:00:00Z",
        source_format="jpeg",
        width=8,
        height=8,
        bytes=100,
        variants=(variant("webp", "webp"), variant("jpeg", "jpg")),
        thumbnail=variant("thumb", "webp"),
        labels=tuple(Label(d, 0.9, "vision") for d in labels),
        label_status="ok",
        safe_search={"adult": "VERY_LIKELY"} if hidden else {},
        hidden=hidden,
    )


def save_all(catalog: Catalog, records: list[ImageRecord]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(catalog.save, records))


def commit(catalog: Catalog, rec: ImageRecord) -> None:
    """Save ``rec`` as the pipeline does: its files first (under held/ when hidden), then it."""
    for key in rec.file_keys():
        catalog.store.put(key, key.encode(), content_type="image/webp")
    catalog.save(rec)


def names(records: list[ImageRecord]) -> list[str]:
    return [r.name for r in records]


@pytest.fixture
def counting(any_store: ObjectStore) -> CountingStore:
    return CountingStore(any_store)


@pytest.mark.parametrize("size", [10, 60])
def test_a_page_costs_one_listing_and_one_read_per_record_whatever_the_catalog_size(
    counting: CountingStore, size: int
) -> None:
    catalog = Catalog(counting)
    save_all(catalog, [record(n) for n in range(size)])
    counting.calls.clear()

    page = catalog.page(limit=5)

    assert len(page.records) == 5
    assert counting.calls == Counter(list=1, get=5)


def test_a_deep_page_costs_the_same_as_the_first(counting: CountingStore) -> None:
    catalog = Catalog(counting)
    save_all(catalog, [record(n) for n in range(40)])
    cursor = catalog.page(limit=30).next_cursor
    counting.calls.clear()

    page = catalog.page(cursor=cursor, limit=5)

    assert names(page.records) == [f"photo-{n}.jpg" for n in range(9, 4, -1)]
    assert counting.calls == Counter(list=1, get=5)


def test_pages_run_newest_first_and_the_last_has_no_cursor(any_store: ObjectStore) -> None:
    catalog = Catalog(any_store)
    save_all(catalog, [record(n) for n in range(5)])

    first = catalog.page(limit=3)
    last = catalog.page(cursor=first.next_cursor, limit=3)

    assert names(first.records) == ["photo-4.jpg", "photo-3.jpg", "photo-2.jpg"]
    assert names(last.records) == ["photo-1.jpg", "photo-0.jpg"]
    assert last.next_cursor is None


def test_a_label_page_lists_the_label_index_and_reads_only_its_records(
    counting: CountingStore,
) -> None:
    catalog = Catalog(counting)
    records = [record(n, labels=("Dog",) if n % 3 == 0 else ("Cat",)) for n in range(30)]
    save_all(catalog, records)
    counting.calls.clear()
    counting.listed_prefixes.clear()

    page = catalog.page(label="Dog", limit=4)

    assert names(page.records) == ["photo-27.jpg", "photo-24.jpg", "photo-21.jpg", "photo-18.jpg"]
    assert counting.listed_prefixes == ["lbl/dog/"]
    assert counting.calls == Counter(list=1, get=4)


def test_a_label_is_matched_by_its_slug(any_store: ObjectStore) -> None:
    catalog = Catalog(any_store)
    catalog.save(record(1, labels=("Tabby cat",)))

    assert names(catalog.page(label="tabby-cat").records) == ["photo-1.jpg"]
    assert names(catalog.page(label="TABBY CAT").records) == ["photo-1.jpg"]


def test_a_label_with_nothing_to_slug_gives_an_empty_page(any_store: ObjectStore) -> None:
    catalog = Catalog(any_store)
    catalog.save(record(1, labels=("Cat",)))

    page = catalog.page(label="!!!")

    assert page.records == []
    assert page.next_cursor is None


def test_a_cursor_is_stable_while_newer_records_arrive(any_store: ObjectStore) -> None:
    catalog = Catalog(any_store)
    save_all(catalog, [record(n) for n in range(10)])
    cursor = catalog.page(limit=4).next_cursor

    save_all(catalog, [record(n) for n in range(100, 104)])

    assert names(catalog.page(cursor=cursor, limit=3).records) == [
        "photo-5.jpg",
        "photo-4.jpg",
        "photo-3.jpg",
    ]


def test_records_hidden_by_safe_search_are_not_listed(any_store: ObjectStore) -> None:
    catalog = Catalog(any_store)
    save_all(catalog, [record(1), record(2, hidden=True), record(3)])

    assert names(catalog.page().records) == ["photo-3.jpg", "photo-1.jpg"]
    assert names(catalog.page(label="Cat").records) == ["photo-3.jpg", "photo-1.jpg"]


def test_the_held_page_lists_records_hidden_by_safe_search(any_store: ObjectStore) -> None:
    catalog = Catalog(any_store)
    save_all(catalog, [record(1), record(2, hidden=True), record(3)])

    held = catalog.held_page().records
    shown = sorted([*held, *catalog.page().records], key=lambda r: r.id)

    assert names(held) == ["photo-2.jpg"]
    assert names(shown) == ["photo-3.jpg", "photo-2.jpg", "photo-1.jpg"]


def test_a_label_marker_without_its_record_is_skipped(any_store: ObjectStore) -> None:
    catalog = Catalog(any_store)
    catalog.save(record(1))
    orphan = record(2)  # an upload that died after its markers, before its commit point
    for key in orphan.marker_keys():
        any_store.put(key, b"", content_type="application/octet-stream")

    assert names(catalog.page(label="Cat").records) == ["photo-1.jpg"]


def test_new_ids_sort_newest_first() -> None:
    now = time.time()

    assert new_id(now) < new_id(now - 0.001) < new_id(now - 86_400)


# -- approval --------------------------------------------------------------------------------


def test_approval_lifts_the_hold_and_keeps_the_rest_of_the_record(any_store: ObjectStore) -> None:
    catalog = Catalog(any_store)
    held = record(1, hidden=True)
    commit(catalog, held)

    approved = catalog.approve(held.id)

    assert approved == dataclasses.replace(held, hidden=False)
    assert catalog.get(held.id) == approved
    assert names(catalog.page().records) == ["photo-1.jpg"]


def test_approving_a_record_that_is_not_held_writes_nothing(counting: CountingStore) -> None:
    catalog = Catalog(counting)
    shown = record(1)
    catalog.save(shown)
    counting.calls.clear()

    assert catalog.approve(shown.id) == shown
    assert counting.calls == Counter(get=1)


def test_approving_an_unknown_id_is_not_found(any_store: ObjectStore) -> None:
    with pytest.raises(NotFound, match=r"^No image with that id\.$"):
        Catalog(any_store).approve(new_id(START))


def test_a_failed_approval_restores_the_held_record(any_store: ObjectStore) -> None:
    flaky = FlakyStore(any_store)
    catalog = Catalog(flaky)
    held = record(1, hidden=True)
    commit(catalog, held)
    flaky.fail_on = flaky.puts + 1  # the approved record's write

    with pytest.raises(StorageUnavailable, match="the image is still held back"):
        catalog.approve(held.id)

    assert catalog.get(held.id) == held
    assert catalog.approve(held.id).hidden is False  # a retry goes through


def test_approval_never_leaves_the_image_without_a_record(any_store: ObjectStore) -> None:
    # Once a failed approval could lose the record (it was deleted, then rewritten): now the
    # held record stays until the public one is written, so any failure leaves it held.
    flaky = FlakyStore(any_store)
    catalog = Catalog(flaky)
    held = record(1, hidden=True)
    commit(catalog, held)
    for writes in range(1, 6):  # three files, the label marker, the record
        flaky.fail_on = flaky.puts + writes

        with pytest.raises(StorageUnavailable):
            catalog.approve(held.id)

        assert catalog.get(held.id) == held
        assert catalog.page().records == []
        assert any_store.list("img/") == []  # no public copy left behind
    flaky.fail_on = None
    assert catalog.approve(held.id).hidden is False


class ReadTogether(CountingStore):
    """Holds each record read until ``parties`` threads have read: approvals that overlap."""

    def __init__(self, inner: ObjectStore, parties: int) -> None:
        super().__init__(inner)
        self.barrier = threading.Barrier(parties, timeout=10)

    def get(self, key: str) -> bytes:
        data = super().get(key)
        self.barrier.wait()
        return data


def test_two_admins_approving_at_once_both_succeed(any_store: ObjectStore) -> None:
    held = record(1, hidden=True)
    commit(Catalog(any_store), held)
    catalog = Catalog(ReadTogether(any_store, parties=2))

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(catalog.approve, [held.id, held.id]))

    assert [r.hidden for r in results] == [False, False]
    assert Catalog(any_store).get(held.id) == dataclasses.replace(held, hidden=False)


def test_people_faces_and_text_survive_a_save_and_read(any_store: ObjectStore) -> None:
    catalog = Catalog(any_store)
    face = Box(left=0.25, top=0.1, width=0.2, height=0.3, score=0.93)
    found = dataclasses.replace(record(1), people=3, faces=(face,), text="OPEN\n24 hours")
    commit(catalog, found)

    (again,) = catalog.page(limit=10).records

    assert (again.people, again.faces, again.text) == (3, (face,), "OPEN\n24 hours")


def test_a_record_written_before_people_and_text_reads_with_none_found() -> None:
    saved = json.loads(record(1).to_json())
    for newer in ("people", "faces", "text"):
        del saved[newer]

    old = ImageRecord.from_json(json.dumps(saved).encode())

    assert (old.people, old.faces, old.text) == (0, (), "")


# -- records that no longer parse ------------------------------------------------------------
def damage(store: ObjectStore, rec: ImageRecord) -> None:
    """Cut ``rec``'s stored JSON short, as a hand edit or a half-copied backup leaves it."""
    store.overwrite(rec.location(), rec.to_json()[:40], content_type="application/json")


def test_a_damaged_record_is_unreadable_not_a_parse_error(any_store: ObjectStore) -> None:
    catalog = Catalog(any_store)
    rec = record(1)
    commit(catalog, rec)
    damage(any_store, rec)

    with pytest.raises(UnreadableRecord) as raised:
        catalog.get(rec.id)

    assert (raised.value.status, raised.value.code) == (404, "unreadable_record")
    assert catalog.find(rec.id) is None
    assert catalog.public_records([rec.id]) == [None]
    assert isinstance(catalog.get_many([rec.id])[0], UnreadableRecord)


def test_pages_and_scans_go_on_past_a_damaged_record(any_store: ObjectStore) -> None:
    catalog = Catalog(any_store)
    records = [record(1), record(2), record(3)]
    save_all(catalog, records)
    damage(any_store, records[1])

    page = catalog.page(limit=2)

    assert names(page.records) == ["photo-3.jpg"]  # the damaged one counts against the limit
    assert names(catalog.page(cursor=page.next_cursor).records) == ["photo-1.jpg"]
    assert names(catalog.page(label="Cat").records) == ["photo-3.jpg", "photo-1.jpg"]
    scan = catalog.scan(limit=10)
    assert (names(scan.records), scan.unreadable) == (["photo-3.jpg", "photo-1.jpg"], 1)


def test_a_damaged_held_record_answers_as_a_missing_image(any_store: ObjectStore) -> None:
    # Without its record nobody can be shown to be allowed to know a held-back image exists.
    catalog = Catalog(any_store)
    held = record(1, hidden=True)
    commit(catalog, held)
    damage(any_store, held)

    with pytest.raises(UnreadableRecord) as raised:
        catalog.get(held.id)

    assert raised.value.code == "not_found"
    assert raised.value.public_message == "No image with that id."
    assert catalog.held_page().records == []


@pytest.mark.parametrize(
    "edit",
    [
        {"bytes": "many"},
        {"width": None},
        {"hidden": "no"},
        {"labels": [{"description": "Cat", "score": "high", "source": "vision"}]},
        {"safe_search": {"adult": 3}},
    ],
)
def test_a_record_holding_the_wrong_kinds_is_unreadable(
    any_store: ObjectStore, edit: dict[str, object]
) -> None:
    # Valid JSON with every key, as a hand edit leaves it: a page or the API would fail on it.
    catalog = Catalog(any_store)
    rec = record(1)
    commit(catalog, rec)
    edited = json.loads(rec.to_json()) | edit
    any_store.overwrite(rec.location(), json.dumps(edited).encode(), content_type="x/json")

    with pytest.raises(UnreadableRecord):
        catalog.get(rec.id)

    assert catalog.page().records == []


def test_a_whole_number_where_a_score_belongs_still_reads() -> None:
    saved = json.loads(record(1).to_json())
    saved["labels"][0]["score"] = 1  # a hand edit of 1.0

    assert ImageRecord.from_json(json.dumps(saved).encode()).labels[0].score == 1
