"""Storage events in: parse a delivery, check who sent it, and the door that answers them.

Three shapes reach ``POST /events/storage`` for one ``object finalized`` event:

- a CloudEvent in binary mode (Eventarc: ``ce-*`` headers, the object resource as the body),
- a CloudEvent in structured mode (``Content-Type: application/cloudevents+json``),
- a plain Pub/Sub push envelope (a bucket notification through a push subscription, which does
  not speak CloudEvents): ``{"message": {"attributes": {"eventType": "OBJECT_FINALIZE", ...},
  "data": <base64 object resource>}, "subscription": ...}``.

``parse_delivery`` turns each into one ``StorageEvent``. ``IdTokenVerifier`` checks the Google
OIDC token the push subscription, the Eventarc trigger or Cloud Tasks attaches: signature
(Google's published certificates, cached as their Cache-Control says), expiry, audience,
issuer, and the one service account allowed to call. ``EventDoor`` holds what the event and
task handlers use; the ledger (imaging/doors/ledger.py) makes every delivery idempotent.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from imaging.config import Settings
from imaging.doors.convert import ObjectConverter, WorkerPool
from imaging.doors.sources import ObjectRef
from imaging.doors.tasks import TaskQueue
from imaging.errors import BadRequest, Forbidden, Unauthorized, Unavailable
from imaging.untrusted import read_json

log = logging.getLogger(__name__)

#: The only event that means "a new object (or a new generation of one) is complete".
FINALIZED_CLOUDEVENT = "google.cloud.storage.object.v1.finalized"
FINALIZED_NOTIFICATION = "OBJECT_FINALIZE"
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
_GENERATION = re.compile(r"^[0-9]{1,20}$")


# -- parsing ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StorageEvent:
    """One storage notification, whatever shape it came in."""

    ref: ObjectRef
    kind: str  # the event type as delivered (CloudEvent type or notification eventType)
    delivery_id: str  # CloudEvent id or Pub/Sub messageId, for the logs
    metadata: dict[str, str] = field(default_factory=dict)  # the object's custom metadata

    @property
    def finalized(self) -> bool:
        return self.kind in (FINALIZED_CLOUDEVENT, FINALIZED_NOTIFICATION)


def parse_delivery(headers: Mapping[str, str], body: bytes) -> StorageEvent:
    """The storage event in an Eventarc or Pub/Sub push request; BadRequest if there is none."""
    lowered = {k.lower(): v for k, v in headers.items()}
    content_type = lowered.get("content-type", "")
    if any(k.startswith("ce-") for k in lowered) or content_type.startswith(
        "application/cloudevents"
    ):
        return _from_cloudevent(lowered, body)
    try:
        envelope = read_json(body)
    except BadRequest:
        raise BadRequest("The body is neither a CloudEvent nor a Pub/Sub push message.") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("message"), dict):
        raise BadRequest("The body is neither a CloudEvent nor a Pub/Sub push message.")
    return _from_pubsub(envelope["message"])


def _from_cloudevent(headers: dict[str, str], body: bytes) -> StorageEvent:
    # Imported here: only a deployment that receives events needs the cloudevents package.
    from cloudevents.core.bindings.http import HTTPMessage, from_http_event
    from cloudevents.core.exceptions import BaseCloudEventException

    try:
        event = from_http_event(HTTPMessage(headers=headers, body=body))
    except (BaseCloudEventException, ValueError, TypeError, KeyError, RecursionError) as exc:
        # RecursionError: a structured CloudEvent is JSON the library parses itself.
        raise BadRequest("The CloudEvent could not be read.", detail=repr(exc)) from None
    data = event.get_data()
    if isinstance(data, bytes | str):
        try:
            data = read_json(data)
        except BadRequest:
            data = None
    if not isinstance(data, dict):
        raise BadRequest("The CloudEvent carries no storage object.")
    return StorageEvent(
        ref=_object_ref(data.get("bucket"), data.get("name"), data.get("generation")),
        kind=event.get_type(),
        delivery_id=event.get_id(),
        metadata=_metadata(data),
    )


def _from_pubsub(message: dict[str, Any]) -> StorageEvent:
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise BadRequest("The Pub/Sub message has malformed attributes.")
    resource: dict[str, Any] = {}
    if message.get("data"):
        # payloadFormat JSON_API_V1: the object resource, metadata included. NONE: no data.
        try:
            decoded = read_json(base64.b64decode(message["data"], validate=True))
        except (BadRequest, ValueError, binascii.Error, TypeError):
            raise BadRequest("The Pub/Sub message data is not base64 JSON.") from None
        if isinstance(decoded, dict):
            resource = decoded
    return StorageEvent(
        ref=_object_ref(
            attributes.get("bucketId"),
            attributes.get("objectId"),
            attributes.get("objectGeneration"),
        ),
        kind=str(attributes.get("eventType", "")),
        delivery_id=str(message.get("messageId") or message.get("message_id") or ""),
        metadata=_metadata(resource),
    )


def _object_ref(bucket: object, name: object, generation: object) -> ObjectRef:
    if not isinstance(bucket, str) or not bucket or not isinstance(name, str) or not name:
        raise BadRequest("The event does not name a bucket and an object.")
    if not _GENERATION.match(str(generation)):
        raise BadRequest("The event does not carry the object's generation.")
    return ObjectRef(bucket=bucket, name=name, generation=str(generation))


def _metadata(resource: Mapping[str, Any]) -> dict[str, str]:
    raw = resource.get("metadata")
    if not isinstance(raw, dict):
        return {}
    return {str(k): str(v) for k, v in raw.items()}


# -- who sent it -----------------------------------------------------------------------------
class IdTokenVerifier:
    """Verifies Google-signed OIDC ID tokens for one audience and one service account.

    The audience alone is not enough: anyone with a Google account can mint an ID token for any
    audience, so the ``email`` claim must be the push or tasks service account, and verified.
    """

    def __init__(self, *, audience: str, certs_url: str = GOOGLE_CERTS_URL) -> None:
        self.audience = audience
        self.certs_url = certs_url
        # Google's auth transport (requests, urllib3, the crypto) costs about 17 MB per process:
        # only a deployment with the event door (EVENTS_AUDIENCE) builds a verifier and pays it.
        from imaging.doors.oidc import CachingRequest

        self._request = CachingRequest()

    def verify(
        self, authorization: str | None, *, allowed: tuple[str, ...], path: str = ""
    ) -> None:
        """Check the caller named by ``Authorization: Bearer <id token>``; 401/403 if not allowed.

        The audience may be the service URL or the full URL of the endpoint called (``path``),
        which is what Pub/Sub, Eventarc and Cloud Tasks put there when none is configured.
        A token we cannot check because Google's certificates are unreachable is 503, so the
        sender retries instead of dropping the event.
        """
        audiences = [self.audience]
        if path:
            audiences.append(self.audience.rstrip("/") + path)
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Send a Google OIDC token: 'Authorization: Bearer ...'.")
        from google.auth.exceptions import GoogleAuthError, TransportError
        from google.oauth2 import id_token

        try:
            claims = id_token.verify_token(
                token.strip(),
                self._request,
                audience=audiences,
                certs_url=self.certs_url,
                clock_skew_in_seconds=10,
            )
        except TransportError as exc:
            raise Unavailable(
                "Token certificates are unavailable. Please retry shortly.", detail=repr(exc)
            ) from exc
        except (ValueError, GoogleAuthError) as exc:
            # Bad signature, unknown key, expired, wrong audience, malformed: all the same to
            # the caller; the detail goes to the log only.
            raise Unauthorized("The token is not valid.", detail=repr(exc)) from None
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise Unauthorized("The token is not valid.", detail=f"issuer {claims.get('iss')!r}")
        email = str(claims.get("email", ""))
        if claims.get("email_verified") is not True or email not in allowed:
            raise Forbidden(
                "This caller may not deliver events.", detail=f"token for {email or 'no email'!r}"
            )


# -- the door --------------------------------------------------------------------------------
@dataclass(frozen=True)
class EventDoor:
    """What the event and task handlers use, built once per app (no network until first use)."""

    settings: Settings
    verifier: IdTokenVerifier
    converter: ObjectConverter
    pool: WorkerPool
    queue: TaskQueue | None

    @property
    def buckets(self) -> tuple[str, ...]:
        return self.settings.event_buckets

    def check_bucket(self, ref: ObjectRef) -> None:
        if ref.bucket not in self.buckets:
            raise Forbidden(
                "Events from that bucket are not accepted.",
                detail=f"{ref} is not in UPLOADS_BUCKET",
            )
