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

Errors answer through the app's one error handler (imaging/web/__init__.py), which gives these
paths JSON whatever they Accept and logs the reason.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from imaging.doors.convert import Conversion, is_own_object
from imaging.doors.events import EventDoor, parse_delivery
from imaging.doors.sources import ObjectRef
from imaging.errors import BadRequest, NotFound
from imaging.formats import parse_format_list
from imaging.web import services

log = logging.getLogger(__name__)

bp = Blueprint("events", __name__)


def door() -> EventDoor:
    """The app's event door; 404 while EVENTS_AUDIENCE is unset."""
    found = services().events
    if found is None:
        raise NotFound("Nothing here.")
    return found


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
