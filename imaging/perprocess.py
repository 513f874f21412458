"""A value built on first use, once per process: how every Google client is held.

gunicorn imports the app and then forks its workers; a client made before the fork would share
its sockets with the parent, so each process builds its own, lazily, under a lock (request
threads may race for the first one).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

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
