"""The transport ``IdTokenVerifier`` checks tokens with: Google's, keeping the certificates.

Its own module so that importing the event door costs nothing: google.auth's requests transport
(requests, urllib3, the crypto) is about 17 MB per process, paid only where the door is on.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from typing import Any

import google.auth.transport.requests

__all__ = ["CachingRequest"]


class CachingRequest(google.auth.transport.Request):
    """A google.auth transport that keeps the certificate document as long as it says.

    ``verify_token`` fetches the certificates on every call; Google's answer carries a
    ``Cache-Control: max-age`` of hours (keys are published well before they sign anything), so
    one fetch per process per max-age is enough, and an event costs no extra round trip.
    """

    DEFAULT_MAX_AGE = 300
    LONGEST_MAX_AGE = 24 * 3600

    def __init__(self) -> None:
        self._inner = google.auth.transport.requests.Request()
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        if method != "GET":
            return self._inner(url, method, body, headers, timeout, **kwargs)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(url)
        if cached is not None and cached[0] > now:
            return cached[1]
        response = self._inner(url, method, body, headers, timeout or 10, **kwargs)
        if response.status == 200:
            with self._lock:
                self._cache[url] = (now + _max_age(response.headers), response)
        return response


def _max_age(headers: Mapping[str, str]) -> float:
    match = re.search(r"max-age=(\d+)", headers.get("Cache-Control", "") or "")
    seconds = int(match.group(1)) if match else CachingRequest.DEFAULT_MAX_AGE
    return float(min(seconds, CachingRequest.LONGEST_MAX_AGE))
