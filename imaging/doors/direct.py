"""Direct uploads: a client sends a large file straight to storage, then asks us to convert it.

Cloud Run refuses request bodies over 32 MiB, so big files cannot come through the app. Instead:

1. ``create``: the client announces the content type and size and gets a *ticket*: an upload id
   and a URL to PUT the bytes to, valid for ``UPLOAD_URL_TTL`` seconds. On GCS the URL is a V4
   signed URL for ``tmp/<upload_id>`` that binds the content type and a byte range; on any other
   store (LocalStore) it is this app's own PUT endpoint with a signed, single-use token.
2. The client PUTs the file to the URL (the app never sees the bytes on GCS).
3. ``complete``: we read ``tmp/<upload_id>``, run ``pipeline.ingest`` like every other door,
   remember ``upl/<upload_id>`` -> record id (create-only) and delete the temporary object.
   Completing again answers with the same record.

Keys (beside the catalog's ``img/``, ``rec/``, ``lbl/``, ``sha/``)::

    tmp/<upload_id>       the uploaded bytes until completion (a bucket lifecycle rule or
                          ``sweep`` removes what was never completed)
    upl/<upload_id>       completion marker: the record id
    upl/<upload_id>.put   the claim that spends a single-use PUT token (app PUT endpoint only)

An upload id is ``<expiry>-<nonce>-<mac>``: it carries its own expiry, and the HMAC (keyed with
SECRET_KEY) means only this app can mint one, so nothing about a pending upload is stored.

On LocalStore the app receives the PUT itself and streams it to disk (``WritesStreams``): at
most ``DIRECT_UPLOAD_MAX_PUTS`` at once per process, and ``tmp/`` may hold at most
``DIRECT_UPLOAD_TMP_MAX_MB`` of uploads waiting for completion, PUTs in flight counted at their
announced size. What is never completed is swept by the app itself (``sweep_soon``), at most
once a minute per process.

Completion is bound to whoever asked for the ticket: the ticket (and nothing else) carries a
``completion_key``, a second HMAC of the upload id under its own salt, and ``complete`` answers
403 without it. An upload id may leak (a log line, a shared link, the PUT URL itself); the key
does not travel anywhere but back to the ticket's creator, so nobody else can complete the
upload, choose its name or receive its delete key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from itsdangerous import BadSignature, URLSafeSerializer

from imaging.catalog import TEMP_PREFIX, Catalog, iter_keys
from imaging.catalog import UPLOAD_PREFIX as MARKER_PREFIX
from imaging.config import Settings
from imaging.errors import (
    BadRequest,
    Busy,
    Forbidden,
    Gone,
    ImagingError,
    NotFound,
    ObjectExists,
    ObjectNotFound,
    TooLarge,
    Unavailable,
)
from imaging.formats import INPUT_FORMATS
from imaging.pipeline import IngestResult, Pipeline, Slot, UploadOptions
from imaging.storage import ObjectStore, ReadsChunks, WritesStreams
from imaging.untrusted import same_secret

log = logging.getLogger(__name__)

_CLAIM_SUFFIX = ".put"

#: How often each process sweeps expired uploads by itself (``sweep_soon``), at most.
SWEEP_EVERY_SECONDS = 60

#: How long after its URL expires an upload may still be completed: a big file on a slow link
#: may finish its PUT well after the URL's deadline (GCS checks the deadline when a PUT starts).
COMPLETE_WINDOW_SECONDS = 3600

#: What a ticket may announce. The bytes are sniffed at completion whatever the type says; the
#: type only has to be an image type we read (plus the names browsers give some of them).
ACCEPTED_CONTENT_TYPES = frozenset(
    {f.mime for f in INPUT_FORMATS.values()} | {"image/heif", "image/apng", "image/x-ms-bmp"}
)

_UPLOAD_ID = re.compile(r"^(?P<expires>[0-9]{10})-(?P<nonce>[0-9a-f]{16})-(?P<mac>[0-9a-f]{32})$")


class NothingUploaded(ImagingError):
    """Completion was asked for before any bytes arrived at the upload URL."""

    status, code = 409, "not_uploaded"


class AlreadyUploaded(ImagingError):
    """A single-use upload URL was used a second time."""

    status, code = 409, "already_uploaded"


class Interrupted(ImagingError):
    """The PUT's body ended before its Content-Length, or its connection failed."""

    status, code = 400, "interrupted"


@runtime_checkable
class SignsUploadUrls(Protocol):
    """A store clients can PUT into directly (GCSStore), through a URL it signs."""

    def signed_put_url(
        self,
        key: str,
        *,
        content_type: str,
        max_bytes: int,
        expires_in: int,
        service_account_email: str = "",
    ) -> tuple[str, dict[str, str]]:
        """A URL to PUT ``key`` once, and the headers the PUT must carry exactly."""


@dataclass(frozen=True)
class Ticket:
    """Where and how to PUT the file, and until when."""

    upload_id: str
    url: str
    method: str
    headers: dict[str, str]
    expires_at: datetime
    max_bytes: int
    completion_key: str

    def public(self) -> dict[str, Any]:
        return {
            "upload_id": self.upload_id,
            "completion_key": self.completion_key,
            "url": self.url,
            "method": self.method,
            "headers": dict(self.headers),
            "expires_at": self.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "max_bytes": self.max_bytes,
        }


@dataclass(frozen=True)
class PutGrant:
    """What a verified PUT token allows: one body of this type, up to this many bytes."""

    upload_id: str
    content_type: str
    max_bytes: int


def normalise_content_type(raw: str) -> str:
    """``'Image/PNG; charset=x'`` -> ``'image/png'``."""
    return raw.split(";", 1)[0].strip().lower()


class UploadSessions:
    """Mints tickets, receives PUTs for stores that cannot sign URLs, completes uploads."""

    def __init__(
        self, settings: Settings, store: ObjectStore, pipeline: Pipeline, catalog: Catalog
    ) -> None:
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.max_bytes = settings.direct_upload_max_bytes
        self._pipeline = pipeline
        # Each completion holds a whole file in memory before the pipeline's own slot is
        # reached, so completions are bounded too: at most `slots` files held per process.
        self._holding = threading.BoundedSemaphore(settings.slots)
        # PUTs hold a thread each for as long as the client takes to send its body.
        self._puts = threading.BoundedSemaphore(settings.direct_upload_max_puts)
        self._sweep_lock = threading.Lock()
        self._sweeping = False
        self._next_sweep = 0.0

    @property
    def signs_urls(self) -> bool:
        """True when clients PUT straight into the store (GCS), not through this app."""
        return isinstance(self.store, SignsUploadUrls)

    # -- 1. tickets ---------------------------------------------------------------------------
    def create(
        self,
        *,
        content_type: str,
        size: int,
        app_put_url: Callable[[str, str], str],
        now: float | None = None,
    ) -> Ticket:
        """A ticket for one file; ``app_put_url(upload_id, token)`` is this app's PUT endpoint."""
        content_type = normalise_content_type(content_type)
        if content_type not in ACCEPTED_CONTENT_TYPES:
            raise BadRequest(
                "content_type must be an image type this service reads: "
                + ", ".join(sorted(ACCEPTED_CONTENT_TYPES))
                + "."
            )
        if size < 1:
            raise BadRequest("size must be the file's size in bytes (at least 1).")
        if size > self.max_bytes:
            raise TooLarge.over(self.max_bytes, scope="for direct uploads")
        if not self.signs_urls:
            self._receiving_store()  # refuse a ticket whose PUT could never be received
        self.sweep_soon(now=now)
        ttl = self.settings.upload_url_ttl
        expires = int(time.time() if now is None else now) + ttl
        upload_id = self._mint_id(expires)
        if isinstance(self.store, SignsUploadUrls):
            url, headers = self.store.signed_put_url(
                f"{TEMP_PREFIX}{upload_id}",
                content_type=content_type,
                max_bytes=size,
                expires_in=ttl,
                service_account_email=self.settings.signing_service_account,
            )
        else:
            token = self._serializer().dumps({"id": upload_id, "ct": content_type, "max": size})
            url, headers = app_put_url(upload_id, str(token)), {"Content-Type": content_type}
        return Ticket(
            upload_id=upload_id,
            url=url,
            method="PUT",
            headers=headers,
            expires_at=datetime.fromtimestamp(expires, UTC),
            max_bytes=size,
            completion_key=self._completion_key(upload_id),
        )

    # -- 2. the app's own PUT endpoint (stores that cannot sign URLs) ------------------------
    def grant_put(self, upload_id: str, token: str, *, now: float | None = None) -> PutGrant:
        """Verify a PUT token: 403 when forged or not for this upload, 410 once expired."""
        if self.signs_urls:
            raise NotFound("Uploads go straight to the bucket: PUT to the ticket's URL.")
        try:
            payload = self._serializer().loads(token)
        except BadSignature:
            raise Forbidden("This upload URL is not valid. Ask for a new upload.") from None
        if not (
            isinstance(payload, dict)
            and payload.get("id") == upload_id
            and isinstance(payload.get("ct"), str)
            and isinstance(payload.get("max"), int)
        ):
            raise Forbidden("This upload URL is not valid. Ask for a new upload.")
        if self._expiry(upload_id) <= (time.time() if now is None else now):
            raise Gone("This upload URL has expired. Ask for a new upload.")
        return PutGrant(upload_id, payload["ct"], payload["max"])

    def check_put(self, grant: PutGrant, *, content_type: str, content_length: int | None) -> None:
        """Refuse a PUT whose headers break the ticket, before a byte of it is read."""
        if normalise_content_type(content_type) != grant.content_type:
            raise BadRequest(
                f"Send Content-Type: {grant.content_type}, the type this upload was created for."
            )
        if content_length is not None and content_length > grant.max_bytes:
            raise TooLarge(f"This upload was created for at most {grant.max_bytes} bytes.")

    def receive(
        self, grant: PutGrant, stream: ReadsChunks, *, content_length: int | None = None
    ) -> int:
        """Stream the PUT body to ``tmp/<upload_id>``, spending the token; return its size.

        The body goes to disk in 1 MiB chunks (the store's ``put_stream``), never whole in
        memory. The size bound is enforced while reading, so a body without Content-Length
        (chunked) cannot run past it, and a body shorter than its Content-Length (the client
        went away) is refused, not kept. Busy (503) when ``DIRECT_UPLOAD_MAX_PUTS`` PUTs are
        already arriving here, DiskFull (503) when ``tmp/`` has no room for the announced size:
        both pass with time, so both say when to retry. If the body fails, nothing is kept and
        the token is given back: it was not used up, and the client may retry the same URL.
        """
        store = self._receiving_store()
        self.sweep_soon()
        if not self._puts.acquire(blocking=False):
            raise Busy(
                "Too many uploads are arriving right now. Please retry shortly.",
                detail=f"all {self.settings.direct_upload_max_puts} DIRECT_UPLOAD_MAX_PUTS taken",
            )
        try:
            claim = f"{MARKER_PREFIX}{grant.upload_id}{_CLAIM_SUFFIX}"
            try:
                # Random bytes: a create-only put of *other* bytes is how a second claim fails.
                self.store.put(
                    claim, secrets.token_bytes(16), content_type="application/octet-stream"
                )
            except ObjectExists:
                raise AlreadyUploaded(
                    "This upload URL was already used. Ask for a new upload to send another file."
                ) from None
            try:
                try:
                    return store.put_stream(
                        f"{TEMP_PREFIX}{grant.upload_id}",
                        _Body(stream, content_length),
                        max_bytes=grant.max_bytes,
                        content_type=grant.content_type,
                        room=self.settings.direct_upload_tmp_max_bytes,
                    )
                except TooLarge:
                    raise TooLarge(
                        f"This upload was created for at most {grant.max_bytes} bytes."
                    ) from None
            except BaseException:
                # Best effort: if this delete fails too, the client gets the original error and
                # the URL stays spent (a new ticket is one request away).
                self.catalog.discard([claim])
                raise
        finally:
            self._puts.release()

    # -- 3. completion -------------------------------------------------------------------------
    def complete(
        self,
        upload_id: str,
        options: UploadOptions,
        *,
        completion_key: str,
        now: float | None = None,
    ) -> IngestResult:
        """Convert the uploaded file into a record, once; a repeat answers the same record
        (as a duplicate: this request made nothing new, so the API answers 200, not 201).

        Only with the ticket's ``completion_key`` (403 without it or with another)."""
        expires = self._expiry(upload_id)
        if not hmac.compare_digest(
            completion_key.encode("utf-8", "surrogateescape"),
            self._completion_key(upload_id).encode(),
        ):
            raise Forbidden(
                "Send the ticket's completion_key (X-Completion-Key): only the client that "
                "asked for this upload may complete it."
            )
        marker = f"{MARKER_PREFIX}{upload_id}"
        earlier = self._completed(marker)
        if earlier is not None:
            return earlier
        if (time.time() if now is None else now) > expires + COMPLETE_WINDOW_SECONDS:
            raise Gone("This upload has expired. Upload the file again.")
        temp = f"{TEMP_PREFIX}{upload_id}"
        with self._holding_slot():
            try:
                data = self.store.get(temp)
            except ObjectNotFound:
                raise NothingUploaded(
                    "Nothing has been uploaded for this upload id yet: PUT the file to the "
                    "ticket's URL first, then complete."
                ) from None
            if len(data) > self.max_bytes:
                raise TooLarge.over(self.max_bytes, scope="for direct uploads")
            # A failure here leaves tmp/<id> in place: a 400 for bad options or a 503 can be
            # retried with the same upload id; the lifecycle rule or sweep removes the rest.
            result = self._pipeline.ingest(data, options, max_bytes=self.max_bytes)
            del data
        try:
            self.store.put(marker, result.record.id.encode(), content_type="text/plain")
        except ObjectExists:
            # A concurrent completion got there first: answer with its record, drop ours.
            if not result.duplicate:
                self.catalog.delete(result.record.id)
            winner = self._completed(marker)
            if winner is None:  # pragma: no cover - the marker was there a moment ago
                raise Unavailable(detail=f"completion marker {marker!r} vanished") from None
            return winner
        # The PUT claim stays until sweep: it keeps the spent token spent.
        self.catalog.discard([temp])
        return result

    # -- maintenance ---------------------------------------------------------------------------
    def sweep_soon(self, *, now: float | None = None) -> list[str] | None:
        """Sweep expired uploads, unless this process did so in the last
        ``SWEEP_EVERY_SECONDS`` or is doing so now: what was removed, None when skipped.

        Called by ``create`` and ``receive``, so what was never completed goes away without
        ``flask gc``. Inline and cheap: a listing of ``tmp/`` and ``upl/`` once a minute, and
        a failure is logged, never the request's. Only where the app receives PUTs itself: a
        bucket has its lifecycle rule.
        """
        if self.signs_urls:
            return None
        now = time.time() if now is None else now
        with self._sweep_lock:
            if self._sweeping or now < self._next_sweep:
                return None
            self._sweeping = True
            self._next_sweep = now + SWEEP_EVERY_SECONDS
        try:
            removed = self.sweep(now=now)
        except Exception as exc:  # the request that happened to come by is not at fault
            log.warning("sweeping expired direct uploads failed: %r", exc)
            return []
        finally:
            with self._sweep_lock:
                self._sweeping = False
        if removed:
            log.info("swept %d expired direct-upload object(s)", len(removed))
        return removed

    def sweep(self, *, now: float | None = None) -> list[str]:
        """Remove temporary objects and markers of uploads past their completion window."""
        now = time.time() if now is None else now
        removed = []
        for prefix in (TEMP_PREFIX, MARKER_PREFIX):
            for key in list(iter_keys(self.store, prefix)):
                name = key[len(prefix) :].removesuffix(_CLAIM_SUFFIX)
                match = _UPLOAD_ID.match(name)
                if match is None:
                    continue  # not ours: leave it alone
                if now > int(match["expires"]) + COMPLETE_WINDOW_SECONDS:
                    self.store.delete(key)
                    removed.append(key)
        return removed

    # -- internals -----------------------------------------------------------------------------
    def _completed(self, marker: str) -> IngestResult | None:
        try:
            record_id = self.store.get(marker).decode()
        except ObjectNotFound:
            return None
        return IngestResult(self.catalog.get(record_id), duplicate=True)

    def _secret(self) -> bytes:
        if not self.settings.secret_key:
            raise Unavailable(
                "Direct uploads are not configured on this server.",
                detail="SECRET_KEY is empty: upload ids and tokens cannot be signed",
                retry_after=None,
            )
        return self.settings.secret_key.encode()

    def _mac(self, message: str) -> str:
        # The salts keep this module's old name: a new one would void every upload in flight.
        key = hashlib.sha256(b"imaging.direct.upload-id|" + self._secret()).digest()
        return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()[:32]

    def _completion_key(self, upload_id: str) -> str:
        key = hashlib.sha256(b"imaging.direct.completion-key|" + self._secret()).digest()
        return hmac.new(key, upload_id.encode(), hashlib.sha256).hexdigest()

    def _mint_id(self, expires: int) -> str:
        nonce = secrets.token_hex(8)
        return f"{expires:010d}-{nonce}-{self._mac(f'{expires:010d}-{nonce}')}"

    def _expiry(self, upload_id: str) -> int:
        """The expiry an upload id carries; 404 unless this app minted it."""
        match = _UPLOAD_ID.match(upload_id)
        if match is None or not same_secret(
            match["mac"], self._mac(f"{match['expires']}-{match['nonce']}")
        ):
            raise NotFound("No upload with that id.")
        return int(match["expires"])

    def _serializer(self) -> URLSafeSerializer:
        return URLSafeSerializer(self._secret(), salt="imaging.direct.put-token")

    def _receiving_store(self) -> WritesStreams:
        """The store as the app's own PUT writes to it; 503 if it cannot take a stream."""
        if not isinstance(self.store, WritesStreams):
            raise Unavailable(
                "Direct uploads are not available on this server.",
                detail=f"store {self.store.name!r} neither signs URLs nor writes streams",
                retry_after=None,
            )
        return self.store

    def _holding_slot(self) -> Slot:
        return Slot(self._holding, self.settings.conversion_wait)


class _Body:
    """A PUT body as ``put_stream`` reads it: the end of the body is checked, not assumed.

    Under gunicorn a client that goes away mid-body just ends the stream early (with a
    Content-Length) or raises an OSError (chunked): both are refused here, so a cut-off file
    never becomes ``tmp/<upload_id>``.
    """

    def __init__(self, stream: ReadsChunks, content_length: int | None) -> None:
        self._stream = stream
        self._expected = content_length
        self.received = 0

    def read(self, size: int = -1, /) -> bytes:
        try:
            chunk = self._stream.read(size)
        except OSError as exc:
            raise Interrupted(
                "The upload's connection failed before its end. Send it again.",
                detail=f"after {self.received} bytes: {exc!r}",
            ) from exc
        self.received += len(chunk)
        if not chunk and size != 0:
            if self.received == 0:
                raise BadRequest("The upload was empty.")
            if self._expected is not None and self.received < self._expected:
                raise Interrupted(
                    f"The upload ended after {self.received} of its {self._expected} bytes. "
                    "Send it again.",
                )
        return chunk
