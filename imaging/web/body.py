"""The request body as the app reads it: a server that cannot read it has a bad request.

A chunked body with a bad chunk size, a chunk without its line end, or a body that stops
before its end makes the server's input stream raise its own exception (gunicorn's
``InvalidChunkSize``, ``ChunkMissingTerminator``, ``NoMoreData``; Werkzeug's dev server an
``OSError``), from inside the form or JSON parser, where it reached the app as an unexpected
error: a 500, a trace in the log. ``GuardedInput`` turns any failure of the server's stream into
``BadBody`` (400, ``bad_body``), whatever the server and whichever route reads the body.
The exception's type goes to the log as the detail; nothing the client sent is repeated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from werkzeug.exceptions import HTTPException

from imaging.errors import BadBody, ImagingError

__all__ = ["GuardedInput", "guard_input"]

_MESSAGE = "The request body could not be read: its framing is broken or it ended early."

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class GuardedInput:
    """``wsgi.input`` whose read failures are ``BadBody``; everything else is the stream's."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _guarded(self, read: Callable[..., Any], *args: Any) -> Any:
        try:
            return read(*args)
        except (ImagingError, HTTPException):
            raise  # already a client's answer (a stream of ours, or Werkzeug's limit)
        except Exception as exc:  # the server's own error for the client's body
            raise BadBody(_MESSAGE, detail=f"{type(exc).__name__} reading the body") from exc

    def read(self, *args: Any) -> bytes:
        data: bytes = self._guarded(self._stream.read, *args)
        return data

    def readinto(self, buffer: Any) -> int:
        readinto = getattr(self._stream, "readinto", None)
        if readinto is not None:
            size: int = self._guarded(readinto, buffer)
            return size
        data = self.read(len(buffer))  # WSGI promises only read()
        buffer[: len(data)] = data
        return len(data)

    def readline(self, *args: Any) -> bytes:
        line: bytes = self._guarded(self._stream.readline, *args)
        return line

    def readlines(self, *args: Any) -> list[bytes]:
        lines: list[bytes] = self._guarded(self._stream.readlines, *args)
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_input(app: WSGIApp) -> WSGIApp:
    """``app`` with its ``wsgi.input`` guarded (``GuardedInput``)."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        stream = environ.get("wsgi.input")
        if stream is not None:
            environ["wsgi.input"] = GuardedInput(stream)
        return app(environ, start_response)

    return guarded
