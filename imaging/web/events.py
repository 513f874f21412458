"""The doors machines knock on: storage events (Eventarc, Pub/Sub push) and Cloud Tasks.

Both are off unless EVENTS_AUDIENCE is set (404), and both need a Google OIDC token from the one
service account allowed to call. The status codes speak to a sender that retries any non-2xx
(Pub/Sub, Eventarc, Cloud Tasks):

- 2xx: done. 201 a new record; 200 settled before (the same record id), refused for good
  (an object that is not an image, or too large: acknowledged and logged, so a poison message
  does not loop), or ignored (another event type, or the app's own objects); 202 enqueued.
- 503: try again (storage down, every worker busy, another worker converting this object).
- 400/401/403: the delivery itself is wrong (malformed, bad token, a bucket we do not serve);
  the sender retries until its dead-letter policy gives up, which is the signal wanted for a
  misconfiguration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, current_app, request
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue

from imaging.batch import (
    Conversion,
    ObjectConverter,
    TaskQueue,
    WorkerPool,
    is_own_object,
)
from imaging.config import Settings
from imaging.errors import BadRequest, Forbidden, ImagingError, NotFound
from imaging.events import EventLedger, IdTokenVerifier, parse_delivery
from imaging.formats import parse_format_list
from imaging.sources import BucketSource, ObjectRef
from imaging.web import Services

log = logging.getLogger(__name__)

bp = Blueprint("events", __name__)

EXTENSION = "imaging.events"


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
        return tuple(b.strip() for b in self.settings.uploads_bucket.split(",") if b.strip())

    def check_bucket(self, ref: ObjectRef) -> None:
        if ref.bucket not in self.buckets:
            raise Forbidden(
                "Events from that bucket are not accepted.",
                detail=f"{ref} is not in UPLOADS_BUCKET",
            )


@bp.record_once
def build_door(state: BlueprintSetupState) -> None:
    svc: Services = state.app.extensions["imaging"]
    settings = svc.settings
    if not settings.events_audience:
        return  # off: both routes answer 404
    queue = None
    if settings.tasks_queue:
        queue = TaskQueue(
            queue=settings.tasks_queue,
            target_url=settings.tasks_target_url
            or settings.events_audience.rstrip("/") + "/tasks/convert",
            service_account=settings.tasks_service_account,
            audience=settings.events_audience,
            endpoint=settings.tasks_api_endpoint,
        )
    state.app.extensions[EXTENSION] = EventDoor(
        settings=settings,
        verifier=IdTokenVerifier(
            audience=settings.events_audience, certs_url=settings.oidc_certs_url
        ),
        converter=ObjectConverter(
            settings, svc.pipeline, svc.catalog, EventLedger(svc.store), BucketSource()
        ),
        pool=WorkerPool(settings.event_workers),
        queue=queue,
    )


def door() -> EventDoor:
    found: EventDoor | None = current_app.extensions.get(EXTENSION)
    if found is None:
        raise NotFound("Nothing here.")
    return found


@bp.errorhandler(ImagingError)
def machine_error(exc: ImagingError) -> ResponseReturnValue:
    """Machines get JSON whatever they Accept, and the reason goes to the log."""
    level = logging.WARNING if exc.status >= 500 or exc.status in (401, 403) else logging.INFO
    log.log(level, "%s %s: %s: %s", request.method, request.path, exc.code, exc.detail or "")
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
    return {"error": exc.code, "message": exc.public_message}, exc.status, headers


@bp.post("/events/storage")
def storage_event() -> ResponseReturnValue:
    """A bucket's object-finalized event: convert the object into a gallery record, once."""
    d = door()
    d.verifier.verify(
        request.headers.get("Authorization"),
        allowed=(d.settings.events_service_account,),
        path=request.path,
    )
    event = parse_delivery(dict(request.headers), request.get_data())
    if not event.finalized:
        return {"status": "ignored", "reason": f"event type {event.kind!r}"}, 200
    d.check_bucket(event.ref)
    if is_own_object(d.settings, event.ref):
        return {"status": "ignored", "reason": "the app's own object"}, 200
    log.info("storage event %s for %s", event.delivery_id, event.ref)
    if d.queue is not None:
        settled = d.converter.ledger.outcome(event.ref)
        if settled is None:
            task = d.queue.enqueue(event.ref)
            return {"status": "enqueued", "object": str(event.ref), "task": task}, 202
    return answer(d.pool.run(d.converter.convert, event.ref, None))


@bp.post("/tasks/convert")
def convert_task() -> ResponseReturnValue:
    """A Cloud Task made by ``storage_event``: ``{bucket, name, generation, formats}``."""
    d = door()
    if not d.settings.tasks_service_account:
        raise NotFound("Nothing here.")
    d.verifier.verify(
        request.headers.get("Authorization"),
        allowed=(d.settings.tasks_service_account,),
        path=request.path,
    )
    ref, formats = read_task(request.get_json(silent=True))
    d.check_bucket(ref)
    if is_own_object(d.settings, ref):
        return {"status": "ignored", "reason": "the app's own object"}, 200
    # No pool here: the queue's max-concurrent-dispatches already bounds how many arrive.
    return answer(d.converter.convert(ref, formats))


def read_task(body: Any) -> tuple[ObjectRef, tuple[str, ...] | None]:
    if not isinstance(body, dict):
        raise BadRequest("The task body must be a JSON object.")
    bucket, name, generation = body.get("bucket"), body.get("name"), body.get("generation")
    if not (isinstance(bucket, str) and bucket and isinstance(name, str) and name):
        raise BadRequest("The task must name a bucket and an object.")
    if not str(generation).isdigit():
        raise BadRequest("The task must carry the object's generation.")
    raw = body.get("formats")
    if raw is not None and not (isinstance(raw, list) and all(isinstance(f, str) for f in raw)):
        raise BadRequest("formats must be a list of format names.")
    formats = parse_format_list(",".join(raw)) if raw else None
    return ObjectRef(bucket, name, str(generation)), formats


def answer(conversion: Conversion) -> ResponseReturnValue:
    if conversion.status == "refused":
        # 200, not 4xx: the sender would redeliver a refused object forever.
        log.warning(
            "acknowledged a refused object %s: %s %s",
            conversion.ref,
            conversion.code,
            conversion.reason,
        )
    return conversion.to_json(), 201 if conversion.status == "converted" else 200
