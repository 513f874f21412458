"""Operations signals: Cloud Logging JSON lines tied to the caller's trace, Prometheus metrics,
OpenTelemetry spans around the pipeline's steps, and the health probes."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import TestResponse

from imaging import observability
from imaging.catalog import Catalog
from imaging.config import Settings
from imaging.labeling import NullLabeler
from imaging.observability import TraceContext, context, parse_trace_headers
from imaging.pipeline import Pipeline, UploadOptions
from imaging.storage import build_store
from imaging.storage.local import LocalStore
from tests import images
from tests.conftest import AppFactory
from tests.uploads import post_image

TRACE_ID = "105445aa7843bc8bf206b12000100000"
CLOUD_TRACE_HEADER = {"X-Cloud-Trace-Context": f"{TRACE_ID}/1;o=1"}


def upload(
    client: FlaskClient, data: bytes, headers: dict[str, str] | None = None, **fields: str
) -> TestResponse:
    return post_image(client, data, headers=headers, **fields)


def metric(client: FlaskClient, sample: str, **labels: str) -> float:
    """One sample's value from GET /metrics (0 when it has not been recorded yet)."""
    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    return 0.0


LogCapture = Callable[[Settings], io.StringIO]


@pytest.fixture
def capture_logs() -> Iterator[LogCapture]:
    """``capture_logs(settings)``: the app's log handler, writing to a buffer instead of stdout."""
    root = logging.getLogger()
    level = root.level
    handlers: list[logging.Handler] = []

    def start(settings: Settings) -> io.StringIO:
        stream = io.StringIO()
        handlers.append(observability.configure_logging(settings, stream))
        return stream

    yield start
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def request_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [entry for entry in json_lines(stream) if entry["logger"] == "imaging.request"]


# -- trace headers ---------------------------------------------------------------------------------


def test_cloud_trace_header_gives_trace_span_in_hex_and_sampling() -> None:
    assert parse_trace_headers(f"{TRACE_ID}/1;o=1", None) == TraceContext(
        TRACE_ID, "0000000000000001", sampled=True
    )
    assert parse_trace_headers(f"{TRACE_ID.upper()}/255;o=0", None) == TraceContext(
        TRACE_ID, "00000000000000ff", sampled=False
    )


def test_traceparent_is_used_when_there_is_no_cloud_trace_header() -> None:
    header = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    assert parse_trace_headers(None, header) == TraceContext(
        TRACE_ID, "00f067aa0ba902b7", sampled=True
    )


def test_cloud_trace_header_wins_over_traceparent() -> None:
    context = parse_trace_headers(f"{TRACE_ID}/1", f"00-{'a' * 32}-{'b' * 16}-01")
    assert context is not None
    assert context.trace_id == TRACE_ID


@pytest.mark.parametrize(
    ("cloud", "traceparent"),
    [
        ("", ""),
        ("not-a-trace", None),
        ("0" * 32 + "/1;o=1", None),
        (None, f"ff-{TRACE_ID}-00f067aa0ba902b7-01"),
        (None, f"00-{TRACE_ID}-0000000000000000-01"),
        (None, f"00-{TRACE_ID}-00f067aa0ba902b7"),
    ],
)
def test_malformed_trace_headers_are_ignored(cloud: str | None, traceparent: str | None) -> None:
    assert parse_trace_headers(cloud, traceparent) is None


# -- logs ------------------------------------------------------------------------------------------


def test_request_line_is_cloud_logging_json_in_the_callers_trace(
    make_app: AppFactory, settings: Settings, capture_logs: LogCapture
) -> None:
    logs = capture_logs(settings.replace(log_format="json", google_cloud_project="demo-project"))
    client = make_app().test_client()
    response = upload(client, images.jpeg(), headers=CLOUD_TRACE_HEADER)
    assert response.status_code == 201
    (line,) = request_lines(logs)
    assert line["severity"] == "INFO"
    assert line["message"].startswith("POST /api/images 201 ")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", line["time"])
    assert line["logging.googleapis.com/trace"] == f"projects/demo-project/traces/{TRACE_ID}"
    assert re.fullmatch(r"[0-9a-f]{16}", line["logging.googleapis.com/spanId"])
    assert line["logging.googleapis.com/trace_sampled"] is True
    assert line["request_id"] == response.headers["X-Request-Id"]
    assert line["image_id"] == response.get_json()["id"]
    http = line["httpRequest"]
    assert (http["requestMethod"], http["status"]) == ("POST", 201)
    assert http["requestUrl"] == "http://localhost/api/images"
    assert http["responseSize"] == str(len(response.get_data()))
    assert re.fullmatch(r"\d+\.\d{3}s", http["latency"])
    assert "remoteIp" in http
    assert "userAgent" in http


def test_credentials_in_the_query_string_never_reach_the_log(
    make_app: AppFactory, settings: Settings, capture_logs: LogCapture
) -> None:
    logs = capture_logs(settings.replace(log_format="json"))
    client = make_app().test_client()
    body = upload(client, images.jpeg()).get_json()
    secret = body["delete_key"]
    response = client.delete(f"/api/images/{body['id']}?key={secret}&reason=test")
    assert response.status_code == 204
    assert secret not in logs.getvalue()
    (line,) = [e for e in request_lines(logs) if e["httpRequest"]["requestMethod"] == "DELETE"]
    assert line["httpRequest"]["requestUrl"].endswith(
        f"/api/images/{body['id']}?key=REDACTED&reason=test"
    )
    assert line["image_id"] == body["id"]


def test_an_unhandled_error_is_logged_with_its_stack_in_the_callers_trace(
    make_app: AppFactory, settings: Settings, capture_logs: LogCapture
) -> None:
    logs = capture_logs(settings.replace(log_format="json", google_cloud_project="demo-project"))
    app = make_app()

    def explode() -> str:
        raise RuntimeError("the disk caught fire")

    app.add_url_rule("/explode", "explode", explode)
    response = app.test_client().get("/explode", headers=CLOUD_TRACE_HEADER)
    assert response.status_code == 500
    (error,) = [e for e in json_lines(logs) if e["severity"] == "ERROR"]
    assert "Traceback" in error["message"]
    assert "the disk caught fire" in error["message"]
    assert error["logging.googleapis.com/trace"] == f"projects/demo-project/traces/{TRACE_ID}"
    assert error["request_id"] == response.headers["X-Request-Id"]


def test_logs_are_plain_text_unless_json_is_asked_for(
    make_app: AppFactory, settings: Settings, capture_logs: LogCapture
) -> None:
    logs = capture_logs(settings)  # log_format="text", not on Cloud Run
    response = upload(make_app().test_client(), images.jpeg())
    (line,) = [ln for ln in logs.getvalue().splitlines() if "imaging.request" in ln]
    assert "POST /api/images 201" in line
    assert f"[{response.headers['X-Request-Id']}]" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


#: How each of our text lines begins: time, level, logger.
TEXT_LINE_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ +[\w.]+ ")


def test_a_request_path_cannot_forge_a_text_log_line(
    make_app: AppFactory, settings: Settings, capture_logs: LogCapture
) -> None:
    logs = capture_logs(settings)  # log_format="text"
    response = make_app().test_client().get("/nothing%0aFAKE%20LOG%20LINE")
    assert response.status_code == 404
    lines = logs.getvalue().splitlines()
    (line,) = [ln for ln in lines if "imaging.request" in ln]
    assert "GET /nothing\\nFAKE LOG LINE 404" in line
    assert all(TEXT_LINE_START.match(ln) for ln in lines), lines


@pytest.mark.parametrize(
    "control", ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1b[2J", "\x1e", "\x85", "\u2028", "\u2029"]
)
def test_text_logs_escape_every_line_break_and_control_character(control: str) -> None:
    record = logging.LogRecord(
        "imaging.test", logging.WARNING, __file__, 1, "got %s", (f"a{control}FAKE",), None
    )
    (line,) = observability.TextFormatter().format(record).splitlines()
    assert line.endswith(" imaging.test got a" + control.encode("unicode_escape").decode() + "FAKE")


def test_a_traceback_stays_multi_line_but_its_exception_message_does_not(
    settings: Settings, capture_logs: LogCapture
) -> None:
    logs = capture_logs(settings)
    try:
        try:
            raise KeyError("first\nFAKE LOG LINE")
        except KeyError as exc:
            raise ValueError("bad path /nothing\nFAKE LOG LINE") from exc
    except ValueError:
        logging.getLogger("imaging.test").exception("failed on %s", "x\ny")
    head, *stack = logs.getvalue().splitlines()
    assert head.endswith(" imaging.test failed on x\\ny")
    assert "Traceback (most recent call last):" in stack
    assert any(ln.startswith('  File "') for ln in stack)
    assert "ValueError: bad path /nothing\\nFAKE LOG LINE" in stack
    assert "KeyError: 'first\\nFAKE LOG LINE'" in stack
    assert not any(ln.startswith("FAKE") for ln in stack)


def test_an_exception_formatted_first_by_another_handler_is_still_escaped() -> None:
    try:
        raise ValueError("bad path /nothing\nFAKE LOG LINE")
    except ValueError:
        record = logging.LogRecord(
            "imaging.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    logging.Formatter().format(record)  # fills record.exc_text, the cache every handler shares
    assert "\nFAKE LOG LINE" in (record.exc_text or "")
    lines = observability.TextFormatter().format(record).splitlines()
    assert lines[-1] == "ValueError: bad path /nothing\\nFAKE LOG LINE"
    assert not any(ln.startswith("FAKE") for ln in lines)


def test_logs_are_json_on_cloud_run(settings: Settings) -> None:
    assert observability.uses_json_logs(settings.replace(log_format="json"))
    # Cloud Run is detected from K_SERVICE; such settings need GCS, so build them unchecked.
    assert observability.uses_json_logs(Settings(on_cloud_run=True))
    assert not observability.uses_json_logs(settings)


def test_probe_and_metrics_requests_are_not_logged_while_they_succeed(
    make_app: AppFactory, settings: Settings, capture_logs: LogCapture
) -> None:
    logs = capture_logs(settings.replace(log_format="json"))
    client = make_app().test_client()
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200
    assert request_lines(logs) == []


def test_libvips_chatter_is_not_logged_unless_debug_is_asked_for(
    make_app: AppFactory, settings: Settings, capture_logs: LogCapture
) -> None:
    photo = images.jpeg(1600, 1200)
    client = make_app(resampler="vips").test_client()
    quiet = capture_logs(settings.replace(log_format="json"))
    assert upload(client, photo, format="webp", width="640").status_code == 201
    debug = capture_logs(settings.replace(log_format="json", log_level="DEBUG"))
    assert upload(client, photo + b"again", format="webp", width="640").status_code == 201

    assert [e for e in json_lines(quiet) if e["logger"] == "pyvips"] == []
    assert any("VIPS:" in e["message"] for e in json_lines(debug) if e["logger"] == "pyvips")


def test_a_clients_request_id_is_kept_and_a_bad_one_replaced(local_client: FlaskClient) -> None:
    kept = local_client.get("/api/images", headers={"X-Request-Id": "job-42.7"})
    assert kept.headers["X-Request-Id"] == "job-42.7"
    replaced = local_client.get("/api/images", headers={"X-Request-Id": "<script>"})
    assert re.fullmatch(r"[0-9a-f]{16}", replaced.headers["X-Request-Id"])


# -- metrics ---------------------------------------------------------------------------------------


def test_metrics_answer_in_prometheus_text_format(local_client: FlaskClient) -> None:
    response = local_client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert "# TYPE uploads_total counter" in response.get_data(as_text=True)


def test_uploads_are_counted_by_outcome(local_client: FlaskClient) -> None:
    def count(outcome: str) -> float:
        return metric(local_client, "uploads_total", outcome=outcome)

    before = {o: count(o) for o in ("created", "duplicate", "unsupported_format")}
    data = images.jpeg(70, 50)
    assert upload(local_client, data).status_code == 201
    assert upload(local_client, data).status_code == 200  # the same bytes again
    assert upload(local_client, b"plain text, not an image").status_code == 415
    assert count("created") == before["created"] + 1
    assert count("duplicate") == before["duplicate"] + 1
    assert count("unsupported_format") == before["unsupported_format"] + 1


def test_bytes_and_conversion_time_are_measured_by_format(local_client: FlaskClient) -> None:
    def sample(name: str, **labels: str) -> float:
        return metric(local_client, name, **labels)

    png_variants = sample("variant_bytes_count", source_format="jpeg", output_format="png")
    webp_variants = sample("variant_bytes_count", source_format="jpeg", output_format="webp")
    sources = sample("upload_source_bytes_count", source_format="jpeg")
    source_bytes = sample("upload_source_bytes_sum", source_format="jpeg")
    conversions = sample("conversion_seconds_count", source_format="jpeg")
    data = images.jpeg(90, 60)
    body = upload(local_client, data, format="png").get_json()
    # The png variant, and the gallery thumbnail, which is always WebP.
    assert sample("variant_bytes_count", source_format="jpeg", output_format="png") == (
        png_variants + 1
    )
    assert sample("variant_bytes_count", source_format="jpeg", output_format="webp") == (
        webp_variants + 1
    )
    assert sample("upload_source_bytes_count", source_format="jpeg") == sources + 1
    assert sample("upload_source_bytes_sum", source_format="jpeg") == source_bytes + body["bytes"]
    assert sample("conversion_seconds_count", source_format="jpeg") == conversions + 1
    assert sample("conversions_in_flight") == 0


def test_error_responses_are_counted_by_type(local_client: FlaskClient) -> None:
    not_found = metric(local_client, "errors_total", type="not_found")
    unsupported = metric(local_client, "errors_total", type="unsupported_format")
    assert local_client.get("/no/such/page").status_code == 404
    assert upload(local_client, b"GIF89a but not really").status_code == 415
    assert metric(local_client, "errors_total", type="not_found") == not_found + 1
    assert metric(local_client, "errors_total", type="unsupported_format") == unsupported + 1


def test_labeler_calls_are_timed(make_app: AppFactory) -> None:
    client = make_app(labeler="local").test_client()
    before = metric(client, "labeler_seconds_count", labeler="local", outcome="ok")
    assert upload(client, images.photo("chelsea")).status_code == 201
    assert metric(client, "labeler_seconds_count", labeler="local", outcome="ok") == before + 1


# -- traces ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def span_exporter() -> Iterator[InMemorySpanExporter]:
    """A real SDK tracer provider recording spans in memory (installed once: OTel's rule)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter
    # Later tests still make spans through this provider: stop it from keeping them.
    provider.shutdown()


@pytest.fixture
def spans(span_exporter: InMemorySpanExporter) -> Iterator[Callable[[], list[ReadableSpan]]]:
    span_exporter.clear()
    yield lambda: list(span_exporter.get_finished_spans())
    span_exporter.clear()


def test_an_upload_is_traced_as_decode_encode_label_and_store_in_the_callers_trace(
    make_app: AppFactory, spans: Callable[[], list[ReadableSpan]]
) -> None:
    client = make_app(labeler="local").test_client()
    response = upload(client, images.photo("coffee"), CLOUD_TRACE_HEADER, format="webp,png")
    assert response.status_code == 201
    recorded = spans()
    names = [s.name for s in recorded]
    assert {"decode", "encode", "label", "store", "POST /api/images"} <= set(names)
    assert all(s.context is not None and f"{s.context.trace_id:032x}" == TRACE_ID for s in recorded)
    (request_span,) = [s for s in recorded if s.name == "POST /api/images"]
    assert request_span.parent is not None
    assert request_span.parent.span_id == 1
    assert request_span.context is not None
    (label,) = [s for s in recorded if s.name == "label"]
    # The labeler runs in a pool thread: its span still hangs off the request.
    assert label.parent is not None
    assert label.parent.span_id == request_span.context.span_id
    encoded = sorted(
        str((s.attributes or {}).get("format")) for s in recorded if s.name == "encode"
    )
    assert encoded == ["png", "webp", "webp"]  # variants, thumbnail: no JPEG label copy


def test_log_lines_take_the_span_they_were_written_in(
    make_app: AppFactory,
    settings: Settings,
    capture_logs: LogCapture,
    spans: Callable[[], list[ReadableSpan]],
) -> None:
    logs = capture_logs(settings.replace(log_format="json"))
    upload(make_app().test_client(), images.jpeg(), headers=CLOUD_TRACE_HEADER)
    (line,) = request_lines(logs)
    (request_span,) = [s for s in spans() if s.name == "POST /api/images"]
    assert request_span.context is not None
    assert line["logging.googleapis.com/trace"] == TRACE_ID  # no project configured: bare id
    assert line["logging.googleapis.com/spanId"] == f"{request_span.context.span_id:016x}"


# -- without Flask ---------------------------------------------------------------------------------


def test_the_core_imports_without_flask() -> None:
    code = (
        "import sys, imaging.observability, imaging.pipeline, imaging.catalog, imaging.processing\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0] in ('flask', 'werkzeug')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_log_lines_outside_a_request_take_the_request_scope() -> None:
    record = logging.LogRecord("imaging.job", logging.INFO, __file__, 1, "converted", (), None)
    caller = TraceContext(TRACE_ID, "00f067aa0ba902b7", sampled=True)
    assert not observability.TextFormatter().format(record).endswith("]")
    assert "request_id" not in json.loads(observability.CloudLoggingFormatter().format(record))
    with context.request_scope("job-7", caller):
        assert observability.TextFormatter().format(record).endswith(" converted [job-7]")
        entry = json.loads(observability.CloudLoggingFormatter("demo").format(record))
    assert entry["request_id"] == "job-7"
    assert entry["logging.googleapis.com/trace"] == f"projects/demo/traces/{TRACE_ID}"
    assert entry["logging.googleapis.com/spanId"] == "00f067aa0ba902b7"
    assert context.request_id() is None


def test_an_ingest_outside_flask_names_its_image_in_the_request_scope(
    settings: Settings, local_store: LocalStore
) -> None:
    pipeline = Pipeline(settings, local_store, NullLabeler(), Catalog(local_store))
    with context.request_scope("job-7") as scope:
        result = pipeline.ingest(images.jpeg(40, 30), UploadOptions(formats=("webp",)))
    assert scope.image_ids == [result.record.id]
    outside = pipeline.ingest(images.jpeg(30, 40), UploadOptions(formats=("webp",)))
    assert not outside.duplicate
    assert context.image_ids() == []


# -- health ----------------------------------------------------------------------------------------


def test_healthz_answers_while_the_process_serves(local_client: FlaskClient) -> None:
    response = local_client.get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_readyz_is_200_when_storage_and_labeler_are_ready(local_client: FlaskClient) -> None:
    response = local_client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert (body["checks"]["storage"], body["checks"]["labeler"]) == ("ok", "ok")


def test_readyz_is_503_naming_storage_when_the_media_directory_is_gone(
    make_app: AppFactory, local_store: LocalStore
) -> None:
    app: Flask = make_app(storage=local_store)
    shutil.rmtree(local_store.root)  # the disk (or mount) went away under a running app
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"]["storage"] == "storage_unavailable"
    assert body["checks"]["labeler"] == "ok"


def test_readyz_is_503_naming_a_full_disk_below_the_free_space_floor(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """A full disk fails uploads part-way: readiness says so before traffic is sent there."""
    store = LocalStore(tmp_path / "full", min_free_bytes=store_free(tmp_path) + (1 << 40))
    response = make_app(storage=store).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["storage"] == "disk_full"
    roomy = LocalStore(tmp_path / "roomy", min_free_bytes=1024)
    assert make_app(storage=roomy).test_client().get("/readyz").status_code == 200


def test_the_free_space_floor_comes_from_min_free_disk_mb(settings: Settings) -> None:
    store = build_store(settings.replace(min_free_disk_mb=7))
    assert isinstance(store, LocalStore)
    assert store.min_free_bytes == 7 * 1024 * 1024


def store_free(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize
