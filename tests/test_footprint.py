"""What a worker imports: the default deployment (LocalStore, no event door) loads no Google client.

Google's storage client costs about 32 MB per process, its auth transport about 17 MB and
api_core about 13 MB (measured with VmRSS on this machine); with gunicorn's master and two
workers that is the difference between the whole server fitting issue 13's memory budget or
not. Each case runs ``create_app()`` in a fresh interpreter, so nothing a test imported before
can hide an import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

GOOGLE_CLIENTS = (
    "google.cloud.storage",
    "google.auth.transport.requests",
    "google.api_core",
    "google.cloud.vision",
    "google.genai",
    "grpc",
)

_PROBE = f"""
import json, sys
import cloud_image_app
app = cloud_image_app.create_app()
client = app.test_client()
assert client.get("/healthz").status_code == 200
print(json.dumps(sorted(m for m in {GOOGLE_CLIENTS!r} if m in sys.modules)))
"""


def _imported(tmp_path: Path, **env: str) -> list[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("GCS_", "STORAGE_", "EVENTS_", "TASKS_", "UPLOADS_", "LABELER", "CAPTIONER")
        )
    }
    environment.update(
        {
            "MEDIA_ROOT": str(tmp_path / "media"),
            "MODEL_CACHE_DIR": str(tmp_path / "models"),
            "SECRET_KEY": "footprint-test",
            "LABELER": "none",
            **env,
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_the_default_app_imports_no_google_client(tmp_path: Path) -> None:
    assert _imported(tmp_path) == []


def test_the_event_door_imports_the_auth_transport_only_when_it_is_on(tmp_path: Path) -> None:
    found = _imported(
        tmp_path,
        EVENTS_AUDIENCE="https://images.example.com",
        EVENTS_SERVICE_ACCOUNT="push@example.iam.gserviceaccount.com",
        UPLOADS_BUCKET="uploads",
    )
    assert "google.auth.transport.requests" in found
    assert "google.cloud.storage" not in found  # read on the first event, not at start


@pytest.mark.parametrize("features", ["none", "faces,text"])
def test_the_local_labeler_imports_no_google_client(tmp_path: Path, features: str) -> None:
    assert _imported(tmp_path, LABELER="local", LOCAL_FEATURES=features) == []
