"""The container's command, run without a Docker engine: shared by the tests of the container
(tests/test_container.py) and of the self-hosted proxy in front of it (tests/test_slow_clients.py).

The Dockerfile is read, not copied: its final stage's COPYs are laid out in a temporary WORKDIR
and its CMD (gunicorn with gunicorn.conf.py) is run there with its ENV, on a free port, so a CMD,
COPY or config that drifts breaks every test that starts it.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent  # the environment's scripts: gunicorn, hadolint

STARTUP_WAIT = 90.0
REQUEST_WAIT = 180.0


# -- reading the Dockerfile ------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def dockerfile_cmd() -> list[str]:
    (cmd,) = [args for word, args in final_stage() if word == "CMD"]
    argv = json.loads(cmd)  # exec form: gunicorn is PID 1 and receives Cloud Run's SIGTERM
    assert isinstance(argv, list)
    return [str(a) for a in argv]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in final_stage():
        if word == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def stage_image_files(app_dir: Path) -> Path:
    """Copy what the final stage COPYs from the build context into ``app_dir`` (its WORKDIR)."""
    for word, args in final_stage():
        if word != "COPY" or "--from=" in args:
            continue
        *sources, dest = [a for a in shlex.split(args) if not a.startswith("--")]
        target = app_dir / dest
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
    return app_dir


# -- a running container ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Container:
    process: subprocess.Popen[bytes]
    url: str
    media_root: Path
    stdout: Path
    stderr: Path

    def logs(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what} after {timeout:.0f}s")


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_WAIT) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def model_build_step() -> str:
    """The shell command of the final stage's RUN that converts the local labeler's model."""
    steps = [
        part.strip()
        for word, args in final_stage()
        if word == "RUN"
        for part in args.split("&&")
        if "imaging.labeling.local" in part
    ]
    assert len(steps) == 1, f"one model build step in the Dockerfile, not {steps}"
    return steps[0]


def convert_model(models: Path) -> Path:
    """Convert the local labeler's model into ``models`` beforehand by the image build's own
    step (``model_build_step``), in a child as that is: onnxruntime mapped in this process would
    share its pages with a server's master, which then keeps them (gunicorn.conf.py,
    ``release_load_memory``)."""
    environment = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # python: this environment's
        "MODEL_CACHE_DIR": str(models),
    }
    subprocess.run(["sh", "-c", model_build_step()], check=True, cwd=ROOT, env=environment)
    return models


def start_container(tmp: Path, **env: str) -> Container:
    """Run the Dockerfile's CMD on the image's files, as the image's user would (no .env)."""
    app_dir = stage_image_files(tmp / "app")
    media_root = tmp / "media"
    argv = dockerfile_cmd()
    assert argv[0] == "gunicorn"
    executable = BIN / "gunicorn"
    assert executable.exists(), f"gunicorn is not installed next to {sys.executable}"
    port = free_port()
    environment = {
        **dockerfile_env(),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp),
        "PORT": str(port),
        "STORAGE_BACKEND": "local",
        "MEDIA_ROOT": str(media_root),
        "MODEL_CACHE_DIR": str(tmp / "models"),
        "LABELER": "none",
        "SECRET_KEY": "container-test",
        "LOG_FORMAT": "json",
        **env,
    }
    stdout, stderr = tmp / "stdout.log", tmp / "stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [str(executable), *argv[1:]], cwd=app_dir, env=environment, stdout=out, stderr=err
        )
    container = Container(process, f"http://127.0.0.1:{port}", media_root, stdout, stderr)
    wait_healthy(process, container.url, container.logs, "gunicorn")
    return container


def wait_healthy(
    process: subprocess.Popen[bytes], url: str, logs: Callable[[], str], name: str
) -> None:
    """Wait until ``url``'s /healthz answers 200; fail with ``logs()`` if ``process`` exits."""

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited with {process.returncode}:\n{logs()}")
        try:
            return get(f"{url}/healthz")[0] == 200
        except OSError:
            return False

    wait_until(healthy, STARTUP_WAIT, f"{name} to answer /healthz")


def stop(container: Container) -> int:
    if container.process.poll() is None:
        container.process.send_signal(signal.SIGTERM)
    try:
        return container.process.wait(timeout=REQUEST_WAIT)
    except subprocess.TimeoutExpired:
        container.process.kill()
        container.process.wait()
        raise


def multipart(data: bytes, filename: str, **fields: str) -> tuple[bytes, str]:
    """A multipart/form-data body with ``fields`` and one file part named ``image``."""
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    for name, value in fields.items():
        body.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        )
        body.write(f"{value}\r\n".encode())
    body.write(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
    )
    body.write(data)
    body.write(f"\r\n--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


def post_image(
    url: str,
    data: bytes,
    headers: dict[str, str] | None = None,
    *,
    timeout: float = REQUEST_WAIT,
    **fields: str,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """POST one file to ``/api/images`` (form ``fields`` beside it): status, headers, JSON."""
    body, content_type = multipart(data, "photo.jpg", **fields)
    request = urllib.request.Request(
        f"{url}/api/images",
        data=body,
        method="POST",
        headers={"Content-Type": content_type, **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"{}")
