"""HTTP benchmark: the whole upload path through gunicorn, against pyvips and against the ideal.

Run: ``.venv/bin/python -m benchmarks.http`` (``make bench`` runs it too). In one run, on 2 MP
JPEGs (1632x1224, a real photo enlarged with sensor-like noise; every request a distinct file,
so the duplicate index never short-cuts the work), with ``format=webp&width=1024``, labels off,
LocalStore on a scratch directory:

1. **In-process:** ``Pipeline.ingest`` called directly, one at a time: the engine plus the
   thumbnail and the storage writes, no HTTP. ``ideal = cores / in-process seconds``.
2. **pyvips:** ``thumbnail_buffer(1024)`` + ``webpsave_buffer`` (quality 80, effort 4) with
   one thread: the bare conversion the fastest image servers do.
3. **HTTP, one client:** the production server (``gunicorn --config gunicorn.conf.py``,
   the container's command) answering ``POST /api/images`` sequentially; the ratio to pyvips.
   A second server with the default labeler on answers in turn with the first (one request
   to each, alternately), so the labeler's cost at one client is a ratio within each pair.
4. **HTTP throughput** with 2 and with 8 concurrent clients; the ratio 8 / 2, and each
   against the ideal.

Figures, not assertions: the machine is shared and noisy, so every figure that is compared is
measured in the same run.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1632, 1224
BOUNDARY = "----cloud-image-app-bench"
FIELDS = {"format": "webp", "width": "1024"}
#: One-client requests to each server, in turn.
SINGLE_ROUNDS = 15


def photos(count: int) -> list[bytes]:
    """``count`` distinct 2 MP JPEGs (q90) of a real photo with noise; a corner block varies."""
    from skimage import data

    base = Image.fromarray(data.chelsea()).resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS)
    rng = np.random.default_rng(7)
    pixels = np.asarray(base, dtype=np.int16)
    noisy = np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
    out = []
    for i in range(count):
        frame = noisy.copy()
        frame[:16, :16] = (i * 37 % 256, i * 91 % 256, i % 256)  # survives quantisation
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    assert len(set(out)) == count, "the inputs must all differ"
    return out


def multipart(data: bytes) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in FIELDS.items()
    ]
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return b"".join(parts) + head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """The container's start command on a free port, on a scratch media root."""

    def __init__(self, media: Path, labeler: str = "none") -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "PORT": str(self.port),
            "STORAGE_BACKEND": "local",
            "MEDIA_ROOT": str(media),
            "LABELER": labeler,
            "MODEL_CACHE_DIR": str(media.parent / "models"),
            "SECRET_KEY": "bench",
            "CONVERSION_WAIT": "60",
            # A queued upload's slot wait counts against its deadline (it must exceed the wait).
            "UPLOAD_DEADLINE": "120",
            "LOG_LEVEL": "WARNING",
        }
        env.pop("CONVERSION_SLOTS", None)
        self.log = open(media.parent / "gunicorn.log", "wb")  # noqa: SIM115 - closed in stop()
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        cmd = [gunicorn, "--config", "gunicorn.conf.py", "cloud_image_app:create_app()"]
        self.process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not start")

    def post(self, body: bytes) -> float:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        started = time.perf_counter()
        conn.request(
            "POST",
            "/api/images",
            body=body,
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        response = conn.getresponse()
        response.read()
        elapsed = time.perf_counter() - started
        conn.close()
        if response.status != 201:
            raise RuntimeError(f"upload answered {response.status}")
        return elapsed

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def in_process(images: list[bytes], media: Path) -> float:
    """Median seconds per image through Pipeline.ingest, no HTTP."""
    from cloud_image_app import create_app
    from imaging.config import Settings
    from imaging.pipeline import UploadOptions

    settings = Settings(media_root=media, labeler="none", secret_key="bench")  # noqa: S106
    app = create_app(settings.validated())
    pipeline = app.extensions["imaging"].pipeline
    options = UploadOptions(formats=("webp",), width=1024)
    pipeline.ingest(images[0], options)  # warm-up
    times = []
    for data in images[1:]:
        started = time.perf_counter()
        pipeline.ingest(data, options)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def vips(images: list[bytes]) -> float:
    import pyvips

    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)
    times = []
    for data in images:
        started = time.perf_counter()
        thumb = pyvips.Image.thumbnail_buffer(data, 1024)
        thumb.webpsave_buffer(Q=80, effort=4, strip=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def throughput(server: Server, bodies: list[bytes], clients: int) -> float:
    """Uploads per second with ``clients`` concurrent connections."""
    lock = threading.Lock()
    queue = list(bodies)

    def worker() -> int:
        done = 0
        while True:
            with lock:
                if not queue:
                    return done
                body = queue.pop()
            server.post(body)
            done += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(lambda _: worker(), range(clients)))
    return total / (time.perf_counter() - started)


def main() -> None:
    cores = os.cpu_count() or 1
    print(f"building inputs ({WIDTH}x{HEIGHT} JPEG, q90)...", file=sys.stderr)
    images = photos(12 + 2 + 2 * SINGLE_ROUNDS + 40 + 60)
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        scratch = Path(tmp)
        per_image = in_process(images[:12], scratch / "inproc")
        vips_s = vips(images[:12])
        server = Server(scratch / "media")
        # The default labeler on (it runs beside the encodes), started beside the other: the
        # one-client latencies are measured interleaved, a request to each in turn, so the
        # machine's drift between runs cannot make the ratio.
        labelled = Server(scratch / "media-labelled", labeler="local")
        try:
            bodies = [multipart(d) for d in images[12:]]
            server.post(bodies[0])  # warm-up: imports, first connection
            labelled.post(bodies[1])  # warm-up: the model's first inference
            off: list[float] = []
            on: list[float] = []
            for i in range(SINGLE_ROUNDS):
                off.append(server.post(bodies[2 + 2 * i]))
                on.append(labelled.post(bodies[3 + 2 * i]))
            single, single_labelled = statistics.median(off), statistics.median(on)
            ratio = statistics.median(b / a for a, b in zip(off, on, strict=True))
            start = 2 + 2 * SINGLE_ROUNDS
            two = throughput(server, bodies[start : start + 40], 2)
            eight = throughput(server, bodies[start + 40 : start + 100], 8)
        finally:
            server.stop()
            labelled.stop()
    ideal = cores / per_image
    load = os.getloadavg()[0]
    rows = [
        ("in-process `Pipeline.ingest`, ms per image", f"{per_image * 1000:.0f}"),
        ("pyvips thumbnail + WebP (1 thread), ms per image", f"{vips_s * 1000:.0f}"),
        ("HTTP `POST /api/images`, one client, ms per image", f"{single * 1000:.0f}"),
        ("HTTP one client / pyvips", f"{single / vips_s:.2f}x (target within 1.5x)"),
        ("HTTP one client, default labeler on, ms per image", f"{single_labelled * 1000:.0f}"),
        (
            f"labeler on / off, one client ({SINGLE_ROUNDS} interleaved pairs, median ratio)",
            f"{ratio:.2f}x (target within 1.2x)",
        ),
        ("ideal throughput (cores / in-process time)", f"{ideal:.1f} req/s"),
        ("HTTP throughput, 2 clients", f"{two:.1f} req/s ({two / ideal:.0%} of ideal)"),
        ("HTTP throughput, 8 clients", f"{eight:.1f} req/s ({eight / ideal:.0%} of ideal)"),
        ("8 clients / 2 clients", f"{eight / two:.0%} (target at least 95 %)"),
    ]
    print(
        f"\n2 MP JPEG -> 1024 px WebP (+ thumbnail, stored), labels off; {cores} cores, "
        f"load average {load:.1f}\n"
    )
    print("| measure | figure |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(
        json.dumps(
            {
                "in_process_s": per_image,
                "vips_s": vips_s,
                "http_single_s": single,
                "http_single_labelled_s": single_labelled,
                "ideal_rps": ideal,
                "two_rps": two,
                "eight_rps": eight,
            }
        ),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
