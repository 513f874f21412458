"""gunicorn settings for the container, which runs
``gunicorn --config gunicorn.conf.py 'cloud_image_app:create_app()'`` (the Dockerfile's CMD).

Sized for Cloud Run: one process per vCPU (``WEB_CONCURRENCY``), each with ``GUNICORN_THREADS``
threads, so the service's ``--concurrency`` should be workers x threads. Every knob below can be
overridden by the environment variable named beside it.

Shutdown: Cloud Run sends SIGTERM, then SIGKILL 10 seconds later. gunicorn stops accepting
connections at once and lets in-flight requests finish for ``graceful_timeout`` seconds, which
stays under those 10 seconds so the workers are never killed mid-write.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gunicorn.glogging import Logger


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def _flag_env(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


bind = f"0.0.0.0:{_int_env('PORT', 8080)}"
# One process per core: decoding and encoding are CPU-bound and hold the GIL part of the time.
workers = _int_env("WEB_CONCURRENCY", os.cpu_count() or 1)
# The app bounds CPU work per process (CONVERSION_SLOTS). Across all workers we allow two
# conversions per core: one per core leaves a core idle while its request parses multipart,
# writes to storage or answers (Python holding the GIL), and measured 85 % of the ideal
# throughput against 90-92 % with two (README, "Benchmarks"); more only adds memory. Excess
# requests queue for a slot, then get 503 with Retry-After.
os.environ.setdefault("CONVERSION_SLOTS", str(max(1, 2 * (os.cpu_count() or 1) // workers)))
# Threads serve the I/O-bound part (uploads arriving, GCS writes, Cloud Vision calls); the
# pipeline's conversion slots (CONVERSION_SLOTS) keep the CPU-bound part from oversubscribing.
# gunicorn's gthread worker, answering the requests gunicorn itself refuses (a request line
# over 4094 bytes, a malformed header) with the app's JSON or page and security headers.
worker_class = "imaging.wire.Worker"
threads = _int_env("GUNICORN_THREADS", 8)
# Cloud Run enforces the request timeout (gcloud run deploy --timeout); gunicorn's worker timeout
# would kill a worker in the middle of a long, legitimate 50-megapixel conversion.
timeout = _int_env("GUNICORN_TIMEOUT", 0)
graceful_timeout = _int_env("GUNICORN_GRACEFUL_TIMEOUT", 8)
# Longer than gunicorn's 2 s default, so the front end closes idle connections, not us.
keepalive = _int_env("GUNICORN_KEEPALIVE", 65)
# Recycle workers now and then: image work fragments the heap, a fresh process gives it back.
# A recycled worker is forked from the master, which holds the local labeler's model already
# (on_starting below): recycling never reloads it.
max_requests = _int_env("GUNICORN_MAX_REQUESTS", 1000)
max_requests_jitter = _int_env("GUNICORN_MAX_REQUESTS_JITTER", 100)
# The app (and its GCS and Vision clients) is built in each worker after the fork: gRPC channels
# must not be shared across a fork. The one exception is the local labeler's ONNX model, loaded
# in the master by on_starting: its session runs no threads of its own (one intra-op thread,
# sequential), so it forks safely, and its weights are then shared copy-on-write by every worker.
preload_app = False
# Cloud Run's front end is the only thing that can reach the container; trust its
# X-Forwarded-Proto so request URLs say https.
forwarded_allow_ips = "*"
# No gunicornc control socket: nothing on Cloud Run would use it, and two servers on one machine
# (tests, a second checkout) would fight over its one default path.
control_socket_disable = True

# Logs: the app writes one structured line per request itself (with its trace id and image id),
# so gunicorn's own access log is off unless GUNICORN_ACCESS_LOG=1; it is then JSON on stdout.
accesslog = "-" if _flag_env("GUNICORN_ACCESS_LOG") else None
errorlog = "-"  # stderr
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# Prometheus: each worker writes its metrics to files in one directory, /metrics adds them up.
# Set here, in the master, before any worker imports prometheus_client. A fresh directory per
# start, because files left by an earlier run would be counted again.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    _own_metrics_dir = False
    os.makedirs(_metrics_dir, exist_ok=True)
    for _name in os.listdir(_metrics_dir):
        if _name.endswith(".db"):
            os.remove(os.path.join(_metrics_dir, _name))
else:
    _metrics_dir = tempfile.mkdtemp(prefix="prometheus-")
    _own_metrics_dir = True
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def _json_logs() -> bool:
    return bool(os.environ.get("K_SERVICE")) or os.environ.get("LOG_FORMAT", "").lower() == "json"


class JsonLogger(Logger):  # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn's logger with an access log of one JSON object per line, in Cloud Logging's
    ``httpRequest`` shape, and (on Cloud Run or with LOG_FORMAT=json) a JSON error log."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        if _json_logs():
            from imaging.observability import CloudLoggingFormatter

            formatter = CloudLoggingFormatter(os.environ.get("GOOGLE_CLOUD_PROJECT", ""))
            for handler in self.error_log.handlers:
                handler.setFormatter(formatter)

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        status = str(resp.status).split(None, 1)[0]
        seconds = request_time.total_seconds()
        from imaging.observability import redact_query

        query = redact_query(environ.get("QUERY_STRING", ""))
        entry: dict[str, Any] = {
            "severity": "INFO",
            "message": f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')} {status}",
            "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "logger": "gunicorn.access",
            "httpRequest": {
                "requestMethod": environ["REQUEST_METHOD"],
                "requestUrl": environ.get("PATH_INFO", "") + (f"?{query}" if query else ""),
                "status": int(status) if status.isdigit() else 0,
                "responseSize": str(getattr(resp, "sent", 0) or 0),
                "latency": f"{seconds:.3f}s",
                "userAgent": environ.get("HTTP_USER_AGENT", ""),
                "remoteIp": environ.get("REMOTE_ADDR", ""),
                "protocol": environ.get("SERVER_PROTOCOL", ""),
            },
        }
        trace = environ.get("HTTP_X_CLOUD_TRACE_CONTEXT", "").split("/", 1)[0]
        project = os.environ.get("GOOGLE_CLOUD_PROJECT", "")
        if trace and project:
            entry["logging.googleapis.com/trace"] = f"projects/{project}/traces/{trace}"
        self.access_log.info(json.dumps(entry, ensure_ascii=False))


logger_class = JsonLogger


def on_starting(server: Any) -> None:
    """Load the local labeler's model in the master, before any worker is forked.

    Every worker (and every worker started later to replace a recycled one) then inherits the
    loaded model instead of loading its own copy: one copy of the weights in memory, shared
    copy-on-write, and no model load under load. Any failure here is only logged: the workers
    load the model themselves and report the problem as they always did.
    """
    try:
        from imaging.config import Settings

        settings = Settings.from_env()
        if settings.labeler == "local":
            mapped = _mapped_files()
            # Imported only here: onnxruntime and numpy would otherwise sit in a master (and in
            # every worker forked from it) that never labels (about 40 MB each).
            from imaging.labeling import build_labeler, convert_local_model
            from imaging.labeling.local import MODEL_FILES

            if not (settings.model_cache_dir / MODEL_FILES[settings.local_precision]).exists():
                # No cached model (the image build makes one): convert it in a child, so the
                # converter's memory (onnx, the quantiser: about 100 MB) is not left in the
                # master and in every worker forked from it. A failure here is the workers'
                # to report, as below.
                convert_local_model(settings.model_cache_dir, settings.local_precision, check=False)
            build_labeler(settings).check()
            server.log.info("local labeler: model loaded before forking the workers")
            if release_load_memory:
                _release_load_memory(server, mapped)
    except Exception as exc:  # settings or model trouble: the workers will say so
        server.log.warning("local labeler: not preloaded (%s: %s)", type(exc).__name__, exc)


# After loading the model the master runs none of the code that loaded it: it only forks. It
# then gives back what the load left behind (0 keeps it): the heap the load freed
# (malloc_trim), and its mappings of the code the load ran (onnxruntime, LiteRT, numpy: about
# 35 MB). The workers never inherited those pages anyway (fork copies no page tables of a clean
# file mapping): each maps what its own labelling runs, as it did before, from the page cache
# (docs/benchmarks.md, "The master's memory").
release_load_memory = os.environ.get("GUNICORN_RELEASE_LOAD_MEMORY", "").strip() != "0"
_MADV_DONTNEED = 4  # <asm-generic/mman-common.h>


@dataclass
class _Mapping:
    start: int
    end: int
    perms: str
    path: str
    anonymous_kb: int = 0  # pages copied on write: this process's own, not the file's


def _file_mappings() -> list[_Mapping]:
    """This process's file-backed mappings (/proc/self/smaps); none where there is no /proc."""
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return []
    mappings: list[_Mapping] = []
    current: _Mapping | None = None
    for line in lines:
        fields = line.split(None, 5)
        if fields and fields[0] == "Anonymous:" and current is not None:
            current.anonymous_kb = int(fields[1])
        elif len(fields) >= 5 and "-" in fields[0] and not fields[0].endswith(":"):
            current = None
            if len(fields) == 6 and fields[5].startswith("/"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                current = _Mapping(start, end, fields[1], fields[5])
                mappings.append(current)
    return mappings


def _mapped_files() -> set[str]:
    return {mapping.path for mapping in _file_mappings()}


def _resident_mb() -> float:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0.0
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found[1]) / 1024 if found else 0.0


def _release_load_memory(server: Any, mapped_before: set[str]) -> None:
    """Give back the freed heap and the code pages that loading the model left in the master.

    Only read-only mappings of files the load mapped, holding no page of this process's own:
    MADV_DONTNEED drops the master's view of them, and a page touched again is read back from
    the file (still in the page cache, where the workers map it too). A writable mapping, or
    one with a copied-on-write page (relocations), is left alone: its own pages would be lost.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    before = _resident_mb()
    gc.collect()
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    libc.malloc_trim(0)
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    for mapping in _file_mappings():
        clean = "w" not in mapping.perms and mapping.anonymous_kb == 0
        if clean and mapping.path not in mapped_before:
            madvise(mapping.start, mapping.end - mapping.start, _MADV_DONTNEED)
    released = before - _resident_mb()
    server.log.info("local labeler: the master gave back %.0f MB after the load", released)


# Give freed heap back to the system once a worker has been idle for this long (seconds; 0 turns
# it off). Image work frees tens of megabytes a request, and glibc keeps freed heap mapped for the
# next request; under load that is what we want (no page faults), but a worker that has gone
# quiet would hold it until recycled. One malloc_trim(0) per quiet spell, never during a request.
idle_trim_seconds = float(os.environ.get("GUNICORN_IDLE_TRIM_SECONDS", "").strip() or 1.0)


class _Activity:
    """This worker's requests in flight, when the last one ended, and whether the heap has been
    trimmed since (guarded by ``_activity_lock``)."""

    in_flight = 0
    last = 0.0
    trimmed = True


_activity = _Activity()
_activity_lock = threading.Lock()


def pre_request(worker: Any, req: Any) -> None:
    with _activity_lock:
        _activity.in_flight += 1
        _activity.trimmed = False


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    with _activity_lock:
        _activity.in_flight -= 1
        _activity.last = time.monotonic()


# malloc arenas per worker (0 keeps glibc's default, 8 per core). glibc gives threads arenas
# of their own, and malloc_trim cannot shrink those from the top the way it shrinks the main
# heap: after a load test a worker's request threads held 16-50 MB of freed memory there that the
# idle trim above never gave back. With one arena every thread allocates from the main heap,
# which the trim returns whole; the threads contend for its lock only while they allocate
# (docs/benchmarks.md, "One malloc arena per worker": no more CPU per request, no more faults).
malloc_arena_max = _int_env("GUNICORN_MALLOC_ARENA_MAX", 1)
_M_ARENA_MAX = -8  # glibc's malloc.h


def post_fork(server: Any, worker: Any) -> None:
    """Bound the worker's malloc arenas and start its idle trimmer, before the worker starts its
    threads (glibc only; elsewhere there is nothing to call)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim, mallopt = libc.malloc_trim, libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if malloc_arena_max > 0:
        mallopt(_M_ARENA_MAX, malloc_arena_max)
    if idle_trim_seconds <= 0:
        return
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int

    def watch() -> None:
        while True:
            time.sleep(idle_trim_seconds / 2)
            with _activity_lock:
                quiet = time.monotonic() - _activity.last >= idle_trim_seconds
                due = quiet and _activity.in_flight == 0 and not _activity.trimmed
                if due:
                    _activity.trimmed = True
            if due:
                trim(0)

    threading.Thread(target=watch, name="idle-trim", daemon=True).start()


def child_exit(server: Any, worker: Any) -> None:
    """A worker ended: drop its live gauges (in-flight conversions) from the shared numbers."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def worker_exit(server: Any, worker: Any) -> None:
    """Flush spans still queued for export and the logs, then end the worker process here.

    gunicorn calls this as the worker leaves (``sys.exit``, its exit code in flight). The rest
    of a normal exit would run the C++ exit handlers of onnxruntime and LiteRT, which the master
    loaded before forking: in a worker they wait on threads that only the master has, and the
    worker aborted with SIGABRT ("terminate called after throwing an instance of
    'std::system_error'") or hung until killed. ``os._exit`` ends the process with the same
    code once everything this process owns is flushed; files, sockets and locks are the
    kernel's to release.
    """
    from opentelemetry import trace

    shutdown = getattr(trace.get_tracer_provider(), "shutdown", None)
    if callable(shutdown):
        shutdown()
    leaving = sys.exc_info()[1]
    code = leaving.code if isinstance(leaving, SystemExit) else 0 if leaving is None else 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code if isinstance(code, int) else 1 if code else 0)


def on_exit(server: Any) -> None:
    if _own_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
