"""The one wiring place: ``build_services`` makes every object the app and its CLI commands use.

``create_app`` calls it once per app and keeps the result on the app (``install``); blueprints
read it through ``imaging.web.services()``, CLI commands through ``services_of(app)``. Nothing
here runs at import time, and building opens no connection and loads no model that the
backends themselves do not load when built: clients are made on first use, per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from imaging.catalog import Catalog
from imaging.config import Settings
from imaging.doors.convert import ObjectConverter, WorkerPool
from imaging.doors.direct import UploadSessions
from imaging.doors.events import EventDoor, IdTokenVerifier
from imaging.doors.ledger import EventLedger
from imaging.doors.sources import BucketSource
from imaging.doors.tasks import TaskQueue
from imaging.labeling import Labeler, build_labeler
from imaging.labeling.caption import Captioner, build_captioner
from imaging.pipeline import Pipeline
from imaging.refocus import Refocus
from imaging.storage import ObjectStore, build_store

if TYPE_CHECKING:
    from flask import Flask

#: Where an app keeps its Services (``app.extensions[EXTENSION]``).
EXTENSION = "imaging"


@dataclass(frozen=True)
class Services:
    """Everything the blueprints and the CLI use, built once per app by ``build_services``."""

    settings: Settings
    store: ObjectStore
    labeler: Labeler
    captioner: Captioner
    catalog: Catalog
    pipeline: Pipeline
    #: Moves a cover-cropped image's focal point after upload (imaging/refocus.py).
    refocus: Refocus
    uploads: UploadSessions
    #: The storage-event and Cloud Tasks door; None when EVENTS_AUDIENCE is unset (both 404).
    events: EventDoor | None
    #: The one converter of originals, shared by the event door and ``flask convert-batch``.
    converter: ObjectConverter


def build_services(
    settings: Settings, *, store: ObjectStore | None = None, labeler: Labeler | None = None
) -> Services:
    """Every service for ``settings``; tests pass their own ``store`` and ``labeler``."""
    store = store if store is not None else build_store(settings)
    labeler = labeler if labeler is not None else build_labeler(settings)
    captioner = build_captioner(settings)
    catalog = Catalog(store)
    pipeline = Pipeline(settings, store, labeler, catalog, captioner)
    converter = ObjectConverter(settings, pipeline, catalog, EventLedger(store), BucketSource())
    return Services(
        settings=settings,
        store=store,
        labeler=labeler,
        captioner=captioner,
        catalog=catalog,
        pipeline=pipeline,
        refocus=Refocus(pipeline),
        uploads=UploadSessions(settings, store, pipeline, catalog),
        events=build_event_door(settings, converter),
        converter=converter,
    )


def build_event_door(settings: Settings, converter: ObjectConverter) -> EventDoor | None:
    """The event door when EVENTS_AUDIENCE is set (with a task queue when TASKS_QUEUE is)."""
    if not settings.events_audience:
        return None
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
    return EventDoor(
        settings=settings,
        verifier=IdTokenVerifier(
            audience=settings.events_audience, certs_url=settings.oidc_certs_url
        ),
        converter=converter,
        pool=WorkerPool(settings.event_workers),
        queue=queue,
    )


def install(app: Flask, services: Services) -> None:
    """Keep ``services`` on ``app``: the one place every reader finds them."""
    app.extensions[EXTENSION] = services


def services_of(app: Flask) -> Services:
    """The Services ``install`` kept on ``app`` (for CLI commands and ``imaging.web``)."""
    found: Services = app.extensions[EXTENSION]
    return found
