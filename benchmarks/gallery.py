"""A gallery to look at: the app as `make run` starts it, on a scratch media root, with photos.

Shared by the page-speed benchmark (``benchmarks.pages``) and the screenshot script
(``scripts/screenshots``), so both show the same images. The photos are real ones shipped in
packages (scikit-image's ``skimage.data`` samples, read from the installed package, never
downloaded) plus one rendered screenshot-like PNG, each uploaded through ``POST /api/images``
like a curl user would. ``App`` runs ``cloud_image_app.py`` from any source tree, so an older
commit checked out with ``git worktree add`` can be served the same way.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from benchmarks.engine import screenshot

ROOT = Path(__file__).resolve().parents[1]
BOUNDARY = "----cloud-image-app-gallery"
#: The first upload with the local labeler converts its model (once per cache directory).
UPLOAD_TIMEOUT_S = 300

Pixels = np.ndarray[Any, Any]


def _jpeg(pixels: Pixels, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _sample(name: str) -> Callable[[], Pixels]:
    from skimage import data

    loader: Callable[[], Pixels] = getattr(data, name)
    return loader


#: Colour photos first (the gallery's top row), then the greyscale and scientific ones.
PHOTOS = (
    ("chelsea", "chelsea.jpg"),
    ("coffee", "coffee.jpg"),
    ("astronaut", "astronaut.jpg"),
    ("rocket", "rocket.jpg"),
    ("hubble_deep_field", "hubble-deep-field.jpg"),
    ("retina", "retina.jpg"),
    ("immunohistochemistry", "immunohistochemistry.jpg"),
    ("camera", "cameraman.jpg"),
    ("moon", "moon.jpg"),
    ("coins", "coins.jpg"),
    ("brick", "brick.jpg"),
    ("grass", "grass.jpg"),
    ("gravel", "gravel.jpg"),
    ("page", "page.jpg"),
    ("clock", "clock.jpg"),
    ("cell", "cell.jpg"),
    ("microaneurysms", "microaneurysms.jpg"),
    ("colorwheel", "colour-wheel.jpg"),
)
#: Mirror images of the colour photos fill the gallery to a full page (the duplicate index would
#: refuse the same bytes twice).
MIRRORED = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field")


def photos(count: int = 24) -> list[tuple[str, bytes]]:
    """``count`` distinct uploads as (file name, bytes), in upload order (oldest first).

    The screenshot-like PNG goes in first so the newest, top-left cards are photos.
    """
    uploads: list[tuple[str, bytes]] = [("screenshot.png", screenshot(1280, 800))]
    for name in MIRRORED:
        mirrored = np.asarray(ImageOps.mirror(Image.fromarray(_sample(name)())))
        uploads.append((f"{name.replace('_', '-')}-mirrored.jpg", _jpeg(mirrored)))
    for sample, filename in reversed(PHOTOS):
        uploads.append((filename, _jpeg(_sample(sample)())))
    if count > len(uploads):
        raise ValueError(f"at most {len(uploads)} seed images, not {count}")
    return uploads[-count:]


def multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with ``data`` in the ``image`` field; (body, content type)."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    body = b"".join(parts) + head + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    return body, f"multipart/form-data; boundary={BOUNDARY}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class App:
    """``python cloud_image_app.py`` from ``source`` on 127.0.0.1, media under ``scratch``.

    Everything else is the embedded default; ``env`` adds settings (``{"LABELER": "none"}``).
    The local labeler's ONNX cache is this checkout's ``instance/models`` unless ``env`` says
    otherwise, so a second run does not convert the model again.
    """

    def __init__(
        self, scratch: Path, *, source: Path = ROOT, env: dict[str, str] | None = None
    ) -> None:
        scratch.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("K_", "GOOGLE_"))},
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "MEDIA_ROOT": str(scratch / "media"),
            "MODEL_CACHE_DIR": str(ROOT / "instance" / "models"),
            "LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.source = source
        self.log_path = scratch / "app.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> App:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "cloud_image_app.py"],
            cwd=self.source,
            env=self.env,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited: {self.log_path.read_text()[-2000:]}")
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the app did not start: {self.log_path.read_text()[-2000:]}")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 5,
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def upload(self, filename: str, data: bytes, **fields: str) -> dict[str, Any]:
        """Upload one file through the JSON API; the record it answers with."""
        body, content_type = multipart(fields, filename, data)
        status, answer = self.request(
            "POST",
            "/api/images",
            body=body,
            headers={"Content-Type": content_type, "Accept": "application/json"},
            timeout=UPLOAD_TIMEOUT_S,
        )
        if status != 201:
            raise RuntimeError(f"uploading {filename} answered {status}: {answer[:500]!r}")
        record: dict[str, Any] = json.loads(answer)
        return record

    def seed(self, count: int = 24) -> list[dict[str, Any]]:
        """Upload ``count`` photos; their records, newest (the gallery's first card) first."""
        return [self.upload(name, data) for name, data in photos(count)][::-1]
