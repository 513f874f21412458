"""LocalStore: the embedded-default object store, one file per key under a directory.

Writes are create-only and atomic: the bytes go to a hidden temporary file in the target
directory, are fsynced, and are then hard-linked to their final name. ``os.link`` fails when the
name exists, so two writers can never overwrite each other (``os.replace`` would), and a reader
sees either no file or the whole file. An empty object (an index marker) is created at its name
with ``O_EXCL``, which never replaces either: with no bytes there is nothing to see half-written.
Either way the directory is fsynced once the name is there, before ``put`` returns. Content
type and Cache-Control live in a sidecar under ``.meta/`` when they differ from what the key's
extension implies.

No key segment may start with a dot (``storage.keys.check_key``), so temporary files
(``.tmp-*``) and the ``.meta`` tree can never collide with a key, and ``list`` simply skips
dot-names.

``delete_if_holds`` (releasing a claim) compares and unlinks under an exclusive ``flock`` on one
of a fixed set of lock files in ``.locks/``, which every process and thread sharing the
directory honours; creates need no lock, since ``os.link`` never replaces. Every call fails at
once when the deadline it runs within (``storage.within``) is spent.
"""

from __future__ import annotations

import bisect
import builtins
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from urllib.parse import quote

from imaging.errors import DiskFull, ObjectExists, ObjectNotFound, StorageUnavailable, TooLarge
from imaging.formats import OUTPUT_FORMATS
from imaging.storage import ReadsChunks, time_left
from imaging.storage.keys import check_key, check_prefix

#: Content types implied by an extension: the ones we write, so none needs a sidecar.
EXTENSION_TYPES: dict[str, str] = {
    **{f".{f.ext}": f.mime for f in OUTPUT_FORMATS.values()},
    ".jpeg": "image/jpeg",
    ".json": "application/json",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"

_TEMP_PREFIX = ".tmp-"
_RESERVATION = re.compile(r"^\.tmp-[0-9a-f]{16}-([0-9]+)$")
_META_DIR = ".meta"
_LOCK_DIR = ".locks"
#: Keys share this many lock files (by hash): a bounded set, however many keys are ever locked.
_LOCK_STRIPES = 64
_STREAM_CHUNK = 1024 * 1024


@contextlib.contextmanager
def _unavailable(key: str) -> Iterator[None]:
    """The disk's errors as the storage family's: StorageUnavailable (503), detail logged."""
    try:
        yield
    except OSError as exc:
        raise StorageUnavailable(detail=f"local put {key!r} failed: {exc!r}") from exc


def content_type_for(key: str) -> str:
    """The content type a key's extension implies (what a file without a sidecar is served as)."""
    _, dot, ext = key.rpartition(".")
    if not dot or "/" in ext:
        return DEFAULT_CONTENT_TYPE
    return EXTENSION_TYPES.get(f".{ext.lower()}", DEFAULT_CONTENT_TYPE)


@dataclass(frozen=True)
class ObjectMetadata:
    """What ``put`` was told about an object, for serving it."""

    content_type: str
    cache_control: str | None = None


class LocalStore:
    """Objects as files under ``root``; safe to share between threads and processes."""

    name = "local"

    def __init__(
        self, root: Path | str, *, public_base_url: str = "/media", min_free_bytes: int = 0
    ) -> None:
        # Resolved once, so a later chdir cannot move the store.
        self.root = Path(root).resolve()
        self.min_free_bytes = min_free_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._meta_root = self.root / _META_DIR
        self._public_base_url = public_base_url.rstrip("/")

    # -- the ObjectStore contract --------------------------------------------------------------
    def put(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        """Create ``key``; raise ObjectExists if it holds other bytes (same bytes: success)."""
        path = self._path(check_key(key))
        time_left("local put", key)
        created = False
        try:
            self._create(path, data)
            created = True
        except FileExistsError:
            if self._read_existing(key, path) != data:
                raise ObjectExists(
                    "The object already exists.", detail=f"{key!r} exists with other bytes"
                ) from None
            # Same bytes: a retry of a write that landed, maybe before its sidecar did.
        except OSError as exc:
            raise StorageUnavailable(detail=f"local put {key!r} failed: {exc!r}") from exc
        self._write_sidecar(key, path, created, content_type, cache_control)

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
        """Create ``key`` from ``stream``, read in 1 MiB chunks straight into the temporary
        file: ``put``'s semantics without holding the object in memory. Returns its size.

        The temporary file's name carries ``max_bytes``, so every process sees this write's
        reservation while it runs (``room``). Errors raised by ``stream`` itself (a client that
        went away) pass through unchanged; in every failure the temporary file is removed.
        """
        path = self._path(check_key(key))
        try:
            temp, fd = self._open_temp_for(path, reserve=max_bytes)
        except FileExistsError:
            raise ObjectExists(
                "The object already exists.", detail=f"a parent of {key!r} is an object"
            ) from None
        except OSError as exc:
            raise StorageUnavailable(detail=f"local put {key!r} failed: {exc!r}") from exc
        try:
            try:
                if room is not None:
                    with _unavailable(key):
                        pending = self._pending_bytes(path.parent)
                    if pending > room:
                        raise DiskFull(
                            "There is no room for this upload right now. Please retry later.",
                            detail=f"{key!r} would bring {path.parent} to {pending} bytes "
                            f"(room: {room})",
                            retry_after=30,
                        )
                size, digest = self._copy(key, stream, fd, max_bytes)
            finally:
                os.close(fd)
            with _unavailable(key):
                created = self._link_new(key, temp, path, digest)
        finally:
            temp.unlink(missing_ok=True)
        self._write_sidecar(key, path, created, content_type, cache_control)
        return size

    def overwrite(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        """Replace an existing object's bytes atomically (rename over it); ObjectNotFound if none.

        Only records are overwritten, and a record's metadata is always the same, so the sidecar
        is left as it is.
        """
        path = self._path(check_key(key))
        if not path.is_file():
            raise ObjectNotFound("No such object.", detail=f"{key!r} not found")
        try:
            self._replace(path, data)
        except OSError as exc:
            raise StorageUnavailable(detail=f"local overwrite {key!r} failed: {exc!r}") from exc

    def get(self, key: str) -> bytes:
        """The object's bytes; raise ObjectNotFound if there is none."""
        path = self._path(check_key(key))
        time_left("local get", key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound("No such object.", detail=f"{key!r} not found") from None
        except OSError as exc:
            raise StorageUnavailable(detail=f"local get {key!r} failed: {exc!r}") from exc

    def delete(self, key: str) -> None:
        """Remove ``key`` and its sidecar; a missing key is not an error."""
        path = self._path(check_key(key))
        time_left("local delete", key)
        try:
            self._unlink(key, path)
        except IsADirectoryError:
            return  # "a/b" when only "a/b/c" exists: there is no object "a/b"
        except OSError as exc:
            raise StorageUnavailable(detail=f"local delete {key!r} failed: {exc!r}") from exc

    def delete_if_holds(self, key: str, data: bytes) -> bool:
        """Remove ``key`` only if it holds exactly ``data``: compared and unlinked under a lock."""
        path = self._path(check_key(key))
        time_left("local delete", key)
        try:
            with self._locked(key):
                if self._read_existing(key, path) != data:
                    return False
                self._unlink(key, path)
        except OSError as exc:
            raise StorageUnavailable(detail=f"local delete {key!r} failed: {exc!r}") from exc
        return True

    def list(self, prefix: str, *, start_after: str = "", limit: int = 100) -> list[str]:
        """Up to ``limit`` keys under ``prefix`` that sort after ``start_after``, ascending.

        Only the directory the prefix names is read (``rec/`` reads ``rec``; ``img/`` walks
        ``img/*``), and subtrees wholly before ``start_after`` are skipped unread.
        """
        check_prefix(prefix)
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        time_left("local list", prefix)
        base, _, name_prefix = prefix.rpartition("/")
        base = f"{base}/" if base else ""
        keys = self._walk(self.root / base, base, name_prefix, start_after)
        try:
            return list(islice(keys, limit))
        except OSError as exc:
            raise StorageUnavailable(detail=f"local list {prefix!r} failed: {exc!r}") from exc

    def public_url(self, key: str) -> str:
        """``/media/<key>`` (or under PUBLIC_BASE_URL), served by the media blueprint."""
        return f"{self._public_base_url}/{quote(check_key(key))}"

    def check(self) -> None:
        """Raise StorageUnavailable unless the root is a directory we may write to."""
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(detail=f"media root {self.root} is not a writable directory")
        free = self.free_bytes()
        if free < self.min_free_bytes:
            # A full disk fails uploads part-way (and 503s them): stop taking traffic instead.
            raise DiskFull(
                detail=f"media root {self.root} has {free} bytes free, "
                f"under the floor of {self.min_free_bytes} (MIN_FREE_DISK_MB)"
            )

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer may still use on the media root's filesystem."""
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    # -- serving -------------------------------------------------------------------------------
    def read_for_serving(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and the content type ``put`` was given, for the media blueprint.

        Read whole (variants are at most MAX_OUTPUT_SIDE px): no file stays open on a response
        when a browser drops the connection mid-transfer. Raises ValueError for a malformed key
        (it came from a URL) and ObjectNotFound when there is no such object.
        """
        return self.get(key), self.metadata(key).content_type

    # -- maintenance ---------------------------------------------------------------------------
    def sweep_leftovers(self, *, grace_seconds: float, now: float) -> builtins.list[str]:
        """Remove what a killed writer leaves and listings never show: ``.tmp-*`` files and
        empty directories, once older than the grace period. Returns their paths."""
        removed: builtins.list[str] = []
        for dirpath, _, filenames in os.walk(self.root, topdown=False):
            directory = Path(dirpath)
            for name in filenames:
                if not name.startswith(_TEMP_PREFIX):
                    continue
                temp = directory / name
                with contextlib.suppress(FileNotFoundError):
                    if now - temp.stat().st_mtime >= grace_seconds:
                        temp.unlink()
                        removed.append(str(temp.relative_to(self.root)))
            if directory in (self.root, self._meta_root):
                continue
            with contextlib.suppress(OSError):  # not empty, or just used again
                if now - directory.stat().st_mtime >= grace_seconds:
                    directory.rmdir()
                    removed.append(f"{directory.relative_to(self.root)}/")
        return removed

    def metadata(self, key: str) -> ObjectMetadata:
        """The content type and Cache-Control given to ``put`` (or the extension's type)."""
        try:
            raw = json.loads(self._meta_path(check_key(key)).read_bytes())
            return ObjectMetadata(str(raw["content_type"]), raw.get("cache_control"))
        except (OSError, ValueError, KeyError, TypeError):
            # No sidecar (none was needed, or it is not written yet) or an unreadable one.
            return ObjectMetadata(content_type_for(key))

    # -- internals -----------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        return self.root / key

    def _meta_path(self, key: str) -> Path:
        return self._meta_root / key

    def _unlink(self, key: str, path: Path) -> None:
        """Remove the object's file and its sidecar, and the directories that empties."""
        for victim in (path, self._meta_path(key)):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                victim.unlink()
            self._prune_empty_parents(victim.parent)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """Hold the exclusive lock ``key`` shares with a few others (across processes, too)."""
        stripe = int(hashlib.sha256(key.encode()).hexdigest(), 16) % _LOCK_STRIPES
        lock_path = self.root / _LOCK_DIR / f"{stripe:02d}"
        lock_path.parent.mkdir(exist_ok=True)
        # Each call opens its own file description: flock then excludes other threads too.
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _write_sidecar(
        self, key: str, path: Path, created: bool, content_type: str, cache_control: str | None
    ) -> None:
        """Record what ``put`` was told, once the object is in place.

        Written after the data: until then (or if this fails) the file is served with the type
        its extension implies, which is the right type for everything this app writes.
        """
        metadata = ObjectMetadata(content_type, cache_control)
        try:
            meta_path = self._meta_path(key)
            if metadata != ObjectMetadata(content_type_for(key)):
                payload = json.dumps(
                    {"content_type": content_type, "cache_control": cache_control}
                ).encode()
                self._replace(meta_path, payload)
            else:
                # A sidecar left by a crash between a delete's two unlinks must not stick.
                meta_path.unlink(missing_ok=True)
        except OSError as exc:
            # All or nothing: an object whose sidecar could not be written (a full disk) is
            # taken back, so a failed put never leaves a record or a variant behind.
            if created:
                with contextlib.suppress(OSError):
                    path.unlink()
                    self._prune_empty_parents(path.parent)
            raise StorageUnavailable(detail=f"local put {key!r} metadata failed: {exc!r}") from exc

    def _create(self, path: Path, data: bytes) -> None:
        """Write ``path`` atomically, never replacing it: FileExistsError if it exists."""
        if not data:
            self._create_empty(path)
            return
        temp, fd = self._open_temp_for(path)
        self._fill_temp(temp, fd, data)
        try:
            os.link(temp, path)
        finally:
            temp.unlink(missing_ok=True)
        self._fsync_dir(path.parent)

    def _create_empty(self, path: Path) -> None:
        """Create the empty object ``path`` right at its name: FileExistsError if it exists.

        The index markers (seven of an upload's eleven objects) are empty. An empty file cannot
        be seen half-written, so it needs no temporary file and no link (``O_EXCL`` never
        replaces either), and it has no data to fsync: the fsync of its directory makes the new
        name and its inode durable together, before the record is written. That is 2 ms of CPU
        less per upload (four syscalls and a journal commit per marker), as durable as before.
        """
        _, fd = self._open_temp_for(path, at_name=True)
        os.close(fd)
        self._fsync_dir(path.parent)

    def _open_temp_for(
        self, path: Path, *, reserve: int | None = None, at_name: bool = False
    ) -> tuple[Path, int]:
        """A new hidden file beside ``path`` (``at_name``: ``path`` itself, created new):
        FileExistsError when a parent is an object, or when ``path`` exists (``at_name``)."""
        try:
            return self._open_temp(
                path.parent, reserve=reserve, name=path.name if at_name else None
            )
        except (FileExistsError, NotADirectoryError) as exc:
            if any(parent.is_file() for parent in path.parents if self.root in parent.parents):
                # A parent "directory" is an object: "a/b" exists and we are writing "a/b/c".
                raise FileExistsError(f"a parent of {path} is an object") from None
            if at_name and isinstance(exc, FileExistsError) and os.path.lexists(path):
                raise  # the object itself exists
            raise OSError(f"cannot create the directory for {path}: {exc}") from exc

    def _replace(self, path: Path, data: bytes) -> None:
        """Write ``path`` atomically, replacing what is there (sidecars, and ``overwrite``)."""
        temp = self._write_temp(path.parent, data)
        try:
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)

    @staticmethod
    def _open_temp(
        directory: Path, *, reserve: int | None = None, name: str | None = None
    ) -> tuple[Path, int]:
        """A new hidden file in ``directory`` (created if need be), open for writing.

        ``reserve``: the most bytes the file will grow to, kept in its name
        (``.tmp-<hex>-<reserve>``) for ``_pending_bytes``. ``name``: that name instead.
        """
        suffix = "" if reserve is None else f"-{reserve}"
        # A concurrent delete may prune the empty directory between our mkdir and our open;
        # once the temp file is in it, it is no longer empty and cannot be pruned.
        for attempt in range(3):
            directory.mkdir(parents=True, exist_ok=True)
            temp = directory / (name or f"{_TEMP_PREFIX}{secrets.token_hex(8)}{suffix}")
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                return temp, fd
            except FileNotFoundError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @classmethod
    def _write_temp(cls, directory: Path, data: bytes) -> Path:
        """A new, fsynced hidden file holding ``data`` in ``directory`` (created if need be)."""
        temp, fd = cls._open_temp(directory)
        cls._fill_temp(temp, fd, data)
        return temp

    @staticmethod
    def _fill_temp(temp: Path, fd: int, data: bytes) -> None:
        """Write ``data`` to the new file ``fd`` and fsync it; remove it if that fails."""
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    @staticmethod
    def _copy(key: str, stream: ReadsChunks, fd: int, max_bytes: int) -> tuple[int, bytes]:
        """Copy ``stream`` into the file ``fd`` and fsync it: its size and SHA-256.

        Never asks for more than ``max_bytes + 1`` bytes in all: one byte past the bound is
        enough to refuse, and a server's own cap at the bound plus one is never tripped. Only
        the file's errors become StorageUnavailable; the stream's own pass through.
        """
        size = 0
        digest = hashlib.sha256()
        while chunk := stream.read(min(_STREAM_CHUNK, max_bytes + 1 - size)):
            size += len(chunk)
            if size > max_bytes:
                raise TooLarge(
                    f"The body is longer than {max_bytes} bytes.",
                    detail=f"put_stream {key!r} passed max_bytes={max_bytes}",
                )
            digest.update(chunk)
            with _unavailable(key):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
        with _unavailable(key):
            os.fsync(fd)
        return size, digest.digest()

    def _link_new(self, key: str, temp: Path, path: Path, digest: bytes) -> bool:
        """Give the finished temporary file its name: True if created, False if the same bytes
        were there already; ObjectExists for other bytes."""
        try:
            os.link(temp, path)
        except FileExistsError:
            if self._digest_existing(key, path) != digest:
                raise ObjectExists(
                    "The object already exists.", detail=f"{key!r} exists with other bytes"
                ) from None
            return False
        self._fsync_dir(path.parent)
        return True

    def _digest_existing(self, key: str, path: Path) -> bytes | None:
        """The SHA-256 of the object a create collided with, read in chunks (None: a folder)."""
        digest = hashlib.sha256()
        try:
            with path.open("rb") as fh:
                while chunk := fh.read(_STREAM_CHUNK):
                    digest.update(chunk)
        except (IsADirectoryError, NotADirectoryError, FileNotFoundError):
            return None
        except OSError as exc:
            raise StorageUnavailable(detail=f"local put {key!r} compare failed: {exc!r}") from exc
        return digest.digest()

    @staticmethod
    def _pending_bytes(directory: Path) -> int:
        """What ``directory`` holds and is about to: each object's size, and each write in
        progress at its reservation (``.tmp-<hex>-<reserve>``) or its size if that is larger."""
        total = 0
        with os.scandir(directory) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):  # finished or swept meanwhile
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    size = entry.stat(follow_symlinks=False).st_size
                    if entry.name.startswith(_TEMP_PREFIX):
                        reserved = _RESERVATION.search(entry.name)
                        size = max(size, int(reserved[1]) if reserved else 0)
                    total += size
        return total

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        """Make the new name durable: the record, written last, must not outlive its variants."""
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read_existing(self, key: str, path: Path) -> bytes | None:
        """The bytes of the object a create collided with (None: a directory or a parent file)."""
        try:
            return path.read_bytes()
        except (IsADirectoryError, NotADirectoryError, FileNotFoundError):
            return None
        except OSError as exc:
            raise StorageUnavailable(detail=f"local put {key!r} compare failed: {exc!r}") from exc

    def _prune_empty_parents(self, directory: Path) -> None:
        """Remove now-empty directories up to (not including) the root: no litter after sweeps."""
        while self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or already gone): stop here
            directory = directory.parent

    def _walk(
        self, directory: Path, base: str, name_prefix: str, start_after: str
    ) -> Iterator[str]:
        """Keys under ``directory`` (whose key prefix is ``base``) in ascending order."""
        try:
            with os.scandir(directory) as entries:
                # A directory "a" holds keys "a/...", so it sorts as "a/": after "a-b", before "a0".
                names = sorted(
                    entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name
                    for entry in entries
                    if entry.name.startswith(name_prefix) and not entry.name.startswith(".")
                )
        except (FileNotFoundError, NotADirectoryError):
            return
        if start_after.startswith(base):
            after = start_after[len(base) :]
            start = bisect.bisect_right(names, after)
            # start_after may lie inside the directory just before the cut ("a/" <= "a/x").
            if start > 0 and names[start - 1].endswith("/") and after.startswith(names[start - 1]):
                start -= 1
        else:
            # Every key here starts with base, so they all sort on the same side of start_after.
            start = 0 if start_after < base else len(names)
        for name in names[start:]:
            key = base + name
            if name.endswith("/"):
                yield from self._walk(directory / name[:-1], key, "", start_after)
            elif key > start_after:
                yield key
