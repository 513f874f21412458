"""Log lines on stdout: text for people locally, Cloud Logging's structured JSON on Cloud Run
(or with ``LOG_FORMAT=json``), each tied to the current request's id and trace.

Also the one rule for keeping credentials out of logged URLs (``redact_query``), which the app's
request log and gunicorn's access log share.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from imaging.observability import context
from imaging.observability.tracing import current_trace

if TYPE_CHECKING:
    from imaging.config import Settings

__all__ = [
    "SECRET_PARAMETERS",
    "CloudLoggingFormatter",
    "TextFormatter",
    "configure_logging",
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


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, with the request id when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = context.request_id()
        if request_id is not None:
            head, _, rest = line.partition("\n")
            line = f"{head} [{request_id}]" + (f"\n{rest}" if rest else "")
        return line


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
