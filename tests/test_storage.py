"""The ObjectStore contract, proven on LocalStore (a tmp dir) and GCSStore (fake-gcs-server) alike.

The first part runs every test on both backends through ``any_store``; then come what only one
backend can show: local atomic files and serving, GCS retries, 412s, outages and timeouts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from google.cloud.storage import Client

from imaging.errors import ObjectExists, ObjectNotFound, StorageUnavailable
from imaging.storage import IMMUTABLE_CACHE_CONTROL, ObjectStore
from imaging.storage.gcs import GCSStore
from imaging.storage.local import LocalStore
from tests.gcs_emulator import GCSEmulator, ResponseDroppingProxy, make_gcs_store, new_bucket_name

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
    blob = emulator_blob(store.bucket_name, key)
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
    assert any_store.public_url("lbl/tabby cat/1").endswith("/lbl/tabby%20cat/1")


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


# -- GCSStore ----------------------------------------------------------------------------------


def test_gcs_store_is_named_gcs() -> None:
    assert GCSStore("bucket").name == "gcs"


def test_gcs_public_url_is_the_objects_storage_googleapis_url_by_default() -> None:
    url = GCSStore("my-bucket").public_url("img/1/a.webp")
    assert url == "https://storage.googleapis.com/my-bucket/img/1/a.webp"


def test_gcs_public_url_uses_public_base_url() -> None:
    store = GCSStore("my-bucket", public_base_url="https://cdn.example.com/")
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
    put(store, "img/1/a.webp", b"image")
    generation = emulator_blob(gcs_bucket, "img/1/a.webp").generation
    put(store, "img/1/a.webp", b"image")  # the upload meets 412; the object holds our bytes
    assert emulator_blob(gcs_bucket, "img/1/a.webp").generation == generation


def test_gcs_put_after_a_412_with_other_bytes_raises_object_exists(gcs_bucket: str) -> None:
    store = make_gcs_store(gcs_bucket)
    put(store, "img/1/a.webp", b"image")
    generation = emulator_blob(gcs_bucket, "img/1/a.webp").generation
    with pytest.raises(ObjectExists):
        put(store, "img/1/a.webp", b"other")
    assert emulator_blob(gcs_bucket, "img/1/a.webp").generation == generation


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
    private_gcs_emulator.create_bucket(bucket)
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


def test_gcs_check_fails_for_a_missing_bucket(gcs_bucket: str) -> None:
    with pytest.raises(StorageUnavailable):
        make_gcs_store(f"{gcs_bucket}-missing").check()


def test_gcs_client_is_made_on_first_use_and_credential_failures_are_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # No emulator and no usable Application Default Credentials: constructing the store must
    # not touch them (it happens before gunicorn forks), using it must fail cleanly.
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    store = GCSStore("bucket", timeout=1.0, deadline=1.0)
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
    session = gcs_store._bucket.get().client._http
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
