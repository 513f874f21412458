"""What the outside sends, read without a 500: JSON bodies, and secrets compared in constant time.

Every request body parsed as JSON (Flask's ``request.get_json`` through the app's JSON provider,
and the machine doors' event bodies) goes through ``read_json``, and every comparison of a secret
through ``same_secret``, so a hostile input meets one rule wherever it arrives.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from imaging.errors import BadRequest


class UnreadableJSON(BadRequest, ValueError):
    """A 400 that is also the ValueError Flask expects from a JSON provider's ``loads`` (so
    ``get_json(silent=True)`` still answers None for it)."""


def read_json(data: str | bytes | bytearray) -> Any:
    """The JSON value in ``data``; UnreadableJSON (400) for anything that is not one.

    ``json.loads`` raises RecursionError on deeply nested arrays (``[[[[...``), which no
    ``except ValueError`` catches, and ValueError for bad syntax, bad UTF-8 or an integer with
    more digits than Python converts: all of them are the sender's fault, none is ours.
    """
    try:
        return json.loads(data)
    except (RecursionError, ValueError) as exc:
        raise UnreadableJSON(
            "The body is not valid JSON (or is nested too deeply).", detail=type(exc).__name__
        ) from None


def same_secret(sent: str, expected: str) -> bool:
    """Constant time, on UTF-8 bytes: ``hmac.compare_digest`` raises TypeError for a ``str``
    that is not ASCII, and a client can send one in any header or field (surrogatepass: even a
    lone surrogate encodes, so no input raises)."""
    return hmac.compare_digest(
        sent.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def bearer(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None
