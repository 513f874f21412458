"""Operations signals: logs tied to the caller's trace, Prometheus metrics, OpenTelemetry spans.

* ``logs``: one line per record on stdout, text locally, Cloud Logging JSON on Cloud Run.
* ``metrics``: the Prometheus counters and histograms, and their text exposition.
* ``tracing``: spans around decode, encode, store and label; the caller's trace headers.
* ``context``: the current request (id, caller's trace, images touched) as a context variable.

This package knows nothing of Flask: the web layer (``imaging.web.requestlog``) enters a request
scope for each request, writes its request log line and serves ``/metrics``. So the pipeline,
which calls the small instrumentation functions here (``traced``, ``converting``,
``timed_label``, ``count_upload``, ``record_upload``), stays usable outside a request.
"""

from __future__ import annotations

from imaging.observability import context
from imaging.observability.logs import (
    SECRET_PARAMETERS,
    CloudLoggingFormatter,
    TextFormatter,
    configure_logging,
    escape_controls,
    plain_dev_server_lines,
    redact_query,
    uses_json_logs,
)
from imaging.observability.metrics import (
    converting,
    count_error,
    count_upload,
    exposition,
    record_upload,
)
from imaging.observability.tracing import (
    TraceContext,
    configure_tracing,
    current_trace,
    parse_trace_headers,
    timed_caption,
    timed_label,
    traced,
    tracer,
)

__all__ = [
    "SECRET_PARAMETERS",
    "CloudLoggingFormatter",
    "TextFormatter",
    "TraceContext",
    "configure_logging",
    "configure_tracing",
    "context",
    "converting",
    "count_error",
    "count_upload",
    "current_trace",
    "escape_controls",
    "exposition",
    "parse_trace_headers",
    "plain_dev_server_lines",
    "record_upload",
    "redact_query",
    "timed_caption",
    "timed_label",
    "traced",
    "tracer",
    "uses_json_logs",
]
