"""GCSStore: the production object store, two Google Cloud Storage buckets.

Everything lives in the private bucket (``GCS_BUCKET``: records, markers, held-back images,
direct uploads, the event ledger) except the approved public variants, ``img/...``, which live
in the public bucket (``GCS_PUBLIC_BUCKET``), the only one anyone but the service may read, and
only object by object (``roles/storage.legacyObjectReader``: get, no list). Every call routes its
key by prefix (``bucket_for``), so the rest of the app sees one store with one key space; an
approval's move from ``held/img/`` to ``img/`` is a get from one bucket and a put to the other.

Create-only writes are ``ifGenerationMatch=0`` uploads, which makes them safe to retry: when a
retried upload (or a concurrent writer) meets 412 Precondition Failed, the object's size and
hashes decide between "our write already landed" (success) and ObjectExists. Every call has a
per-request timeout and a retry deadline, both cut to the time left when the call runs
``within`` a deadline (an upload's); any failure to reach the bucket is StorageUnavailable,
never a library exception.

The client is made on first use, not at construction, so that each gunicorn worker builds its
own after the fork. With STORAGE_EMULATOR_HOST set it talks to that emulator without credentials;
otherwise it uses Application Default Credentials. Both buckets use uniform bucket-level access,
so objects carry no ACLs and public reads are granted on the public bucket alone.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import heapq
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import google.auth
import google.auth.transport.requests
import google_crc32c
from google.api_core import exceptions as api_exceptions
from google.auth.credentials import Signing
from google.auth.exceptions import GoogleAuthError
from google.cloud.storage import Client
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
from google.cloud.storage.retry import DEFAULT_RETRY

from imaging.errors import ObjectExists, ObjectNotFound, StorageUnavailable
from imaging.gclients import PerProcess, anonymous_credentials
from imaging.storage import current_deadline, time_left
from imaging.storage.keys import check_key, check_prefix

#: The keys kept in the public bucket: the approved variants, nothing else.
PUBLIC_PREFIX = "img/"

#: What can go wrong between us and the bucket: HTTP errors (after retries), transport errors
#: (requests' exceptions are OSErrors), credential lookups, corrupted downloads. To a client, all
#: of them mean "storage unavailable".
UNAVAILABLE_ERRORS = (
    api_exceptions.GoogleAPIError,
    GoogleAuthError,
    InvalidResponse,
    DataCorruption,
    OSError,
)


class GCSStore:
    """Objects in a private and a public GCS bucket; one instance is shared by every thread."""

    name = "gcs"

    def __init__(
        self,
        bucket: str,
        *,
        public_bucket: str,
        public_base_url: str = "",
        client: Client | None = None,
        timeout: float = 10,
        deadline: float = 30,
    ) -> None:
        if not bucket or not public_bucket:
            raise ValueError("GCSStore needs a private and a public bucket name")
        if bucket == public_bucket:
            raise ValueError("the public bucket must not be the private one")
        self.bucket_name = bucket
        self.public_bucket_name = public_bucket
        self._public_base_url = public_base_url.rstrip("/")
        self._timeout = timeout
        # Retries transient failures (429, 5xx, connection resets, timeouts) with exponential
        # backoff, giving up after ``deadline`` seconds in all (or the caller's time left).
        self._deadline = deadline
        self._retry = DEFAULT_RETRY.with_timeout(deadline)
        self._client = PerProcess(lambda: with_pool(client or default_client()))
        self._signing_credentials: Any = None  # ADC, looked up on the first signed URL
        self._signing_lock = threading.Lock()

    def bucket_for(self, key: str) -> str:
        """The bucket ``key`` lives in: the public one for ``img/...``, else the private one."""
        return self.public_bucket_name if key.startswith(PUBLIC_PREFIX) else self.bucket_name

    # -- the ObjectStore contract --------------------------------------------------------------
    def put(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        """Create ``key``; raise ObjectExists if it holds other bytes (same bytes: success)."""
        check_key(key)
        with self._unavailable_on_failure("put", key):
            # Two rounds: the object may be deleted between our 412 and our look at it.
            for _ in range(2):
                if self._create(key, data, content_type, cache_control):
                    return
                existing = self._handle(key).get_blob(key, **self._limits("put", key))
                if existing is None:
                    continue
                if _same_content(existing, data):
                    return  # our earlier attempt landed, or someone wrote the very same bytes
                raise ObjectExists(
                    "The object already exists.", detail=f"{key!r} exists with other bytes"
                )
        raise StorageUnavailable(detail=f"gcs put {key!r}: the object kept appearing and vanishing")

    def overwrite(
        self, key: str, data: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        """Replace an existing object's bytes; ObjectNotFound if there is none.

        Compare-and-swap on the generation read first, so a delete in between is not undone
        (the object would come back): a 412 then answers ObjectNotFound or, if it was replaced
        meanwhile, StorageUnavailable (retry).
        """
        check_key(key)
        with self._unavailable_on_failure("overwrite", key):
            existing = self._handle(key).get_blob(key, timeout=self._timeout, retry=self._retry)
            if existing is None:
                raise ObjectNotFound("No such object.", detail=f"{key!r} not found")
            blob = self._handle(key).blob(key)
            blob.cache_control = cache_control
            try:
                blob.upload_from_string(
                    data,
                    content_type=content_type,
                    if_generation_match=existing.generation,
                    timeout=self._timeout,
                    retry=self._retry,
                )
            except api_exceptions.PreconditionFailed:
                if self._handle(key).get_blob(key, timeout=self._timeout) is None:
                    raise ObjectNotFound("No such object.", detail=f"{key!r} deleted") from None
                raise StorageUnavailable(
                    detail=f"gcs overwrite {key!r}: changed meanwhile"
                ) from None

    def get(self, key: str) -> bytes:
        """The object's bytes; raise ObjectNotFound if there is none."""
        check_key(key)
        with self._unavailable_on_failure("get", key):
            try:
                data = self._handle(key).blob(key).download_as_bytes(**self._limits("get", key))
            except api_exceptions.NotFound:
                raise ObjectNotFound("No such object.", detail=f"{key!r} not found") from None
        return bytes(data)

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""
        check_key(key)
        # Retrying is safe although unconditional: a repeat delete only meets NotFound.
        with self._unavailable_on_failure("delete", key), suppress(api_exceptions.NotFound):
            self._handle(key).blob(key).delete(**self._limits("delete", key))

    def delete_if_holds(self, key: str, data: bytes) -> bool:
        """Remove ``key`` only if it holds exactly ``data``: a delete of the generation we read.

        A writer that replaced the object between our look and our delete changed its
        generation, so the delete meets 412 and removes nothing.
        """
        check_key(key)
        with self._unavailable_on_failure("delete", key):
            blob = self._handle(key).get_blob(key, **self._limits("delete", key))
            if blob is None or not _same_content(blob, data):
                return False
            try:
                # Retrying is safe: the condition holds for our generation only.
                blob.delete(if_generation_match=blob.generation, **self._limits("delete", key))
            except (api_exceptions.NotFound, api_exceptions.PreconditionFailed):
                return False
        return True

    def list(self, prefix: str, *, start_after: str = "", limit: int = 100) -> list[str]:
        """Up to ``limit`` keys under ``prefix`` that sort after ``start_after``, ascending.

        A prefix inside ``img/`` lists the public bucket, one outside it the private one; a
        prefix ``img/`` starts with (``""``, ``"i"``, ...) merges both listings.
        """
        check_prefix(prefix)
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        if limit == 0:
            return []
        if prefix.startswith(PUBLIC_PREFIX):
            return self._list(self.public_bucket_name, prefix, start_after, limit)
        if not PUBLIC_PREFIX.startswith(prefix):
            return self._list(self.bucket_name, prefix, start_after, limit)
        # Each bucket answers only for its own keys, as every other call routes them: an img/
        # key left in the private bucket (from before the split) is skipped, page by page.
        private: builtins.list[str] = []
        start = start_after
        while len(private) < limit:
            page = self._list(self.bucket_name, prefix, start, limit)
            private += [k for k in page if not k.startswith(PUBLIC_PREFIX)]
            if len(page) < limit:
                break
            start = page[-1]
        public = self._list(self.public_bucket_name, PUBLIC_PREFIX, start_after, limit)
        return list(heapq.merge(private, public))[:limit]

    def _list(self, bucket: str, prefix: str, start_after: str, limit: int) -> builtins.list[str]:
        with self._unavailable_on_failure("list", prefix, bucket):
            # startOffset is inclusive: ask for one more in case start_after itself comes back.
            blobs = self._client.get().list_blobs(
                bucket,
                prefix=prefix or None,
                start_offset=start_after or None,
                max_results=limit + 1,
                fields="items(name),nextPageToken",
                **self._limits("list", prefix),
            )
            names = [str(blob.name) for blob in blobs]
        return [name for name in names if name > start_after][:limit]

    def public_url(self, key: str) -> str:
        """PUBLIC_BASE_URL/<key> (a CDN) if set, else the object's URL in the public bucket.

        Only ``img/...`` keys have one: every other key is in the private bucket, which nobody
        outside the service may read, so asking for its public URL is a programming error.
        """
        path = quote(check_key(key))
        if not key.startswith(PUBLIC_PREFIX):
            raise ValueError(f"storage key {key!r} is private: it has no public URL")
        if self._public_base_url:
            return f"{self._public_base_url}/{path}"
        return f"https://storage.googleapis.com/{self.public_bucket_name}/{path}"

    def read_for_serving(self, key: str) -> tuple[bytes, str]:
        """Always ObjectNotFound: the bucket (or the CDN) serves its objects at ``public_url``.

        Proxying them through the app would spend a request thread and the bucket's egress on
        what a browser can fetch directly, so the media route has nothing to serve on GCS.
        """
        check_key(key)
        raise ObjectNotFound(
            "No such object.", detail=f"{key!r}: GCS objects are served at their public URLs"
        )

    def check(self) -> None:
        """Raise StorageUnavailable unless both buckets answer a one-object listing."""
        # A listing needs only storage.objects.list, which the service account has anyway;
        # buckets.get would need a wider role. No retries: a probe must answer within timeout.
        for bucket in (self.bucket_name, self.public_bucket_name):
            with self._unavailable_on_failure("check", "", bucket):
                try:
                    blobs = self._client.get().list_blobs(
                        bucket,
                        max_results=1,
                        fields="items(name)",
                        timeout=self._timeout,
                        retry=None,
                    )
                    for _ in blobs:
                        pass
                except api_exceptions.NotFound:
                    raise StorageUnavailable(detail=f"bucket {bucket!r} does not exist") from None

    # -- direct uploads --------------------------------------------------------------------------
    def signed_put_url(
        self,
        key: str,
        *,
        content_type: str,
        max_bytes: int,
        expires_in: int,
        service_account_email: str = "",
    ) -> tuple[str, dict[str, str]]:
        """A V4 signed URL to PUT ``key`` once, and the headers the PUT must carry exactly.

        Direct uploads are ``tmp/...`` keys, so the URL points into the private bucket: the
        original (with its EXIF and GPS) is never publicly readable.

        The signature binds the content type, a byte range (``x-goog-content-length-range``,
        which GCS enforces as the body arrives) and ``x-goog-if-generation-match: 0``, so the
        URL can only create the object, never replace it. Signing needs a private key: a
        service-account key file from ADC signs here; any other credentials (Cloud Run's
        metadata server, a gcloud user login) sign through the IAM Credentials API's signBlob
        as ``service_account_email`` (default: the credentials' own service account), which
        needs roles/iam.serviceAccountTokenCreator on that account.
        """
        check_key(key)
        signed_headers = {
            "x-goog-content-length-range": f"0,{max_bytes}",
            "x-goog-if-generation-match": "0",
        }
        with self._unavailable_on_failure("sign", key):
            # api_access_endpoint defaults to the client's: the emulator's when one is set.
            url = (
                self._handle(key)
                .blob(key)
                .generate_signed_url(
                    version="v4",
                    method="PUT",
                    expiration=timedelta(seconds=expires_in),
                    content_type=content_type,
                    headers=dict(signed_headers),  # it adds Host to the dict it gets
                    **self._signing_arguments(service_account_email),
                )
            )
        return str(url), {"Content-Type": content_type, **signed_headers}

    def _signing_arguments(self, service_account_email: str) -> dict[str, Any]:
        """How generate_signed_url signs: with a local key, or through IAM signBlob."""
        with self._signing_lock:
            credentials = self._signing_credentials
            if credentials is None:
                credentials, _ = google.auth.default(
                    scopes=["https://www.googleapis.com/auth/cloud-platform"]
                )
                self._signing_credentials = credentials
            if isinstance(credentials, Signing) and service_account_email in (
                "",
                credentials.signer_email,
            ):
                return {"credentials": credentials}
            # Metadata-server credentials learn their account's email on their first refresh.
            if not credentials.valid:
                credentials.refresh(google.auth.transport.requests.Request())
            email = service_account_email or getattr(credentials, "service_account_email", "")
            if not email or email == "default":
                raise StorageUnavailable(
                    detail="cannot sign upload URLs: these credentials name no service account; "
                    "set SIGNING_SERVICE_ACCOUNT"
                )
            return {"service_account_email": email, "access_token": credentials.token}

    # -- internals -----------------------------------------------------------------------------
    def _create(self, key: str, data: bytes, content_type: str, cache_control: str | None) -> bool:
        """Upload ``key`` if absent: True when created, False on 412 (it already exists)."""
        blob = self._handle(key).blob(key)
        blob.cache_control = cache_control
        try:
            # Objects up to 8 MiB go in one multipart request; larger ones resumable, where real
            # GCS honours ifGenerationMatch too (fake-gcs-server does not).
            blob.upload_from_string(
                data,
                content_type=content_type,
                if_generation_match=0,
                # Retrying a create-only upload cannot overwrite anything, so it is always safe.
                **self._limits("put", key),
            )
        except api_exceptions.PreconditionFailed:
            return False
        return True

    def _limits(self, action: str, key: str) -> dict[str, Any]:
        """One call's ``timeout`` and ``retry``: ours, cut to the current deadline's time left.

        Past the deadline the call is not made (StorageUnavailable); a deadline without
        retries (a clean-up's) gets one attempt.
        """
        deadline, left = current_deadline(), time_left(f"gcs {action}", key)
        if deadline is None or left is None:
            return {"timeout": self._timeout, "retry": self._retry}
        retry = DEFAULT_RETRY.with_timeout(min(self._deadline, left)) if deadline.retries else None
        return {"timeout": min(self._timeout, left), "retry": retry}

    def _handle(self, key: str) -> Any:
        """The bucket ``key`` lives in (a storage.Bucket), on this process's client."""
        return self._client.get().bucket(self.bucket_for(key))

    @contextmanager
    def _unavailable_on_failure(
        self, action: str, key: str, bucket: str | None = None
    ) -> Iterator[None]:
        try:
            yield
        except UNAVAILABLE_ERRORS as exc:
            where = bucket or self.bucket_for(key)
            raise StorageUnavailable(
                detail=f"gcs {action} {key!r} in {where!r} failed: {exc!r}"
            ) from exc


#: HTTP connections one client keeps per host. requests' default (10) is below what a gallery
#: page reads at once (the catalog's 24 parallel record reads) plus an upload's parallel writes
#: (8): the rest were opened and dropped again ("Connection pool is full" in the logs).
CONNECTION_POOL_SIZE = 32


def with_pool(client: Client, size: int = CONNECTION_POOL_SIZE) -> Client:
    """``client`` with an HTTP connection pool of ``size`` per host (for https and http)."""
    from requests.adapters import HTTPAdapter

    adapter = HTTPAdapter(pool_connections=size, pool_maxsize=size)
    session = client._http  # the AuthorizedSession every request of this client goes through
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return client


def default_client() -> Client:
    """A client for the emulator STORAGE_EMULATOR_HOST names, else for GCS with ADC."""
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        project = os.environ.get("GOOGLE_CLOUD_PROJECT") or "local"
        return Client(project=project, credentials=anonymous_credentials())
    return Client()


def _same_content(blob: Any, data: bytes) -> bool:
    """Whether the stored object holds exactly ``data``, judged by size and hashes."""
    if blob.size != len(data):
        return False
    if blob.md5_hash:
        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        return bool(blob.md5_hash == base64.b64encode(md5).decode())
    if blob.crc32c:  # composite objects have no MD5
        crc = google_crc32c.value(data).to_bytes(4, "big")
        return bool(blob.crc32c == base64.b64encode(crc).decode())
    return False
