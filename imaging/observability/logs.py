"""Log lines on stdout: text for people locally, Cloud Logging's structured JSON on Cloud Run
(or with ``LOG_FORMAT=json``), each tied to the current request's id and trace.

A record is one line, whatever it quotes: text lines escape every line break and control
character in the values they print (a request for ``/a%0aFAKE`` must not print a line of its
own); only our own tracebacks span lines. JSON lines are safe by their encoding.

Also the one rule for keeping credentials out of logged URLs (``redact_query``), which the app's
request log and gunicorn's access log share.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Callable, Generator, Iterable
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from imaging.observability import context
from imaging.observability.tracing import current_trace

if TYPE_CHECKING:
    from types import TracebackType

    from imaging.config import Settings

__all__ = [
    "SECRET_PARAMETERS",
    "CloudLoggingFormatter",
    "TextFormatter",
    "configure_logging",
    "escape_controls",
    "format_exception",
    "plain_dev_server_lines",
    "redact_query",
    "uses_json_logs",
]

_SEVERITY = {"WARNING": "WARNING", "CRITICAL": "CRITICAL", "ERROR": "ERROR", "DEBUG": "DEBUG"}


class CloudLoggingFormatter(logging.Formatter):
    """One JSON object per record, in the shape Cloud Logging reads from a container's stdout.

    ``severity``, ``message`` and ``time`` become the entry's own fields; the trace fields nest
    the line under its request in the Logs Explorer and Cloud Trace. Fields passed as
    ``extra={"fields": {...}}`` are merged in (``httpRequest``, ``image_id``, ...).
    """

    def __init__(self, project: str = "") -> None:
        super().__init__()
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            # The stack in the message is what Error Reporting groups errors by.
            message = f"{message}\n{self.formatException(record.exc_info)}"
        elif record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelname, "INFO"),
            "message": message,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "logger": record.name,
            "logging.googleapis.com/sourceLocation": {
                "file": record.pathname,
                "line": str(record.lineno),
                "function": record.funcName,
            },
        }
        trace = current_trace()
        if trace is not None:
            entry["logging.googleapis.com/trace"] = (
                f"projects/{self.project}/traces/{trace.trace_id}"
                if self.project
                else trace.trace_id
            )
            entry["logging.googleapis.com/spanId"] = trace.span_id
            entry["logging.googleapis.com/trace_sampled"] = trace.sampled
        request_id = context.request_id()
        if request_id is not None:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        return json.dumps(entry, default=str, ensure_ascii=False)


#: C0 and C1 controls, DEL and the Unicode line and paragraph separators: everything a terminal,
#: ``str.splitlines`` or a log shipper might take for the start of a new line (or obey).
_CONTROL_ESCAPES: dict[int, str] = {
    code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))
}
_CONTROL_ESCAPES.update(
    {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"}
)


def escape_controls(text: str) -> str:
    """``text`` on one line: line breaks and control characters written as ``\\n``, ``\\x1b``..."""
    return text.translate(_CONTROL_ESCAPES)


def format_exception(exc: BaseException | None, tb: TracebackType | None) -> str:
    """The traceback as Python prints it, except that each exception's message (which may quote
    request content) is escaped onto one line: only the traceback's own lines break."""
    if exc is None:
        return "NoneType: None"  # what logging prints for exc_info=True outside an except block
    top = traceback.TracebackException(type(exc), exc, tb, compact=True)
    pending = [top]
    seen: set[int] = set()
    while pending:  # the chain (cause, context) and any exception group's members
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        # TracebackException builds the chained nodes itself, so no subclass reaches them.
        node.format_exception_only = _on_one_line(node.format_exception_only)  # type: ignore[method-assign]
        pending.extend(n for n in (node.__cause__, node.__context__) if n is not None)
        pending.extend(node.exceptions or ())
    return "".join(top.format()).rstrip("\n")


def _on_one_line(lines: Callable[[], Iterable[str]]) -> Callable[[], Generator[str, None, None]]:
    def escaped() -> Generator[str, None, None]:
        yield escape_controls("".join(lines()).rstrip("\n")) + "\n"

    return escaped


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, with the request id when there is one; one line per
    record except for our own tracebacks (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, with every value escaped and without record.exc_text: that
        # cache is shared by all handlers, so another formatter may have filled it unescaped.
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = escape_controls(self.formatMessage(record))
        request_id = context.request_id()
        if request_id is not None:
            line += f" [{escape_controls(request_id)}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += " " + escape_controls(record.exc_text)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line

    def formatException(self, ei: Any) -> str:
        return format_exception(ei[1], ei[2])


#: An ANSI "select graphic rendition" sequence: the colour and weight codes Werkzeug's development
#: server puts around its lines.
_ANSI_STYLE = re.compile(r"\x1b\[[0-9;]*m")


#: How the format of Werkzeug's ``log_request`` line ends (request line, status and size follow).
_WERKZEUG_REQUEST_LINE = '] "%s" %s %s'


class _PlainDevServerLines(logging.Filter):
    """Werkzeug's own lines as plain text: its colour codes dropped, its banner one line a record.

    The development server styles its start-up banner and its request lines with ANSI codes, and
    logs the banner as one record of several lines; the text formatter escapes both (a record is
    one line), which printed ``\\x1b[31m\\x1b[1mWARNING: ...\\x1b[0m\\n * Running on ...``. Only
    the styling goes: Werkzeug escapes control characters in the request line itself, and a
    value still holding a line break stays escaped. The banner, a record with no arguments, is
    Werkzeug's own text, so its lines are logged one by one. Its line for each request goes: the
    app's ``imaging.request`` line says the same with the trace id and the time taken, and a
    request Werkzeug refuses before the app sees it still gets Werkzeug's error line.
    """

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.endswith(_WERKZEUG_REQUEST_LINE):
            return False
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                _ANSI_STYLE.sub("", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = _ANSI_STYLE.sub("", record.msg)
            if not record.args and "\n" in record.msg:
                *earlier, last = (line.strip() for line in record.msg.split("\n"))
                for line in earlier:
                    self.logger.handle(logging.makeLogRecord({**vars(record), "msg": line}))
                record.msg = last
        return True


def plain_dev_server_lines() -> None:
    """Log the development server's (Werkzeug's) lines without their terminal styling."""
    logger = logging.getLogger("werkzeug")
    if not any(isinstance(f, _PlainDevServerLines) for f in logger.filters):
        logger.addFilter(_PlainDevServerLines(logger))


class _OwnHandler(logging.StreamHandler[IO[str]]):
    """Marks the handler this module installed, so a second app in one process replaces it."""


def uses_json_logs(settings: Settings) -> bool:
    return settings.on_cloud_run or settings.log_format == "json"


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record to ``stream`` (stdout) as JSON or text; returns the handler."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _OwnHandler):
            root.removeHandler(handler)
    handler = _OwnHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(
        CloudLoggingFormatter(settings.google_cloud_project)
        if uses_json_logs(settings)
        else TextFormatter()
    )
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # pyvips hands every libvips message to logging, and libvips says at INFO what each
    # operation chose ("reducev: using vector path"): 7 lines a resize, on every upload. They
    # are shown at DEBUG; warnings and errors always.
    debug = logging.getLevelName(settings.log_level) == logging.DEBUG
    logging.getLogger("pyvips").setLevel(logging.DEBUG if debug else logging.WARNING)
    return handler


#: Query parameters that carry credentials (a delete key, a single-use upload token, a URL
#: signature): their values never reach a log line.
SECRET_PARAMETERS = frozenset({"key", "token", "signature", "sig", "x-goog-signature"})


def redact_query(query: str) -> str:
    """``query`` with the values of credential-carrying parameters replaced by ``REDACTED``."""
    if not query:
        return query
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        secret = eq and unquote_plus(name).lower() in SECRET_PARAMETERS
        parts.append(f"{name}=REDACTED" if secret else part)
    return "&".join(parts)
