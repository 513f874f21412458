"""The request a log line, span or metric belongs to, carried in a ``contextvars`` variable.

Whoever serves a request (the web layer's hooks, a CLI command, a test) enters a
``RequestScope`` at its start and leaves it at its end; the logs, traces and the pipeline read it
from here, so none of them needs to know what kind of server is running them. Outside any scope
every getter answers "nothing", and ``touch_image`` records nowhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imaging.observability.tracing import TraceContext

__all__ = [
    "RequestScope",
    "caller_trace",
    "current",
    "enter",
    "image_ids",
    "leave",
    "request_id",
    "request_scope",
    "touch_image",
]


@dataclass
class RequestScope:
    """One request: its id, the caller's trace (from its headers) and the images it touched."""

    request_id: str
    trace: TraceContext | None = None
    image_ids: list[str] = field(default_factory=list)


_scope: ContextVar[RequestScope | None] = ContextVar("imaging_request_scope", default=None)


def enter(scope: RequestScope) -> Token[RequestScope | None]:
    """Make ``scope`` the current request; hand the token back to ``leave`` when it ends."""
    return _scope.set(scope)


def leave(token: Token[RequestScope | None]) -> None:
    _scope.reset(token)


@contextmanager
def request_scope(request_id: str, trace: TraceContext | None = None) -> Iterator[RequestScope]:
    """``with request_scope("job-7"):`` for work that is not an HTTP request (a command, a test)."""
    scope = RequestScope(request_id, trace)
    token = enter(scope)
    try:
        yield scope
    finally:
        leave(token)


def current() -> RequestScope | None:
    return _scope.get()


def request_id() -> str | None:
    scope = _scope.get()
    return scope.request_id if scope is not None else None


def caller_trace() -> TraceContext | None:
    scope = _scope.get()
    return scope.trace if scope is not None else None


def touch_image(image_id: str) -> None:
    """Name ``image_id`` in the current request's log line (no-op outside a request)."""
    scope = _scope.get()
    if scope is not None:
        scope.image_ids.append(image_id)


def image_ids() -> list[str]:
    scope = _scope.get()
    return list(scope.image_ids) if scope is not None else []
