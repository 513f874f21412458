"""OpenTelemetry spans around the pipeline's steps, the exporter TRACE_EXPORTER names, and the
caller's trace as read from ``X-Cloud-Trace-Context`` or W3C ``traceparent``.

With only ``opentelemetry-api`` installed the spans are free no-ops; ``TRACE_EXPORTER=gcp`` sends
them to Cloud Trace (the SDK and exporter are imported only then).
"""

from __future__ import annotations

import importlib
import os
import re
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace

from imaging.observability import context
from imaging.observability.metrics import LABELER_SECONDS

if TYPE_CHECKING:
    from imaging.config import Settings
    from imaging.labeling import Labeler, LabelResult
    from imaging.labeling.caption import Captioner
    from imaging.processing import LabelImage

__all__ = [
    "TraceContext",
    "configure_tracing",
    "current_trace",
    "parse_trace_headers",
    "timed_caption",
    "timed_label",
    "traced",
    "tracer",
]

P = ParamSpec("P")
R = TypeVar("R")

_TRACER_NAME = "cloud_image_app"
_tracing_configured = False


def tracer() -> trace.Tracer:
    """The app's tracer, looked up on each use: it follows whatever provider is installed (none
    = no-op spans)."""
    return trace.get_tracer(_TRACER_NAME)


def traced(name: str, fn: Callable[P, R], **attributes: str | int) -> Callable[P, R]:
    """``fn`` wrapped in a span called ``name``: ``traced("decode", processing.decode)(...)``."""

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with tracer().start_as_current_span(name, attributes=attributes):
            return fn(*args, **kwargs)

    return run


def timed_label(labeler: Labeler) -> Callable[[LabelImage], LabelResult]:
    """``labeler.label`` for a worker thread: timed, in a ``label`` span of the caller's trace."""
    return _timed_call("label", labeler.name, labeler.label)


def timed_caption(captioner: Captioner) -> Callable[[LabelImage], str]:
    """``captioner.caption`` for a worker thread: timed (as labeler ``caption-<name>``), in a
    ``caption`` span of the caller's trace."""
    return _timed_call("caption", f"caption-{captioner.name}", captioner.caption)


def _timed_call(span: str, name: str, call: Callable[[LabelImage], R]) -> Callable[[LabelImage], R]:
    # Thread pools do not carry the OpenTelemetry context over: take it now, attach it there.
    parent = otel_context.get_current()

    def run(image: LabelImage) -> R:
        token = otel_context.attach(parent)
        started = time.perf_counter()
        outcome = "error"
        try:
            with tracer().start_as_current_span(span, attributes={"labeler": name}):
                result = call(image)
            outcome = "ok"
            return result
        finally:
            LABELER_SECONDS.labels(name, outcome).observe(time.perf_counter() - started)
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


def current_trace() -> TraceContext | None:
    """The trace and span a log line belongs to: the current span's, else the caller's."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        return TraceContext(
            f"{span_context.trace_id:032x}",
            f"{span_context.span_id:016x}",
            sampled=span_context.trace_flags.sampled,
        )
    return context.caller_trace()
