"""Each request's id, trace span and one log line, and ``GET /metrics``: the Flask end of
``imaging.observability``.

``init_app(app, settings)`` wires logs, metrics and traces into an app. Every request gets an id
(the client's ``X-Request-Id`` when it is well formed), a server span in the caller's trace
(``X-Cloud-Trace-Context`` or W3C ``traceparent``) and, at its end, one line with Cloud
Logging's ``httpRequest`` fields, its request id and the image it touched. The id and the
caller's trace are entered as ``observability.context``'s request scope, which is where the log
formatters and the pipeline read them.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from flask import Flask, Response, g, request
from opentelemetry import context as otel_context
from opentelemetry import trace

from imaging import observability
from imaging.config import Settings
from imaging.errors import Forbidden, Unauthorized
from imaging.observability import context
from imaging.untrusted import bearer, same_secret

__all__ = ["QUIET_PATHS", "init_app", "metrics"]

request_log = logging.getLogger("imaging.request")

#: Requests that are polled all day long: logged only when they fail.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def metrics() -> Response:
    """Prometheus text format: every worker's numbers when gunicorn runs several of them."""
    body, content_type = observability.exposition()
    return Response(body, headers={"Content-Type": content_type})


def check_scraper(settings: Settings) -> None:
    """With METRICS_TOKEN set, only a scraper sending it as a bearer token reads the metrics."""
    if not settings.metrics_token:
        return
    sent = bearer(request.headers.get("Authorization", ""))
    if sent is None:
        raise Unauthorized("Metrics need a token: send 'Authorization: Bearer ...'.")
    if not same_secret(sent, settings.metrics_token):
        raise Forbidden("That metrics token is not valid.")


def _logged_path() -> str:
    query = observability.redact_query(request.query_string.decode("latin-1"))
    return f"{request.path}?{query}" if query else request.path


def _start_request() -> None:
    g.request_started = time.perf_counter()
    incoming = request.headers.get("X-Request-Id", "")
    request_id = incoming if _REQUEST_ID.fullmatch(incoming) else secrets.token_hex(8)
    caller = observability.parse_trace_headers(
        request.headers.get("X-Cloud-Trace-Context"), request.headers.get("traceparent")
    )
    g.request_scope = context.RequestScope(request_id, caller)
    g.request_scope_token = context.enter(g.request_scope)
    parent = otel_context.Context()
    if caller is not None:
        parent = trace.set_span_in_context(trace.NonRecordingSpan(caller.span_context()))
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    span = observability.tracer().start_span(
        f"{request.method} {rule}",
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": request.method, "url.path": request.path},
    )
    g.request_span = span
    g.otel_token = otel_context.attach(trace.set_span_in_context(span, parent))


def _log_request(response: Response) -> Response:
    scope: context.RequestScope | None = g.get("request_scope")
    if scope is None:  # a request that began before init_app (never, but be safe)
        return response
    response.headers.setdefault("X-Request-Id", scope.request_id)
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
    image_ids = list(scope.image_ids)
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
    scope_token = g.pop("request_scope_token", None)
    if scope_token is not None:
        context.leave(scope_token)


def init_app(app: Flask, settings: Settings) -> None:
    """Logs, metrics and traces for ``app``. Tests (``settings.testing``) keep pytest's logging."""
    if not settings.testing:
        observability.configure_logging(settings)
    observability.configure_tracing(settings)
    app.before_request(_start_request)
    app.after_request(_log_request)
    app.teardown_request(_end_request)

    def scrape() -> Response:
        """The Prometheus metrics, for whoever may scrape them."""
        check_scraper(settings)
        return metrics()

    app.add_url_rule("/metrics", "metrics", scrape)
