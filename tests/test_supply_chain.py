"""What the container installs is pinned: the base image by digest, every package by hash.

requirements.txt names the runtime dependencies; requirements.lock (``make lock``) pins them and
everything they pull in, each with the hashes of its files, and the Dockerfile installs only the
lock, with ``--require-hashes``. These tests keep the three in step without a network or a
Docker engine.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
LOCK = (ROOT / "requirements.lock").read_text()
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s\\;]+)", re.M)


def pins(text: str) -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in _PIN.findall(text)}


def locked_entries() -> dict[str, str]:
    """Each locked package's whole entry (its pin line and its --hash lines)."""
    entries: dict[str, str] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", LOCK):
        match = _PIN.match(block)
        if match:
            entries[canonicalize_name(match[1])] = block
    return entries


def test_every_base_image_is_pinned_by_digest() -> None:
    image = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert image, "the Dockerfile names its base image once, in ARG PYTHON_IMAGE"
    assert re.fullmatch(r"python:[0-9.]+-slim-bookworm@sha256:[0-9a-f]{64}", image[1])
    froms = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert froms
    assert all(f == "${PYTHON_IMAGE}" for f in froms)


def test_the_image_installs_only_the_lock_and_requires_hashes() -> None:
    installs = [line.strip() for line in DOCKERFILE.splitlines() if "pip install" in line]
    assert installs == [
        "RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock \\",
        "&& pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements-nodeps.txt",
    ]
    assert "COPY requirements.lock requirements-nodeps.txt /tmp/" in DOCKERFILE


def test_every_data_only_package_is_pinned_with_hashes() -> None:
    """requirements-nodeps.txt (installed with --no-deps) pins each package exactly, hashed."""
    text = (ROOT / "requirements-nodeps.txt").read_text()
    entries = [e for e in re.split(r"\n(?=[a-z])", text) if not e.startswith("#") and e.strip()]
    assert entries
    for entry in entries:
        assert re.match(r"[a-z0-9-]+==[0-9.]+ \\\n", entry), entry
        assert "--hash=sha256:" in entry, entry


def test_every_locked_package_carries_hashes() -> None:
    entries = locked_entries()
    assert entries
    unhashed = [name for name, entry in entries.items() if "--hash=sha256:" not in entry]
    assert unhashed == []
    assert "--find-links" not in LOCK
    assert "--index-url" not in LOCK


def test_the_lock_pins_what_requirements_txt_pins() -> None:
    wanted = pins((ROOT / "requirements.txt").read_text())
    locked = pins(LOCK)
    assert {name: locked.get(name) for name in wanted} == wanted


def test_the_lock_holds_every_package_the_runtime_pulls_in() -> None:
    """Walk the installed dependency tree from requirements.txt: each node is locked, same version.

    This is what goes stale when requirements.txt changes and ``make lock`` is not run.
    """
    locked = pins(LOCK)
    environment = {key: str(value) for key, value in default_environment().items()}
    environment["extra"] = ""
    todo = list(pins((ROOT / "requirements.txt").read_text()))
    seen: set[str] = set()
    missing: dict[str, str] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        installed = metadata.version(name)
        if locked.get(name) != installed:
            missing[name] = installed
        for raw in metadata.requires(name) or []:
            requirement = Requirement(raw)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                todo.append(canonicalize_name(requirement.name))
    assert missing == {}
