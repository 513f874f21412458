"""Wrappers around a real store: fail the n-th write or every call (like an outage would), or
count the calls (what a gallery page costs)."""

from __future__ import annotations

import threading
import time
from collections import Counter

from imaging.errors import StorageUnavailable
from imaging.storage import ObjectStore


class FlakyStore:
    """Delegates to a real store, but the ``fail_on``-th put (1-based) raises StorageUnavailable,
    and so does every put from the ``fail_from``-th on. ``deleted`` lists every key a delete was
    asked for (whether or not it succeeded)."""

    def __init__(
        self, inner: ObjectStore, *, fail_on: int | None = None, fail_from: int | None = None
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.fail_on = fail_on
        self.fail_from = fail_from
        self.puts = 0
        self.down = False
        self.deleted: list[str] = []
        self._lock = threading.Lock()

    def put(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        with self._lock:
            self.puts += 1
            failing = (
                self.down
                or self.puts == self.fail_on
                or (self.fail_from is not None and self.puts >= self.fail_from)
            )
        if failing:
            raise StorageUnavailable(detail=f"injected failure on write {self.puts} ({key})")
        self.inner.put(key, data, content_type=content_type, cache_control=cache_control)

    def overwrite(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        if self.down:
            raise StorageUnavailable(detail="injected outage")
        self.inner.overwrite(key, data, content_type=content_type, cache_control=cache_control)

    def get(self, key: str) -> bytes:
        if self.down:
            raise StorageUnavailable(detail="injected outage")
        return self.inner.get(key)

    def delete(self, key: str) -> None:
        with self._lock:
            self.deleted.append(key)
        if self.down:
            raise StorageUnavailable(detail="injected outage")
        self.inner.delete(key)

    def delete_if_holds(self, key: str, data: bytes) -> bool:
        with self._lock:
            self.deleted.append(key)
        if self.down:
            raise StorageUnavailable(detail="injected outage")
        return self.inner.delete_if_holds(key, data)

    def list(self, prefix: str, *, start_after: str = "", limit: int = 100) -> list[str]:
        if self.down:
            raise StorageUnavailable(detail="injected outage")
        return self.inner.list(prefix, start_after=start_after, limit=limit)

    def public_url(self, key: str) -> str:
        return self.inner.public_url(key)

    def read_for_serving(self, key: str) -> tuple[bytes, str]:
        if self.down:
            raise StorageUnavailable(detail="injected outage")
        return self.inner.read_for_serving(key)

    def check(self) -> None:
        if self.down:
            raise StorageUnavailable(detail="injected outage")
        self.inner.check()


class CountingStore:
    """Passes every call on to a real store and counts it by method (thread-safe).

    ``listed_prefixes`` records what was listed; ``list_seconds`` adds up time spent listing.
    """

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: Counter[str] = Counter()
        self.listed_prefixes: list[str] = []
        self.list_seconds = 0.0
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.listed_prefixes.clear()
            self.list_seconds = 0.0

    def _count(self, method: str) -> None:
        with self._lock:
            self.calls[method] += 1

    def put(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        self._count("put")
        self.inner.put(key, data, content_type=content_type, cache_control=cache_control)

    def overwrite(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        self._count("overwrite")
        self.inner.overwrite(key, data, content_type=content_type, cache_control=cache_control)

    def get(self, key: str) -> bytes:
        self._count("get")
        return self.inner.get(key)

    def delete(self, key: str) -> None:
        self._count("delete")
        self.inner.delete(key)

    def delete_if_holds(self, key: str, data: bytes) -> bool:
        self._count("delete_if_holds")
        return self.inner.delete_if_holds(key, data)

    def list(self, prefix: str, *, start_after: str = "", limit: int = 100) -> list[str]:
        self._count("list")
        started = time.perf_counter()
        try:
            return self.inner.list(prefix, start_after=start_after, limit=limit)
        finally:
            with self._lock:
                self.listed_prefixes.append(prefix)
                self.list_seconds += time.perf_counter() - started

    def public_url(self, key: str) -> str:
        return self.inner.public_url(key)

    def read_for_serving(self, key: str) -> tuple[bytes, str]:
        self._count("read_for_serving")
        return self.inner.read_for_serving(key)

    def check(self) -> None:
        self.inner.check()
