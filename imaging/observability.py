"""Operations signals: JSON logs with Cloud Trace ids, Prometheus metrics and OpenTelemetry spans.

``init_app(app, settings)`` wires all three into an app:

* Logs: one line per record on stdout. Text for people locally; on Cloud Run (or with
  ``LOG_FORMAT=json``) one JSON object per line in Cloud Logging's structured format, so each
  line carries its severity and the request's trace (``X-Cloud-Trace-Context`` or W3C
  ``traceparent``) and Cloud Logging nests it under the request. Every request also writes one
  line with Cloud Logging's ``httpRequest`` fields, its request id and the image it touched.
* Metrics: ``GET /metrics`` in Prometheus text format. Under gunicorn the workers share their
  numbers through ``PROMETHEUS_MULTIPROC_DIR`` (gunicorn.conf.py sets it up).
* Traces: spans around decode, encode, store and label. With only ``opentelemetry-api``
  installed they are free no-ops; ``TRACE_EXPORTER=gcp`` sends them to Cloud Trace (the SDK and
  exporter are imported only then).

The pipeline calls the small instrumentation functions below (``traced``, ``converting``,
``timed_label``, ``count_upload``, ``record_upload``); they know nothing of Flask, so the
pipeline stays usable outside a request.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import unquote_plus

from flask import Flask, Response, g, has_request_context, request
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from imaging.config import Settings
from imaging.errors import Forbidden, Unauthorized
from imaging.untrusted import bearer, same_secret

if TYPE_CHECKING:
    from imaging.catalog import ImageRecord
    from imaging.labeling import Labeler, LabelResult

__all__ = [
    "CloudLoggingFormatter",
    "TextFormatter",
    "TraceContext",
    "configure_logging",
    "configure_tracing",
    "converting",
    "count_error",
    "count_upload",
    "init_app",
    "metrics",
    "parse_trace_headers",
    "record_upload",
    "redact_query",
    "timed_label",
    "traced",
    "uses_json_logs",
]

P = ParamSpec("P")
R = TypeVar("R")

request_log = logging.getLogger("imaging.request")

#: Requests that are polled all day long: logged only when they fail.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

# -- metrics ---------------------------------------------------------------------------------------
# Defined once per process at import. Under gunicorn the module is first imported in each worker,
# after gunicorn.conf.py has set PROMETHEUS_MULTIPROC_DIR, so the values go to shared files.

_BYTES = (16e3, 64e3, 256e3, 1e6, 4e6, 16e6, 64e6)
_CONVERSION_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
_LABEL_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16)

UPLOADS = Counter(
    "uploads",
    "Uploads through the pipeline by outcome: created, duplicate, or the error code.",
    ["outcome"],
)
SOURCE_BYTES = Histogram(
    "upload_source_bytes",
    "Size of each converted upload's original, by its real (sniffed) format.",
    ["source_format"],
    buckets=_BYTES,
)
VARIANT_BYTES = Histogram(
    "variant_bytes",
    "Size of each stored variant (thumbnail included), by source and output format.",
    ["source_format", "output_format"],
    buckets=_BYTES,
)
CONVERSION_SECONDS = Histogram(
    "conversion_seconds",
    "Decode + encode time of one upload inside its conversion slot, by source format.",
    ["source_format"],
    buckets=_CONVERSION_SECONDS,
)
LABELER_SECONDS = Histogram(
    "labeler_seconds",
    "Duration of one labeler call, by labeler and outcome (ok or error).",
    ["labeler", "outcome"],
    buckets=_LABEL_SECONDS,
)
ERRORS = Counter(
    "errors",
    "Error responses by type: the error code, or 'internal' for an unexpected exception.",
    ["type"],
)
IN_FLIGHT = Gauge(
    "conversions_in_flight",
    "Uploads decoding or encoding right now (summed over live workers).",
    multiprocess_mode="livesum",
)


def count_upload(outcome: str) -> None:
    """One upload ended: ``created``, ``duplicate`` or the ImagingError code that stopped it."""
    UPLOADS.labels(outcome).inc()


def record_upload(record: ImageRecord, *, duplicate: bool) -> None:
    """Count a finished upload, measure what it produced and name its image in the request log."""
    count_upload("duplicate" if duplicate else "created")
    if not duplicate:
        SOURCE_BYTES.labels(record.source_format).observe(record.bytes)
        for variant in (*record.variants, record.thumbnail):
            VARIANT_BYTES.labels(record.source_format, variant.format).observe(variant.bytes)
    if has_request_context():
        g.setdefault("image_ids", []).append(record.id)


def count_error(code: str) -> None:
    """An error response went out (called by the web layer's error handlers)."""
    ERRORS.labels(code).inc()


@contextmanager
def converting(source_format: str) -> Iterator[None]:
    """Around the CPU-bound part of an upload: the in-flight gauge and the conversion histogram."""
    started = time.perf_counter()
    IN_FLIGHT.inc()
    try:
        yield
    finally:
        IN_FLIGHT.dec()
        CONVERSION_SECONDS.labels(source_format).observe(time.perf_counter() - started)


def check_scraper(settings: Settings) -> None:
    """With METRICS_TOKEN set, only a scraper sending it as a bearer token reads the metrics."""
    if not settings.metrics_token:
        return
    sent = bearer(request.headers.get("Authorization", ""))
    if sent is None:
        raise Unauthorized("Metrics need a token: send 'Authorization: Bearer ...'.")
    if not same_secret(sent, settings.metrics_token):
        raise Forbidden("That metrics token is not valid.")


def metrics() -> Response:
    """Prometheus text format: every worker's numbers when gunicorn runs several of them."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- traces ----------------------------------------------------------------------------------------

_TRACER_NAME = "cloud_image_app"
_tracing_configured = False


def _tracer() -> trace.Tracer:
    # Looked up on each use: it follows whatever provider is installed (none = no-op spans).
    return trace.get_tracer(_TRACER_NAME)


def traced(name: str, fn: Callable[P, R], **attributes: str | int) -> Callable[P, R]:
    """``fn`` wrapped in a span called ``name``: ``traced("decode", processing.decode)(...)``."""

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with _tracer().start_as_current_span(name, attributes=attributes):
            return fn(*args, **kwargs)

    return run


def timed_label(labeler: Labeler) -> Callable[[bytes], LabelResult]:
    """``labeler.label`` for a worker thread: timed, in a ``label`` span of the caller's trace."""
    # Thread pools do not carry the OpenTelemetry context over: take it now, attach it there.
    parent = otel_context.get_current()

    def run(image: bytes) -> LabelResult:
        token = otel_context.attach(parent)
        started = time.perf_counter()
        outcome = "error"
        try:
            with _tracer().start_as_current_span("label", attributes={"labeler": labeler.name}):
                result = labeler.label(image)
            outcome = "ok"
            return result
        finally:
            LABELER_SECONDS.labels(labeler.name, outcome).observe(time.perf_counter() - started)
            otel_context.detach(token)

    return run


def configure_tracing(settings: Settings) -> None:
    """Install the exporter TRACE_EXPORTER names, once per process; ``none`` installs nothing."""
    global _tracing_configured
    if settings.trace_exporter == "none" or _tracing_configured:
        return
    try:
        # Imported here so that local runs and tests need only opentelemetry-api.
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        exporter: SpanExporter
        if settings.trace_exporter == "gcp":
            # By name, so neither the app nor mypy needs the exporter unless it is chosen.
            cloud_trace = importlib.import_module("opentelemetry.exporter.cloud_trace")
            exporter = cloud_trace.CloudTraceSpanExporter(
                project_id=settings.google_cloud_project or None
            )
        else:
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = ConsoleSpanExporter(out=sys.stderr)
    except ImportError as exc:
        raise RuntimeError(
            f"TRACE_EXPORTER={settings.trace_exporter} needs opentelemetry-sdk"
            + (" and opentelemetry-exporter-gcp-trace" if settings.trace_exporter == "gcp" else "")
            + f" installed ({exc})"
        ) from exc
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("K_SERVICE", "cloud-image-app")}),
        # Follow the caller's decision (Cloud Run samples at its front end); sample our own roots.
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _tracing_configured = True


@dataclass(frozen=True)
class TraceContext:
    """The caller's trace: 32 hex digits of trace id, 16 of span id, and its sampling flag."""

    trace_id: str
    span_id: str
    sampled: bool

    def span_context(self) -> trace.SpanContext:
        return trace.SpanContext(
            trace_id=int(self.trace_id, 16),
            span_id=int(self.span_id, 16),
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED if self.sampled else 0),
        )


_CLOUD_TRACE = re.compile(r"([0-9a-fA-F]{32})(?:/(\d{1,20}))?(?:;o=([01]))?")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def parse_trace_headers(
    cloud_trace_context: str | None, traceparent: str | None
) -> TraceContext | None:
    """The trace of ``X-Cloud-Trace-Context: TRACE/SPAN;o=1`` (what Cloud Run's request log uses),
    else of W3C ``traceparent``; None when neither is there or well formed."""
    cloud = _CLOUD_TRACE.fullmatch((cloud_trace_context or "").strip())
    if cloud and int(cloud.group(1), 16):
        trace_id = cloud.group(1).lower()
        span = int(cloud.group(2) or 0)  # decimal in this header
        # Without a span id the caller's trace still correlates; our spans hang off a stand-in.
        span_id = f"{span:016x}" if 0 < span < 2**64 else f"{secrets.randbits(63) or 1:016x}"
        return TraceContext(trace_id, span_id, sampled=cloud.group(3) == "1")
    parent = _TRACEPARENT.fullmatch((traceparent or "").strip())
    if parent and parent.group(1) != "ff" and int(parent.group(2), 16) and int(parent.group(3), 16):
        return TraceContext(
            parent.group(2), parent.group(3), sampled=bool(int(parent.group(4), 16) & 1)
        )
    return None


def _current_trace() -> TraceContext | None:
    """The trace and span a log line belongs to: the current span's, else the caller's."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        return TraceContext(
            f"{span_context.trace_id:032x}",
            f"{span_context.span_id:016x}",
            sampled=span_context.trace_flags.sampled,
        )
    if has_request_context():
        caller: TraceContext | None = g.get("trace_context")
        return caller
    return None


# -- logs ------------------------------------------------------------------------------------------

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
        context = _current_trace()
        if context is not None:
            entry["logging.googleapis.com/trace"] = (
                f"projects/{self.project}/traces/{context.trace_id}"
                if self.project
                else context.trace_id
            )
            entry["logging.googleapis.com/spanId"] = context.span_id
            entry["logging.googleapis.com/trace_sampled"] = context.sampled
        if has_request_context() and "request_id" in g:
            entry["request_id"] = g.request_id
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
        if has_request_context() and "request_id" in g:
            head, _, rest = line.partition("\n")
            line = f"{head} [{g.request_id}]" + (f"\n{rest}" if rest else "")
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


# -- the request cycle -----------------------------------------------------------------------------

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
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


def _logged_path() -> str:
    query = redact_query(request.query_string.decode("latin-1"))
    return f"{request.path}?{query}" if query else request.path


def _start_request() -> None:
    g.request_started = time.perf_counter()
    incoming = request.headers.get("X-Request-Id", "")
    g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else secrets.token_hex(8)
    caller = parse_trace_headers(
        request.headers.get("X-Cloud-Trace-Context"), request.headers.get("traceparent")
    )
    g.trace_context = caller
    parent = otel_context.Context()
    if caller is not None:
        parent = trace.set_span_in_context(trace.NonRecordingSpan(caller.span_context()))
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    span = _tracer().start_span(
        f"{request.method} {rule}",
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": request.method, "url.path": request.path},
    )
    g.request_span = span
    g.otel_token = otel_context.attach(trace.set_span_in_context(span, parent))


def _log_request(response: Response) -> Response:
    if "request_id" not in g:  # a request that began before init_app (never, but be safe)
        return response
    response.headers.setdefault("X-Request-Id", g.request_id)
    span: trace.Span | None = g.get("request_span")
    if span is not None:
        span.set_attribute("http.response.status_code", response.status_code)
    if request.path in QUIET_PATHS and response.status_code < 400:
        return response
    latency = time.perf_counter() - g.request_started
    http_request: dict[str, Any] = {
        "requestMethod": request.method,
        "requestUrl": request.host_url.rstrip("/") + _logged_path(),
        "status": response.status_code,
        "latency": f"{latency:.3f}s",
        "userAgent": request.user_agent.string,
        "remoteIp": request.remote_addr or "",
        "protocol": request.environ.get("SERVER_PROTOCOL", ""),
    }
    if request.content_length is not None:
        http_request["requestSize"] = str(request.content_length)
    if response.content_length is not None:
        http_request["responseSize"] = str(response.content_length)
    if request.referrer:
        http_request["referer"] = request.referrer
    fields: dict[str, Any] = {"httpRequest": http_request, "latency_seconds": round(latency, 6)}
    image_ids: list[str] = g.get("image_ids") or []
    view_image = (request.view_args or {}).get("image_id")
    if view_image and not image_ids:
        image_ids = [str(view_image)]
    if len(image_ids) == 1:
        fields["image_id"] = image_ids[0]
    elif image_ids:
        fields["image_ids"] = image_ids
    # A 5xx's exception is already logged at ERROR with its stack; this line only accounts for it.
    level = logging.WARNING if response.status_code >= 500 else logging.INFO
    request_log.log(
        level,
        "%s %s %s %.3fs",
        request.method,
        _logged_path(),
        response.status_code,
        latency,
        extra={"fields": fields},
    )
    return response


def _end_request(exc: BaseException | None) -> None:
    span: trace.Span | None = g.pop("request_span", None)
    if span is not None:
        if exc is not None:
            span.record_exception(exc)
        span.end()
    token = g.pop("otel_token", None)
    if token is not None:
        otel_context.detach(token)


def init_app(app: Flask, settings: Settings) -> None:
    """Logs, metrics and traces for ``app``. Tests (``settings.testing``) keep pytest's logging."""
    if not settings.testing:
        configure_logging(settings)
    configure_tracing(settings)
    app.before_request(_start_request)
    app.after_request(_log_request)
    app.teardown_request(_end_request)

    def scrape() -> Response:
        """The Prometheus metrics, for whoever may scrape them."""
        check_scraper(settings)
        return metrics()

    app.add_url_rule("/metrics", "metrics", scrape)
