"""The storage seam: the ObjectStore contract and the mapping from STORAGE_BACKEND to a backend.

Every backend keeps the same keys (``img/<id>/<variant>.<ext>``, ``rec/<id>.json``, ...), writes
create-only (but for ``overwrite``, which only relabelling uses, on records), lists keys in
ascending byte order and gives each variant (``img/``) a public URL; the key rules themselves
are ``imaging.storage.keys``. A backend whose public URLs point at the app (LocalStore:
``/media/...``) serves through ``read_for_serving``; one that serves its own (GCS, from a public
bucket that holds only ``img/``) answers it with ObjectNotFound. Errors are the
``imaging.errors`` storage family: ObjectNotFound, ObjectExists, StorageUnavailable (503).

A piece of work that must answer in time (an upload) runs its store calls ``within`` a deadline:
each call then gets the time left, not the backend's own retry deadline, and once it is spent a
call fails at once. The deadline lives in a context variable, so it reaches the store through
the catalog without every signature carrying it; work handed to a thread pool must carry it
over (``contextvars.copy_context().run``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from imaging.errors import StorageUnavailable

if TYPE_CHECKING:
    from imaging.config import Settings

#: Variants never change once written (new content gets a new id), so caches may keep them forever.
IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"


class ObjectStore(Protocol):
    """Where images and the catalog live. Implementations must be safe to share between threads."""

    name: str

    def put(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        """Create ``key``; raise ObjectExists if it holds other bytes (same bytes: success)."""

    def overwrite(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        """Replace an existing object's bytes, atomically; ObjectNotFound if there is none.

        The one write that is not create-only: relabelling a record (``Catalog.update``).
        """

    def get(self, key: str) -> bytes:
        """The object's bytes; raise ObjectNotFound if there is none."""

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error (deletes are idempotent)."""

    def delete_if_holds(self, key: str, data: bytes) -> bool:
        """Remove ``key`` only if it still holds exactly ``data``, atomically: True if removed.

        A claim is released this way, so that its owner (or a sweep) never removes a claim
        another writer has taken over since.
        """

    def list(self, prefix: str, *, start_after: str = "", limit: int = 100) -> list[str]:
        """Up to ``limit`` keys under ``prefix`` that sort after ``start_after``, ascending."""

    def public_url(self, key: str) -> str:
        """The URL a browser fetches the variant ``img/...`` from (GCS: ValueError for others)."""

    def read_for_serving(self, key: str) -> tuple[bytes, str]:
        """The bytes and content type the app's media route sends for ``key``.

        Raise ValueError for a malformed key (it came from a URL) and ObjectNotFound when the
        object does not exist or this backend serves its objects at their own public URLs.
        """

    def check(self) -> None:
        """Raise StorageUnavailable unless the backend is reachable (readiness probe)."""


@dataclass(frozen=True)
class Deadline:
    """When the store calls of one piece of work must be done, and whether they may retry."""

    ends_at: float  # on the time.monotonic() clock
    retries: bool = True

    def remaining(self) -> float:
        return self.ends_at - time.monotonic()


_deadline: ContextVar[Deadline | None] = ContextVar("imaging_storage_deadline", default=None)


@contextmanager
def within(seconds: float, *, retries: bool = True) -> Iterator[Deadline]:
    """Run the store calls of a ``with`` block within ``seconds`` in all (``retries=False``:
    one attempt each, for best-effort clean-up)."""
    deadline = Deadline(time.monotonic() + seconds, retries)
    token = _deadline.set(deadline)
    try:
        yield deadline
    finally:
        _deadline.reset(token)


def current_deadline() -> Deadline | None:
    """The deadline the current store calls run within, if any."""
    return _deadline.get()


def time_left(action: str, key: str) -> float | None:
    """Seconds the current deadline leaves one store call (None: no deadline is set).

    Raises StorageUnavailable when it is spent: work past its deadline writes nothing more.
    """
    deadline = _deadline.get()
    if deadline is None:
        return None
    left = deadline.remaining()
    if left <= 0:
        raise StorageUnavailable(detail=f"{action} {key!r}: the deadline passed before the call")
    return left


@runtime_checkable
class SweepsLeftovers(Protocol):
    """A store whose writers can leave debris outside its keys (LocalStore's temp files)."""

    def sweep_leftovers(self, *, grace_seconds: float, now: float) -> list[str]:
        """Remove such debris older than ``grace_seconds``; what was removed."""


class ReadsChunks(Protocol):
    """What ``put_stream`` reads from: a request body, a file."""

    def read(self, size: int = -1, /) -> bytes: ...


@runtime_checkable
class WritesStreams(Protocol):
    """A store that writes an object from a stream, never holding it whole (LocalStore).

    The app's own direct-upload PUT needs it: bodies up to DIRECT_UPLOAD_MAX_MB go to disk in
    chunks. GCS needs no such thing there (clients PUT to the bucket through a signed URL).
    """

    def put_stream(
        self,
        key: str,
        stream: ReadsChunks,
        *,
        max_bytes: int,
        content_type: str,
        cache_control: str | None = None,
        room: int | None = None,
    ) -> int:
        """Create ``key`` from ``stream`` as ``put`` would (all or nothing, create-only, same
        bytes: success) and return its size. Over ``max_bytes``: TooLarge, and nothing is left.

        ``room``: the most bytes ``key``'s folder may hold, counting its objects and every write
        in progress there at its ``max_bytes`` (this one included, in every process). A write
        that would pass it is refused with DiskFull before a byte is read."""


def build_store(settings: Settings) -> ObjectStore:
    """The backend STORAGE_BACKEND names, built once per process."""
    if settings.storage_backend == "gcs":
        from imaging.storage.gcs import GCSStore

        return GCSStore(
            settings.gcs_bucket,
            public_bucket=settings.gcs_public_bucket,
            public_base_url=settings.public_base_url,
        )
    from imaging.storage.local import LocalStore

    return LocalStore(
        settings.media_root,
        public_base_url=settings.public_base_url or "/media",
        min_free_bytes=settings.min_free_disk_mb * 1024 * 1024,
    )
