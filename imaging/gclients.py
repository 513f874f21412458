"""How the app holds Google's client libraries: one client per process, no secrets in clear.

- ``PerProcess``: a value built on first use, once per process. gunicorn imports the app and then
  forks its workers; a client made before the fork would share its sockets with the parent, so
  each process builds its own, lazily, under a lock (request threads may race for the first one).
- ``stand_in_credentials``: a plain-http endpoint is a local stand-in (tests, emulators), because
  Google's own endpoints are https only; it gets anonymous credentials, so no real credentials are
  ever sent in clear.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: tuple[int, T] | None = None  # (the pid it was built in, the value)
        self._lock = threading.Lock()

    def get(self) -> T:
        pid = os.getpid()
        current = self._value
        if current is None or current[0] != pid:
            with self._lock:
                current = self._value
                if current is None or current[0] != pid:
                    current = (pid, self._build())
                    self._value = current
        return current[1]


def is_stand_in(endpoint: str) -> bool:
    """Whether ``endpoint`` is a local stand-in rather than one of Google's (https) endpoints."""
    return endpoint.startswith("http://")


def anonymous_credentials() -> Any:
    """Credentials that send nothing: for emulators and local stand-ins only."""
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()  # type: ignore[no-untyped-call]


def stand_in_credentials(endpoint: str) -> dict[str, Any]:
    """``{"credentials": anonymous}`` for a plain-http stand-in, else nothing (use ADC)."""
    return {"credentials": anonymous_credentials()} if is_stand_in(endpoint) else {}
