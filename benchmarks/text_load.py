"""Whether the screenshot's words are read under load: uploads at c=8 against the Dockerfile's
command with the default labeler, counted by what their records say of the text.

    .venv/bin/python -m benchmarks.text_load [--seconds 20] [--connections 8]

The input is ``benchmarks.peers``' 1 MP PNG screenshot (1280x800, rows of small text), made
unique per request (a tEXt chunk with a counter), sent as ``make bench-peers`` sends it
(format=webp, width=1024). The server is the Dockerfile's CMD on LocalStore (gunicorn, one
worker per core, ``tests/container.py``) with LABELER=local. For every answer it prints whether
the words were read (the record's ``text_status`` and ``text``), and, from the server's log,
why a read was skipped; then the server's CPU per request (reaped Tesseract children
included), the answers' latency, and the reads a ``flask relabel``-style pass would redo.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import statistics
import struct
import tempfile
import threading
import time
import urllib.parse
import uuid
import zlib
from pathlib import Path

from benchmarks.engine import screenshot
from benchmarks.machine import cpu_model
from benchmarks.peers import cpu_seconds, start_app


def unique_png(png: bytes, n: int) -> bytes:
    """``png`` with a tEXt chunk holding ``n`` after IHDR: new bytes, the same pixels."""
    ihdr_end = 8 + 4 + 4 + 13 + 4
    body = b"tEXt" + b"Comment\x00" + f"request {n} {uuid.uuid4().hex}".encode()
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in (("format", "webp"), ("width", "1024"))
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
        'filename="screenshot.png"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--env", action="append", default=[], help="NAME=value for the server")
    args = parser.parse_args(argv)
    png = screenshot(1280, 800)
    answers: list[tuple[int, float, dict[str, object]]] = []
    lock = threading.Lock()
    counter = iter(range(1 << 30))
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="text-load-")))
        env = dict(pair.split("=", 1) for pair in args.env)
        url, pid = start_app(stack, scratch, "local", **env)
        target = urllib.parse.urlsplit(url)
        host, port = str(target.hostname), target.port
        # One warm-up upload per worker, so no timed request loads a model.
        for n in range(4):
            body, ctype = multipart(unique_png(png, -1 - n))
            conn = http.client.HTTPConnection(host, port, timeout=180)
            conn.request("POST", "/api/images", body, {"Content-Type": ctype})
            conn.getresponse().read()
            conn.close()
        log_files = (scratch / "stdout.log", scratch / "stderr.log")
        log_starts = [path.stat().st_size for path in log_files]
        cpu_before = cpu_seconds([pid])
        started = time.monotonic()
        stop_at = started + args.seconds

        def client() -> None:
            conn = http.client.HTTPConnection(host, port, timeout=180)
            while time.monotonic() < stop_at:
                with lock:
                    n = next(counter)
                body, ctype = multipart(unique_png(png, n))
                t0 = time.monotonic()
                conn.request("POST", "/api/images", body, {"Content-Type": ctype})
                response = conn.getresponse()
                raw = response.read()
                elapsed = time.monotonic() - t0
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    parsed = {}
                with lock:
                    answers.append((response.status, elapsed, parsed))
            conn.close()

        threads = [threading.Thread(target=client) for _ in range(args.connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        cpu = cpu_seconds([pid]) - cpu_before
        logs = "".join(
            path.read_bytes()[start:].decode("utf-8", "replace")
            for path, start in zip(log_files, log_starts, strict=True)
        )
    skipped: collections.Counter[str] = collections.Counter()
    for line in logs.splitlines():
        if "no text" in line or "text not read" in line or "labeler local" in line:
            message = line
            with contextlib.suppress(ValueError):
                message = str(json.loads(line).get("message", line))
            skipped[_reason(message)] += 1
    statuses: collections.Counter[str] = collections.Counter()
    words: list[int] = []
    for status, _, answer in answers:
        if status != 201:
            statuses[f"HTTP {status}"] += 1
            continue
        text = str(answer.get("text", ""))
        words.append(len(text.split()))
        status_word = answer.get("text_status", "(none)")
        statuses[f"text_status={status_word}, words {'yes' if text else 'no'}"] += 1
    times = sorted(t for _, t, _ in answers)
    print(f"machine: {cpu_model()}, server: the Dockerfile's CMD, LABELER=local {args.env}")
    rate = len(answers) / wall
    print(f"{len(answers)} answers in {wall:.1f} s at c={args.connections}: {rate:.2f} req/s")
    print(f"server CPU per answer: {1000 * cpu / max(1, len(answers)):.0f} ms")
    if times:
        p95 = times[min(len(times) - 1, round(0.95 * len(times)) - 1)]
        p50 = statistics.median(times)
        print(f"latency p50 {p50:.2f} s, p95 {p95:.2f} s, max {times[-1]:.2f} s")
    for key, count in sorted(statuses.items()):
        print(f"  {count:4d}  {key}")
    if words:
        read = [w for w in words if w]
        print(f"words per record that has them: {statistics.median(read) if read else 0:.0f}")
    print("server log, reads not done:", dict(skipped) or "none")


def _reason(message: str) -> str:
    """The reason a log line gives for a read not done (old lines: from their wording)."""
    for reason in ("busy", "timeout", "cpu", "failed"):
        if f"text not read ({reason})" in message:
            return reason
    if "busy" in message:
        return "busy"
    if "longer" in message:
        return "timeout"
    return message[-80:]


if __name__ == "__main__":
    main()
