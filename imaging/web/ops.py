"""Operational endpoints: liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from imaging.errors import ImagingError, LabelerUnavailable
from imaging.web import services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is alive and serving."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Storage reachable and labeler loaded: ready for traffic."""
    svc = services()
    checks: dict[str, str] = {}
    try:
        svc.store.check()
        checks["storage"] = "ok"
    except ImagingError as exc:
        checks["storage"] = exc.code
    try:
        svc.labeler.check()
        checks["labeler"] = "ok"
    except LabelerUnavailable:
        checks["labeler"] = "unavailable"
    ready = all(v == "ok" for v in checks.values())
    return {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503
