"""The ObjectStore contract, proven on LocalStore (a tmp dir) and GCSStore (fake-gcs-server) alike.

The first part runs every test on both backends through ``any_store``; then come what only one
backend can show: local atomic files and serving, GCS retries, 412s, outages and timeouts.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from google.cloud.storage import Client

from imaging import storage
from imaging.errors import DiskFull, ObjectExists, ObjectNotFound, StorageUnavailable, TooLarge
from imaging.storage import IMMUTABLE_CACHE_CONTROL, ObjectStore
from imaging.storage.gcs import GCSStore
from imaging.storage.local import LocalStore
from tests.gcs_emulator import (
    GCSEmulator,
    ResponseDroppingProxy,
    create_store_buckets,
    make_gcs_store,
    new_bucket_name,
)

WEBP = "image/webp"
JSON = "application/json"
UNSAFE_KEYS = [
    "",
    "/img/1/a.webp",
    "img//a.webp",
    "img/1/",
    "../etc/passwd",
    "img/../rec/1.json",
    "img/./a.webp",
    ".hidden",
    "img\\1\\a.webp",
    "img/1/a\x00.webp",
    "img/1/a\n.webp",
]


def put(store: ObjectStore, key: str, data: bytes = b"data") -> None:
    store.put(key, data, content_type="application/octet-stream")


def put_all(store: ObjectStore, keys: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: put(store, key, key.encode()), keys))


def emulator_blob(bucket: str, key: str) -> Any:
    """The object as the emulator holds it, read with a client of the test's own."""
    # With STORAGE_EMULATOR_HOST set, the library talks to the emulator without credentials.
    return Client(project="test").bucket(bucket).get_blob(key)


def stored_metadata(store: ObjectStore, key: str) -> tuple[str, str | None]:
    """(content type, Cache-Control) as the backend will serve them."""
    if isinstance(store, LocalStore):
        metadata = store.metadata(key)
        return metadata.content_type, metadata.cache_control
    assert isinstance(store, GCSStore)
    blob = emulator_blob(store.bucket_for(key), key)
    return blob.content_type, blob.cache_control


# -- the contract, on both backends ------------------------------------------------------------


def test_put_then_get_returns_the_same_bytes(any_store: ObjectStore) -> None:
    data = bytes(range(256)) * 100
    any_store.put("img/1/a.webp", data, content_type=WEBP)
    assert any_store.get("img/1/a.webp") == data


def test_put_accepts_an_empty_object(any_store: ObjectStore) -> None:
    put(any_store, "lbl/cat/1", b"")
    assert any_store.get("lbl/cat/1") == b""


def test_putting_identical_bytes_again_succeeds(any_store: ObjectStore) -> None:
    put(any_store, "rec/1.json", b"same")
    put(any_store, "rec/1.json", b"same")
    assert any_store.get("rec/1.json") == b"same"


def test_putting_other_bytes_to_an_existing_key_raises_object_exists(
    any_store: ObjectStore,
) -> None:
    put(any_store, "rec/1.json", b"first")
    with pytest.raises(ObjectExists):
        put(any_store, "rec/1.json", b"second")
    assert any_store.get("rec/1.json") == b"first"


def test_overwrite_replaces_an_existing_object_and_keeps_its_metadata(
    any_store: ObjectStore,
) -> None:
    any_store.put("rec/1.json", b"first", content_type=JSON, cache_control="no-store")
    any_store.overwrite("rec/1.json", b"second", content_type=JSON, cache_control="no-store")

    assert any_store.get("rec/1.json") == b"second"
    assert stored_metadata(any_store, "rec/1.json") == (JSON, "no-store")


def test_overwrite_never_creates_a_missing_object(any_store: ObjectStore) -> None:
    # A relabel racing a delete must not bring the deleted record back.
    with pytest.raises(ObjectNotFound):
        any_store.overwrite("rec/1.json", b"ghost", content_type=JSON)
    assert any_store.list("rec/") == []


def test_putting_other_bytes_of_the_same_length_raises_object_exists(
    any_store: ObjectStore,
) -> None:
    put(any_store, "rec/1.json", b"aaaa")
    with pytest.raises(ObjectExists):
        put(any_store, "rec/1.json", b"bbbb")


def test_get_of_a_missing_key_raises_object_not_found(any_store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        any_store.get("rec/missing.json")


def test_delete_removes_the_object(any_store: ObjectStore) -> None:
    put(any_store, "img/1/a.webp")
    any_store.delete("img/1/a.webp")
    with pytest.raises(ObjectNotFound):
        any_store.get("img/1/a.webp")
    assert any_store.list("img/") == []


def test_delete_of_a_missing_key_is_not_an_error(any_store: ObjectStore) -> None:
    any_store.delete("img/1/never.webp")
    put(any_store, "img/1/a.webp")
    any_store.delete("img/1/a.webp")
    any_store.delete("img/1/a.webp")


def test_a_deleted_key_can_be_created_again_with_other_bytes(any_store: ObjectStore) -> None:
    put(any_store, "rec/1.json", b"old")
    any_store.delete("rec/1.json")
    put(any_store, "rec/1.json", b"new")
    assert any_store.get("rec/1.json") == b"new"


def test_list_returns_keys_in_ascending_byte_order(any_store: ObjectStore) -> None:
    # "/" sorts between "-" and "0", and non-ASCII after ASCII: a naive per-directory sort of
    # names ("a" < "a-c" < "a0") would put p/a/b first.
    keys = ["p/a0", "p/\u00e9t\u00e9", "p/a/b", "p/B", "p/z", "p/a-c", "p/a/a/a"]
    put_all(any_store, keys)
    assert any_store.list("p/") == sorted(keys, key=lambda k: k.encode())


def test_list_returns_only_keys_under_the_prefix(any_store: ObjectStore) -> None:
    put_all(any_store, ["rec/1.json", "rec/2.json", "rec0", "recx/1", "img/1/a.webp", "a/rec/1"])
    assert any_store.list("rec/") == ["rec/1.json", "rec/2.json"]


def test_list_matches_a_prefix_that_ends_inside_a_name(any_store: ObjectStore) -> None:
    put_all(any_store, ["lbl/cat/1", "lbl/caterpillar/2", "lbl/dog/3", "lbl/ca"])
    assert any_store.list("lbl/cat") == ["lbl/cat/1", "lbl/caterpillar/2"]


def test_list_with_an_empty_prefix_returns_every_key(any_store: ObjectStore) -> None:
    keys = ["img/1/a.webp", "lbl/cat/1", "rec/1.json", "sha/abc/1"]
    put_all(any_store, keys)
    assert any_store.list("") == keys


def test_list_of_a_prefix_without_keys_is_empty(any_store: ObjectStore) -> None:
    put(any_store, "rec/1.json")
    assert any_store.list("lbl/") == []
    assert any_store.list("rec/1.json/") == []


def test_list_starts_strictly_after_start_after(any_store: ObjectStore) -> None:
    keys = [f"rec/{i}.json" for i in range(1, 6)]
    put_all(any_store, keys)
    assert any_store.list("rec/", start_after="rec/2.json") == keys[2:]


def test_list_start_after_need_not_be_an_existing_key(any_store: ObjectStore) -> None:
    keys = [f"rec/{i}.json" for i in range(1, 6)]
    put_all(any_store, keys)
    assert any_store.list("rec/", start_after="rec/25") == keys[2:]
    assert any_store.list("rec/", start_after="a") == keys
    assert any_store.list("rec/", start_after="z") == []


def test_list_start_after_can_point_inside_a_nested_prefix(any_store: ObjectStore) -> None:
    put_all(any_store, ["img/a/1.webp", "img/a/2.webp", "img/b/1.webp"])
    assert any_store.list("img/", start_after="img/a/1.webp") == ["img/a/2.webp", "img/b/1.webp"]
    assert any_store.list("img/", start_after="img/a/") == [
        "img/a/1.webp",
        "img/a/2.webp",
        "img/b/1.webp",
    ]


def test_list_returns_at_most_limit_keys(any_store: ObjectStore) -> None:
    keys = [f"rec/{i}.json" for i in range(1, 6)]
    put_all(any_store, keys)
    assert any_store.list("rec/", limit=2) == keys[:2]
    assert any_store.list("rec/", limit=0) == []


def test_list_pages_through_250_keys(any_store: ObjectStore) -> None:
    keys = [f"rec/{i:04d}.json" for i in range(250)]
    put_all(any_store, keys)
    pages: list[list[str]] = []
    start = ""
    for _ in range(5):  # bounded: a cursor that never advances must fail, not spin
        page = any_store.list("rec/", start_after=start, limit=100)
        if not page:
            break
        pages.append(page)
        start = page[-1]
    assert [len(page) for page in pages] == [100, 100, 50]
    assert [key for page in pages for key in page] == keys


def test_put_keeps_content_type_and_cache_control(any_store: ObjectStore) -> None:
    any_store.put("img/1/a.webp", b"x", content_type=WEBP, cache_control=IMMUTABLE_CACHE_CONTROL)
    any_store.put("rec/1.json", b"{}", content_type="application/json", cache_control="no-store")
    any_store.put("lbl/cat/1", b"", content_type="application/octet-stream")
    assert stored_metadata(any_store, "img/1/a.webp") == (WEBP, IMMUTABLE_CACHE_CONTROL)
    assert stored_metadata(any_store, "rec/1.json") == ("application/json", "no-store")
    assert stored_metadata(any_store, "lbl/cat/1") == ("application/octet-stream", None)


def test_put_keeps_a_content_type_its_extension_does_not_imply(any_store: ObjectStore) -> None:
    any_store.put("img/1/a.bin", b"x", content_type="image/avif")
    assert stored_metadata(any_store, "img/1/a.bin") == ("image/avif", None)


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_rejected(any_store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="storage key"):
        put(any_store, key)
    with pytest.raises(ValueError, match="storage key"):
        any_store.get(key)
    with pytest.raises(ValueError, match="storage key"):
        any_store.delete(key)
    with pytest.raises(ValueError, match="storage key"):
        any_store.public_url(key)
    with pytest.raises(ValueError, match="storage key"):
        any_store.read_for_serving(key)


@pytest.mark.parametrize("prefix", ["/", "../", "rec//", "rec/../"])
def test_unsafe_prefixes_are_rejected(any_store: ObjectStore, prefix: str) -> None:
    with pytest.raises(ValueError, match="storage key"):
        any_store.list(prefix)


def test_public_url_ends_with_the_quoted_key(any_store: ObjectStore) -> None:
    assert any_store.public_url("img/1/a.webp").endswith("/img/1/a.webp")
    assert any_store.public_url("img/tabby cat/1.webp").endswith("/img/tabby%20cat/1.webp")


def test_concurrent_puts_of_distinct_keys_all_land(any_store: ObjectStore) -> None:
    keys = [f"img/{i:03d}/a.webp" for i in range(64)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda key: put(any_store, key, key.encode()), keys))
    assert any_store.list("img/", limit=1000) == keys
    assert all(any_store.get(key) == key.encode() for key in keys)


def test_concurrent_puts_of_other_bytes_to_one_key_let_exactly_one_win(
    any_store: ObjectStore,
) -> None:
    writers = 8
    barrier = threading.Barrier(writers)

    def attempt(n: int) -> bytes | None:
        barrier.wait()
        try:
            put(any_store, "rec/contested.json", f"writer {n}".encode())
        except ObjectExists:
            return None
        return f"writer {n}".encode()

    with ThreadPoolExecutor(max_workers=writers) as pool:
        winners = [data for data in pool.map(attempt, range(writers)) if data is not None]
    assert len(winners) == 1
    assert any_store.get("rec/contested.json") == winners[0]


def test_concurrent_puts_of_the_same_bytes_all_succeed(any_store: ObjectStore) -> None:
    writers = 8
    barrier = threading.Barrier(writers)

    def attempt(_: int) -> None:
        barrier.wait()
        put(any_store, "rec/same.json", b"identical")

    with ThreadPoolExecutor(max_workers=writers) as pool:
        list(pool.map(attempt, range(writers)))
    assert any_store.get("rec/same.json") == b"identical"


def test_check_passes_when_the_backend_is_reachable(any_store: ObjectStore) -> None:
    any_store.check()


# -- conditional deletes and deadlines (issue 14, items 13 and 15) ----------------------------


def test_delete_if_holds_removes_the_object_only_while_it_holds_those_bytes(
    any_store: ObjectStore,
) -> None:
    put(any_store, "sha/k.json", b"mine")

    assert any_store.delete_if_holds("sha/k.json", b"theirs") is False
    assert any_store.get("sha/k.json") == b"mine"
    assert any_store.delete_if_holds("sha/k.json", b"mine") is True
    with pytest.raises(ObjectNotFound):
        any_store.get("sha/k.json")
    assert any_store.delete_if_holds("sha/k.json", b"mine") is False


def test_local_conditional_deletes_racing_creates_never_remove_a_newer_object(
    tmp_path: Path,
) -> None:
    """Take-overs as the claims do them: remove the old holder's bytes, then create your own.

    Each round's writers race to replace the same holder; exactly one may succeed, and nobody
    may remove the object the winner created (a compare-then-delete without a lock would). On
    GCS the generation precondition does this (see the test below); fake-gcs-server ignores
    that precondition on deletes, so the race is shown here on LocalStore's lock only.
    """
    any_store = LocalStore(tmp_path / "media")
    put(any_store, "sha/k.json", b"round-0")
    writers = 6

    def take_over(old: bytes, new: bytes, barrier: threading.Barrier) -> bool:
        barrier.wait()
        removed = any_store.delete_if_holds("sha/k.json", old)
        if removed:
            put(any_store, "sha/k.json", new)
        return removed

    for round_ in range(1, 5):
        old, new = f"round-{round_ - 1}".encode(), f"round-{round_}".encode()
        barrier = threading.Barrier(writers)
        with ThreadPoolExecutor(max_workers=writers) as pool:
            racers = [pool.submit(take_over, old, new, barrier) for _ in range(writers)]
            winners = sum(racer.result() for racer in racers)
        assert winners == 1
        assert any_store.get("sha/k.json") == new


def test_a_call_past_its_deadline_fails_at_once_and_writes_nothing(
    any_store: ObjectStore,
) -> None:
    with storage.within(0.0), pytest.raises(StorageUnavailable) as raised:
        put(any_store, "img/1/late.webp")
    assert "deadline passed" in str(raised.value.detail)
    with pytest.raises(ObjectNotFound):
        any_store.get("img/1/late.webp")


def test_a_deadline_only_holds_inside_its_block(any_store: ObjectStore) -> None:
    with storage.within(0.0):
        pass
    put(any_store, "img/1/after.webp")
    assert any_store.get("img/1/after.webp") == b"data"


# -- LocalStore --------------------------------------------------------------------------------


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_local_store_is_named_local(tmp_path: Path) -> None:
    assert LocalStore(tmp_path).name == "local"


def test_local_public_url_is_under_media_by_default(tmp_path: Path) -> None:
    assert LocalStore(tmp_path).public_url("img/1/a.webp") == "/media/img/1/a.webp"


def test_local_public_url_uses_public_base_url(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, public_base_url="https://cdn.example.com/media/")
    assert store.public_url("img/1/a.webp") == "https://cdn.example.com/media/img/1/a.webp"


def test_local_read_for_serving_gives_the_bytes_and_their_content_type(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("img/1/a.avif", b"avif bytes", content_type="image/avif")
    data, content_type = store.read_for_serving("img/1/a.avif")
    assert data == b"avif bytes"
    assert content_type == "image/avif"


def test_local_read_for_serving_a_missing_key_raises_object_not_found(tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        LocalStore(tmp_path).read_for_serving("img/1/missing.webp")


def test_local_read_for_serving_refuses_a_path_that_escapes_the_root(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"secret")
    store = LocalStore(tmp_path / "media")
    with pytest.raises(ValueError, match="storage key"):
        store.read_for_serving("../secret")


def test_local_failed_put_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    put(store, "rec/1.json", b"first")
    before = files_under(tmp_path)
    with pytest.raises(ObjectExists):
        put(store, "rec/1.json", b"second")
    assert files_under(tmp_path) == before


def test_local_put_under_an_existing_object_raises_object_exists(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    put(store, "lbl/cat", b"a file where a directory would go")
    before = files_under(tmp_path)
    with pytest.raises(ObjectExists):
        put(store, "lbl/cat/1")
    assert files_under(tmp_path) == before


def _disk_steps(monkeypatch: pytest.MonkeyPatch, root: Path) -> list[tuple[str, str]]:
    """Every fsync (of the path it flushed) and link LocalStore makes, in order, as keys."""
    steps: list[tuple[str, str]] = []
    real_fsync, real_link = os.fsync, os.link

    def name(path: str | os.PathLike[str]) -> str:
        relative = os.path.relpath(path, root)
        return "." if relative == "." else relative

    def fsync(fd: int) -> None:
        steps.append(("fsync", name(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def link(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        steps.append(("link", name(dst)))
        real_link(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    return steps


def test_local_an_object_with_bytes_is_fsynced_before_its_name_and_its_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)
    steps = _disk_steps(monkeypatch, tmp_path)
    store.put("rec/1.json", b"{}", content_type=JSON)

    (kind, temp), *rest = steps
    assert kind == "fsync"  # the bytes first, before they have a name
    assert temp.startswith("rec/.tmp-")
    assert rest == [("link", "rec/1.json"), ("fsync", "rec")]  # then the name, made durable


def test_local_an_empty_marker_is_created_at_its_name_and_its_directory_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)
    steps = _disk_steps(monkeypatch, tmp_path)
    put(store, "idx/cat/1", b"")

    # No data to flush and no temporary file to link: the directory's fsync alone makes the
    # new name (and its inode) durable, before the record that follows it is written.
    assert steps == [("fsync", "idx/cat")]
    assert files_under(tmp_path) == ["idx/cat/1"]
    assert store.get("idx/cat/1") == b""


def test_local_an_empty_object_is_create_only_like_any_other(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    put(store, "idx/cat/1", b"")
    put(store, "idx/cat/1", b"")  # the same (no) bytes again: a retry, a success
    put(store, "rec/1.json", b"{}")
    with pytest.raises(ObjectExists):
        put(store, "rec/1.json", b"")
    put(store, "idx/dog/2/x", b"")
    with pytest.raises(ObjectExists):
        put(store, "idx/dog/2", b"")  # a directory of objects is there
    assert store.get("rec/1.json") == b"{}"
    assert files_under(tmp_path) == [".meta/rec/1.json", "idx/cat/1", "idx/dog/2/x", "rec/1.json"]


def test_local_list_skips_files_being_written(tmp_path: Path) -> None:
    # A put writes to a hidden temporary file in the object's directory, then links it into
    # place; names starting with a dot are never keys, so a listing never shows half a file.
    store = LocalStore(tmp_path)
    put(store, "rec/1.json")
    (tmp_path / "rec" / ".tmp-0123456789abcdef").write_bytes(b"half a rec")
    assert store.list("rec/") == ["rec/1.json"]
    assert store.list("") == ["rec/1.json"]


def test_local_list_skips_the_metadata_sidecars(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("img/1/a.webp", b"x", content_type=WEBP, cache_control=IMMUTABLE_CACHE_CONTROL)
    assert store.list("") == ["img/1/a.webp"]


def test_local_reader_never_sees_a_partial_object(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    data = os.urandom(8 * 1024 * 1024)
    keys = [f"img/{i}/a.webp" for i in range(6)]
    seen: list[int] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            for key in keys:
                with contextlib.suppress(ObjectNotFound):
                    seen.append(len(store.get(key)))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for key in keys:
            store.put(key, data, content_type=WEBP)
    finally:
        done.set()
        reader.join()
    assert set(seen) <= {len(data)}


def test_local_delete_leaves_no_empty_directories(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("img/1/a.webp", b"x", content_type=WEBP, cache_control=IMMUTABLE_CACHE_CONTROL)
    put(store, "lbl/cat/1")
    store.delete("img/1/a.webp")
    store.delete("lbl/cat/1")
    assert list(tmp_path.rglob("*")) == []
    assert tmp_path.is_dir()


def test_local_delete_keeps_directories_that_still_hold_objects(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    put_all(store, ["img/1/a.webp", "img/1/b.webp"])
    store.delete("img/1/a.webp")
    assert store.list("img/") == ["img/1/b.webp"]


def test_local_check_fails_when_the_root_is_not_a_directory(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "media")
    shutil.rmtree(tmp_path / "media")
    (tmp_path / "media").write_bytes(b"not a directory")
    with pytest.raises(StorageUnavailable):
        store.check()


def test_local_disk_errors_are_storage_unavailable(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "media")
    shutil.rmtree(tmp_path / "media")
    (tmp_path / "media").write_bytes(b"not a directory")
    with pytest.raises(StorageUnavailable):
        put(store, "rec/1.json")


# -- LocalStore.put_stream: the direct-upload PUT's body to disk, never whole in memory ----------

MiB = 1024 * 1024


class Chunks:
    """A stream of ``total`` bytes made on the fly, recording what was asked of it; it raises
    ``fail`` once ``fail_after`` bytes are out."""

    def __init__(
        self, total: int, *, fail_after: int | None = None, fail: BaseException | None = None
    ) -> None:
        self.total = total
        self.sent = 0
        self.asked = 0
        self.fail_after = fail_after
        self.fail = fail

    def read(self, size: int = -1, /) -> bytes:
        assert size > 0, "put_stream asks for bounded chunks"
        self.asked += size
        if self.fail is not None and self.fail_after is not None and self.sent >= self.fail_after:
            raise self.fail
        n = min(size, self.total - self.sent)
        self.sent += n
        return bytes([self.sent % 251]) * n


def stream_of(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


def test_local_put_stream_creates_the_object_with_its_content_type(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    data = os.urandom(3 * MiB + 17)
    size = store.put_stream("tmp/upload", stream_of(data), max_bytes=len(data), content_type=WEBP)
    assert size == len(data)
    assert store.get("tmp/upload") == data
    assert store.metadata("tmp/upload").content_type == WEBP
    assert store.list("tmp/") == ["tmp/upload"]
    assert files_under(tmp_path) == [".meta/tmp/upload", "tmp/upload"]


def test_local_put_stream_holds_one_chunk_in_memory_not_the_body(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    body = Chunks(64 * MiB)
    tracemalloc.start()
    try:
        store.put_stream("tmp/big", body, max_bytes=64 * MiB, content_type=WEBP)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "tmp" / "big").stat().st_size == 64 * MiB
    # A chunk is 1 MiB: the stream's own chunk and the one being written, and small change.
    assert peak < 4 * MiB, f"peak {peak / MiB:.1f} MiB for a 64 MiB body"


def test_local_put_stream_over_max_bytes_leaves_nothing_and_reads_one_byte_past(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path)
    body = Chunks(5 * MiB)
    with pytest.raises(TooLarge):
        store.put_stream("tmp/upload", body, max_bytes=2 * MiB + 3, content_type=WEBP)
    # One byte past the bound is enough to refuse: a server capped at bound + 1 never trips.
    assert body.asked == 2 * MiB + 4
    assert files_under(tmp_path) == []


def test_local_put_stream_of_exactly_max_bytes_is_accepted(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    data = os.urandom(MiB)
    assert store.put_stream("tmp/u", stream_of(data), max_bytes=MiB, content_type=WEBP) == MiB
    assert store.get("tmp/u") == data


def test_local_put_stream_failing_mid_way_leaves_nothing_and_passes_the_error_on(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path)
    gone = ConnectionResetError("the client went away")
    body = Chunks(8 * MiB, fail_after=3 * MiB, fail=gone)
    with pytest.raises(ConnectionResetError) as caught:
        store.put_stream("tmp/upload", body, max_bytes=8 * MiB, content_type=WEBP)
    # The stream's own error, not StorageUnavailable: the disk did nothing wrong.
    assert caught.value is gone
    assert files_under(tmp_path) == []


def test_local_put_stream_is_create_only_like_put(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    data = os.urandom(2 * MiB)
    store.put_stream("tmp/u", stream_of(data), max_bytes=len(data), content_type=WEBP)
    # The same bytes again: a retry of a write that landed, so a success.
    again = store.put_stream("tmp/u", stream_of(data), max_bytes=len(data), content_type=WEBP)
    assert again == len(data)
    other = os.urandom(2 * MiB)
    with pytest.raises(ObjectExists):
        store.put_stream("tmp/u", stream_of(other), max_bytes=len(other), content_type=WEBP)
    assert store.get("tmp/u") == data
    assert files_under(tmp_path) == [".meta/tmp/u", "tmp/u"]


def test_local_put_stream_under_an_existing_object_raises_object_exists(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    put(store, "tmp", b"an object where a directory would go")
    before = files_under(tmp_path)
    with pytest.raises(ObjectExists):
        store.put_stream("tmp/u", stream_of(b"x"), max_bytes=1, content_type=WEBP)
    assert files_under(tmp_path) == before


def test_local_put_stream_whose_sidecar_fails_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)

    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "_replace", disk_full)
    with pytest.raises(StorageUnavailable):
        store.put_stream("tmp/u", stream_of(b"bytes"), max_bytes=5, content_type=WEBP)
    assert files_under(tmp_path) == []


def test_local_put_stream_refuses_before_reading_when_the_folder_has_no_room(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path)
    store.put_stream("tmp/a", stream_of(b"a" * 600), max_bytes=600, content_type=WEBP, room=1000)
    body = Chunks(500)
    with pytest.raises(DiskFull) as caught:
        store.put_stream("tmp/b", body, max_bytes=500, content_type=WEBP, room=1000)
    assert caught.value.status == 503
    assert caught.value.retry_after
    assert body.asked == 0
    assert store.list("tmp/") == ["tmp/a"]
    # Other folders do not count: the room is the key's folder's.
    put(store, "rec/1.json", b"r" * 5000)
    store.put_stream("tmp/b", stream_of(b"b" * 400), max_bytes=400, content_type=WEBP, room=1000)


def test_local_put_stream_counts_a_write_in_progress_at_its_reservation(tmp_path: Path) -> None:
    """Another writer's PUT (here: one started from inside this stream) counts at its
    max_bytes while it runs, not at the few bytes it has written so far."""
    store = LocalStore(tmp_path)
    refused: list[BaseException] = []

    class StartsAnotherUpload(Chunks):
        def read(self, size: int = -1, /) -> bytes:
            if self.sent == 0:
                with pytest.raises(DiskFull) as caught:
                    store.put_stream(
                        "tmp/second",
                        stream_of(b"x" * 300),
                        max_bytes=300,
                        content_type=WEBP,
                        room=1000,
                    )
                refused.append(caught.value)
            return super().read(size)

    store.put_stream(
        "tmp/first", StartsAnotherUpload(100), max_bytes=800, content_type=WEBP, room=1000
    )
    assert len(refused) == 1
    assert store.list("tmp/") == ["tmp/first"]
    # Done, the first counts at its real size (100): now there is room for the second.
    store.put_stream(
        "tmp/second", stream_of(b"x" * 300), max_bytes=300, content_type=WEBP, room=1000
    )


# -- GCSStore ----------------------------------------------------------------------------------


def test_gcs_store_is_named_gcs() -> None:
    assert GCSStore("bucket", public_bucket="public").name == "gcs"


def test_gcs_public_url_is_the_objects_storage_googleapis_url_by_default() -> None:
    url = GCSStore("my-bucket", public_bucket="my-public").public_url("img/1/a.webp")
    assert url == "https://storage.googleapis.com/my-public/img/1/a.webp"


def test_gcs_public_url_uses_public_base_url() -> None:
    store = GCSStore(
        "my-bucket", public_bucket="my-public", public_base_url="https://cdn.example.com/"
    )
    assert store.public_url("img/1/a.webp") == "https://cdn.example.com/img/1/a.webp"


def test_gcs_serves_nothing_through_the_app_the_bucket_serves_its_own_urls(
    gcs_store: GCSStore,
) -> None:
    gcs_store.put("img/1/a.webp", b"webp bytes", content_type=WEBP)
    with pytest.raises(ObjectNotFound):
        gcs_store.read_for_serving("img/1/a.webp")


def test_gcs_store_needs_only_the_shared_key_rules_not_local_store() -> None:
    # A fresh interpreter: this one has long imported every backend.
    code = "import sys, imaging.storage.gcs; print('imaging.storage.local' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


def test_gcs_put_after_a_412_with_the_same_bytes_succeeds_without_rewriting(
    gcs_bucket: str,
) -> None:
    store = make_gcs_store(gcs_bucket)
    put(store, "rec/1.json", b"image")
    generation = emulator_blob(gcs_bucket, "rec/1.json").generation
    put(store, "rec/1.json", b"image")  # the upload meets 412; the object holds our bytes
    assert emulator_blob(gcs_bucket, "rec/1.json").generation == generation


def test_gcs_put_after_a_412_with_other_bytes_raises_object_exists(gcs_bucket: str) -> None:
    store = make_gcs_store(gcs_bucket)
    put(store, "rec/1.json", b"image")
    generation = emulator_blob(gcs_bucket, "rec/1.json").generation
    with pytest.raises(ObjectExists):
        put(store, "rec/1.json", b"other")
    assert emulator_blob(gcs_bucket, "rec/1.json").generation == generation


def test_gcs_upload_whose_response_was_lost_is_retried_into_success(
    gcs_bucket: str, response_dropping_proxy: ResponseDroppingProxy
) -> None:
    # The first upload lands but its answer never arrives; the retry meets 412, and the object
    # turns out to hold our bytes, so the put succeeds.
    store = make_gcs_store(gcs_bucket)
    response_dropping_proxy.drop_next(1, b"POST /upload/")
    store.put("img/1/a.webp", b"image", content_type=WEBP)
    assert response_dropping_proxy.dropped == 1
    assert store.get("img/1/a.webp") == b"image"


OPERATIONS: dict[str, Callable[[ObjectStore], object]] = {
    "put": lambda store: put(store, "img/2/a.webp"),
    "get": lambda store: store.get("img/1/a.webp"),
    "delete": lambda store: store.delete("img/1/a.webp"),
    "list": lambda store: store.list("img/"),
    "check": lambda store: store.check(),
}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_gcs_outage_makes_every_call_storage_unavailable(
    private_gcs_emulator: GCSEmulator, operation: str
) -> None:
    bucket = new_bucket_name()
    create_store_buckets(private_gcs_emulator, bucket)
    store = make_gcs_store(bucket, timeout=1.0, deadline=1.0)
    put(store, "img/1/a.webp")
    private_gcs_emulator.stop()
    with pytest.raises(StorageUnavailable) as raised:
        OPERATIONS[operation](store)
    assert raised.value.retry_after


@pytest.mark.parametrize("operation", ["put", "get", "list"])
def test_gcs_unanswered_requests_end_as_storage_unavailable(
    silent_gcs_endpoint: str, operation: str
) -> None:
    store = make_gcs_store("silent", timeout=0.3, deadline=0.5)
    with pytest.raises(StorageUnavailable):
        OPERATIONS[operation](store)


def test_gcs_conditional_delete_removes_only_the_generation_it_compared(
    gcs_store: GCSStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delete names the generation whose bytes it compared, so real GCS refuses it (412)
    once another writer has replaced the object. fake-gcs-server ignores that condition on
    deletes (it removes any generation), so what is checked here is the request itself."""
    from google.cloud.storage.blob import Blob

    put(gcs_store, "sha/k.json", b"claim")
    generation = emulator_blob(gcs_store.bucket_name, "sha/k.json").generation
    conditions: list[object] = []
    delete = Blob.delete

    def recording_delete(blob: Blob, *args: Any, **kwargs: Any) -> None:
        conditions.append(kwargs.get("if_generation_match"))
        delete(blob, *args, **kwargs)

    monkeypatch.setattr(Blob, "delete", recording_delete)
    assert gcs_store.delete_if_holds("sha/k.json", b"claim") is True
    assert conditions == [int(generation)]


def test_gcs_calls_within_a_deadline_end_with_it_not_with_the_stores_own_retry_deadline(
    private_gcs_emulator: GCSEmulator,
) -> None:
    """Storage down: retries stop when the caller's time is up (the store alone retries 10 s)."""
    bucket = new_bucket_name()
    create_store_buckets(private_gcs_emulator, bucket)
    store = make_gcs_store(bucket, timeout=5.0, deadline=10.0)
    private_gcs_emulator.stop()
    started = time.monotonic()
    with storage.within(1.0), pytest.raises(StorageUnavailable):
        put(store, "img/1/a.webp")
    assert time.monotonic() - started < 1.0 + 3  # the deadline, with a generous margin


def test_gcs_unanswered_calls_within_a_deadline_wait_no_longer_than_it(
    silent_gcs_endpoint: str,
) -> None:
    store = make_gcs_store("silent", timeout=5.0, deadline=10.0)
    started = time.monotonic()
    with storage.within(1.0), pytest.raises(StorageUnavailable):
        store.get("img/1/a.webp")
    assert time.monotonic() - started < 1.0 + 3  # one attempt alone may take 5 s


def test_gcs_check_fails_for_a_missing_bucket(gcs_bucket: str) -> None:
    with pytest.raises(StorageUnavailable):
        make_gcs_store(f"{gcs_bucket}-missing").check()


def test_gcs_check_fails_when_only_the_public_bucket_is_missing(gcs_bucket: str) -> None:
    store = make_gcs_store(gcs_bucket, public_bucket=f"{gcs_bucket}-gone")
    with pytest.raises(StorageUnavailable) as raised:
        store.check()
    assert f"{gcs_bucket}-gone" in str(raised.value.detail)
    make_gcs_store(gcs_bucket).check()  # both there: ready


# -- two buckets: approved variants public, everything else private (issue 14, item 4) ----------
EVERY_KIND_OF_KEY = [
    "img/0000000000000abcdef01/webp.webp",
    "rec/0000000000000abcdef01.json",
    "lbl/cat/0000000000000abcdef01",
    "sha/abc/0000000000000abcdef01",
    "held/img/0000000000000abcdef02/webp.webp",
    "held/rec/0000000000000abcdef02.json",
    "tmp/some-upload",
    "upl/some-upload",
    "evt/bucket/abc/1",
]


def bucket_names(bucket: str) -> list[str]:
    """Every object name in ``bucket``, listed with a client of the test's own."""
    return sorted(blob.name for blob in Client(project="test").list_blobs(bucket))


def test_gcs_keeps_only_img_keys_in_the_public_bucket(gcs_bucket: str) -> None:
    store = make_gcs_store(gcs_bucket)
    put_all(store, EVERY_KIND_OF_KEY)

    assert bucket_names(store.public_bucket_name) == ["img/0000000000000abcdef01/webp.webp"]
    assert bucket_names(gcs_bucket) == sorted(EVERY_KIND_OF_KEY[1:])
    assert [store.bucket_for(k) == store.public_bucket_name for k in EVERY_KIND_OF_KEY] == [
        True,
        *[False] * (len(EVERY_KIND_OF_KEY) - 1),
    ]


def test_gcs_reads_lists_and_deletes_each_key_in_its_own_bucket(gcs_bucket: str) -> None:
    store = make_gcs_store(gcs_bucket)
    put_all(store, EVERY_KIND_OF_KEY)

    assert all(store.get(key) == key.encode() for key in EVERY_KIND_OF_KEY)
    assert store.list("img/") == EVERY_KIND_OF_KEY[:1]
    assert store.list("held/") == sorted(k for k in EVERY_KIND_OF_KEY if k.startswith("held/"))
    assert store.list("") == sorted(EVERY_KIND_OF_KEY)
    assert store.list("", start_after="held/rec/0000000000000abcdef02.json", limit=2) == [
        "img/0000000000000abcdef01/webp.webp",
        "lbl/cat/0000000000000abcdef01",
    ]
    for key in EVERY_KIND_OF_KEY:
        store.delete(key)
    assert bucket_names(gcs_bucket) == bucket_names(store.public_bucket_name) == []


def test_gcs_does_not_see_an_img_key_left_in_the_private_bucket(gcs_bucket: str) -> None:
    """A variant from before the split (one bucket for all) is not public, so it is not ours."""
    old = Client(project="test").bucket(gcs_bucket)
    for n in range(5):
        old.blob(f"img/{n}/old.webp").upload_from_string(b"old")
    store = make_gcs_store(gcs_bucket)
    put_all(store, ["lbl/cat/1", "rec/1.json"])

    with pytest.raises(ObjectNotFound):
        store.get("img/1/old.webp")
    assert store.list("img/") == []
    assert store.list("", limit=2) == ["lbl/cat/1", "rec/1.json"]  # past a page of old ones


def test_gcs_public_urls_point_into_the_public_bucket_and_private_keys_have_none() -> None:
    store = GCSStore("private", public_bucket="public")
    assert store.public_url("img/1/a.webp") == "https://storage.googleapis.com/public/img/1/a.webp"
    for key in EVERY_KIND_OF_KEY[1:]:
        with pytest.raises(ValueError, match="is private"):
            store.public_url(key)


def test_a_gcs_store_refuses_one_bucket_for_both() -> None:
    with pytest.raises(ValueError, match="must not be the private one"):
        GCSStore("images", public_bucket="images")
    with pytest.raises(ValueError, match="a private and a public bucket"):
        GCSStore("images", public_bucket="")


def test_gcs_client_is_made_on_first_use_and_credential_failures_are_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # No emulator and no usable Application Default Credentials: constructing the store must
    # not touch them (it happens before gunicorn forks), using it must fail cleanly.
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    store = GCSStore("bucket", public_bucket="public", timeout=1.0, deadline=1.0)
    with pytest.raises(StorageUnavailable):
        store.get("img/1/a.webp")


def test_a_gcs_clients_connection_pool_holds_a_gallery_pages_parallel_reads(
    gcs_store: GCSStore, caplog: pytest.LogCaptureFixture
) -> None:
    """24 parallel record reads (a gallery page) once overflowed requests' pool of 10."""
    from imaging.catalog import Catalog
    from imaging.storage.gcs import CONNECTION_POOL_SIZE

    for n in range(24):
        gcs_store.put(f"rec/{n:021d}.json", b"{}", content_type="application/json")
    session = gcs_store._client.get()._http
    assert session.get_adapter("http://x")._pool_maxsize == CONNECTION_POOL_SIZE >= 24 + 8
    with caplog.at_level(logging.WARNING, logger="urllib3"):
        list(Catalog(gcs_store)._pool.map(gcs_store.get, [f"rec/{n:021d}.json" for n in range(24)]))
    assert "Connection pool is full" not in caplog.text


# -- all or nothing, and the debris a killed writer leaves (issue 14, items 12 and 14) ----------
def test_a_put_whose_sidecar_cannot_be_written_leaves_no_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that fills between the object's link and its sidecar once left the object."""
    store = LocalStore(tmp_path)

    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "_replace", disk_full)
    with pytest.raises(StorageUnavailable):
        store.put("rec/x.json", b"{}", content_type="application/json", cache_control="no-store")
    with pytest.raises(ObjectNotFound):
        store.get("rec/x.json")
    assert store.list("rec/") == []


def test_gc_sweeps_old_temp_files_and_empty_directories_but_not_young_ones(
    tmp_path: Path,
) -> None:
    from imaging.catalog import Catalog

    store = LocalStore(tmp_path)
    old = 1_000_000.0
    stale_dir = tmp_path / "img" / "0000000000001deadbeef"
    stale_dir.mkdir(parents=True)
    stale_temp = stale_dir / ".tmp-0123456789abcdef"
    stale_temp.write_bytes(b"half a write")
    empty = tmp_path / "img" / "0000000000002deadbeef"
    empty.mkdir()
    young = tmp_path / "rec" / ".tmp-fedcba9876543210"
    young.parent.mkdir()
    young.write_bytes(b"in flight")
    for path in (stale_temp, stale_dir, empty):
        os.utime(path, (old, old))
    assert store.list("img/") == []  # invisible to every listing, so the key sweep misses them

    removed = Catalog(store).sweep(grace_seconds=3600, now=young.stat().st_mtime + 10)

    assert "img/0000000000001deadbeef/.tmp-0123456789abcdef" in removed
    assert "img/0000000000002deadbeef/" in removed
    assert not stale_temp.exists()
    assert not empty.exists()
    assert young.exists()
