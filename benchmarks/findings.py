"""What finding people and text costs the local labeler: CPU per step, RSS per model, hits.

    .venv/bin/python -m benchmarks.findings            # in one process
    .venv/bin/python -m benchmarks.findings --server   # the whole server's memory, 3 ways
    .venv/bin/python -m benchmarks.findings --text     # which pixels OCR reads best

Builds its pictures in memory (scikit-image's sample photos, portraits tiled into a group, and
screenshots rendered in Pillow's bundled font), labels each as the pipeline does (a JPEG within
640 px), and prints per picture what each step found and its CPU time; then the faces found, OCR
word recall on the screenshots, the OCR runs the pre-check saved, and the resident memory each
model adds to one process. CPU times are process (or child) CPU, median of several rounds.

``--server`` runs the Dockerfile's command (gunicorn, one worker per core, via
``tests/container.py``) with LABELER=none, with the classifier alone (LOCAL_FEATURES=none) and
with every model, sends each the same 24 uploads and prints the resident memory (RSS) of the
master and its workers at the last answer and once they are quiet, and their PSS summed (a page
shared by n processes counted 1/n in each: the memory the server really takes); and how long
the server took to start (until /healthz answers) and to answer its first upload (a worker's
first labelling).
"""

from __future__ import annotations

import io
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from benchmarks.machine import cpu_model, process_tree, resident_mb
from tests.container import convert_model
from tests.images import SCREEN_LINES, group, screenshot, skimage_photo

if TYPE_CHECKING:
    from imaging.labeling.faces import FaceDetector
    from imaging.labeling.local import LocalLabeler
    from imaging.labeling.text import TextReader

ROUNDS = 5
SCREENS = (
    SCREEN_LINES,
    ("Welcome back", "You have 3 new messages", "Open the settings page to change it"),
    ("Build 2417 failed", "3 tests failed in test_pipeline.py", "Retry or open the log"),
)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def label_copy(picture: Image.Image) -> Image.Image:
    small = picture.copy()
    small.thumbnail((640, 640))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=85)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def cpu_ms(step: Callable[[], object], *, children: bool = False) -> float:
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    times = []
    for _ in range(ROUNDS):
        before = resource.getrusage(who)
        started = time.process_time()
        step()
        after = resource.getrusage(who)
        if children:
            times.append(
                (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
            )
        else:
            times.append((time.process_time() - started) * 1000)
    return statistics.median(times)


def words(text: str) -> set[str]:
    return {word.strip(".,:;").lower() for word in text.split()}


def pictures() -> dict[str, Image.Image]:
    """The pictures every step is measured on (benchmarks.labels adds more photos)."""
    found = {
        name: skimage_photo(name)
        for name in ("astronaut", "camera", "coffee", "chelsea", "rocket", "hubble_deep_field")
    }
    found["group of 4"] = group()
    for index, lines in enumerate(SCREENS):
        found[f"screenshot {index + 1}"] = screenshot(lines)
    return found


@dataclass(frozen=True)
class Models:
    """The local labeler's three models, loaded once, with the memory each added."""

    classifier: LocalLabeler  # the classes alone (no faces, no text)
    detector: FaceDetector
    reader: TextReader
    classifier_mb: float
    detector_mb: float


def load_models(cache: Path) -> Models:
    from imaging.labeling.faces import FaceDetector
    from imaging.labeling.local import LocalLabeler
    from imaging.labeling.text import TextReader

    # The model is converted in a child first, as the image build does: what a worker pays is
    # loading the cached model, not the conversion (which imports onnx and its quantiser).
    convert_model(cache)
    base = rss_mb()
    classifier = LocalLabeler(cache_dir=cache)
    classifier.check()
    after_classifier = rss_mb()
    detector = FaceDetector()
    detector.check()
    return Models(
        classifier,
        detector,
        TextReader(timeout=20, cpu_seconds=10),
        after_classifier - base,
        rss_mb() - after_classifier,
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        costs(load_models(Path(cache)), pictures())


def costs(models: Models, pictures: dict[str, Image.Image]) -> None:
    """Print each step's CPU per picture, the faces found, OCR recall and the models' memory."""
    from imaging.labeling.text import likely_text, text_look
    from imaging.processing import LabelImage

    classifier, detector, reader = models.classifier, models.detector, models.reader
    print(f"machine: {cpu_model()}; {ROUNDS} rounds, median CPU ms")
    print(
        f"{'picture':<20} {'faces':>5} {'text?':>5} {'classes':>8} {'faces ms':>8} "
        f"{'check ms':>8} {'OCR ms':>7}  words read"
    )
    recalls = []
    for name, picture in pictures.items():
        small = label_copy(picture)
        buffer = io.BytesIO()
        small.save(buffer, "JPEG", quality=95)
        jpeg = buffer.getvalue()
        faces = detector.detect(small)
        likely = likely_text(small)
        classes = cpu_ms(partial(classifier.label, LabelImage.from_bytes(jpeg)))
        face_ms = cpu_ms(partial(detector.detect, small))
        check_ms = cpu_ms(partial(likely_text, small))
        ocr = "      -"
        paper = text_look(small) == "paper"  # read evened out, as the local labeler does
        if likely:
            # The look runs on the small copy, OCR on the upload's own pixels (as an upload).
            ocr = f"{cpu_ms(partial(reader.ocr, picture, evened=paper), children=True):7.0f}"
        read = ""
        if name.startswith("screenshot "):
            expected = words(" ".join(SCREENS[int(name.split()[-1]) - 1]))
            got = words(reader.ocr(picture, evened=paper).text) if likely else set()
            recalls.append(len(expected & got) / len(expected))
            read = f"{len(expected & got)}/{len(expected)}"
        print(
            f"{name:<20} {len(faces):>5} {'yes' if likely else 'no':>5} {classes:8.1f} "
            f"{face_ms:8.1f} {check_ms:8.1f} {ocr}  {read}"
        )
    print(f"OCR word recall on screenshots: {statistics.mean(recalls):.0%}")
    print(
        f"resident memory: classifier +{models.classifier_mb:.0f} MB, "
        f"face detector +{models.detector_mb:.0f} MB, "
        f"OCR +0 MB (a subprocess per run); process {rss_mb():.0f} MB"
    )


def text_sources() -> None:
    """What Tesseract reads from each picture it could be given: the labelers' 640 px copy
    enlarged 2x (the old path), the 1024 px output's pixels, and the upload's own pixels (now),
    on the screenshot of ``make bench-peers`` and the rendered screenshots."""
    from benchmarks.engine import screenshot as peers_screenshot
    from imaging.labeling.text import TextReader, text_look

    reader = TextReader(timeout=30, cpu_seconds=20)
    peers = Image.open(io.BytesIO(peers_screenshot(1280, 800))).convert("RGB")
    cases = {"peers screenshot": (peers, words(" ".join(peers_words())))}
    for index, lines in enumerate(SCREENS):
        cases[f"screenshot {index + 1}"] = (screenshot(lines), words(" ".join(lines)))
    print(f"machine: {cpu_model()}; OCR CPU ms (median of {ROUNDS}) and words read back")
    print(f"{'picture':<18} {'given':<22} {'size':>10} {'CPU ms':>7} {'words':>9} {'conf':>5}")
    for name, (picture, expected) in cases.items():
        paper = text_look(label_copy(picture)) == "paper"
        given = {
            "640 px copy, 2x": label_copy(picture),
            "1024 px output": picture.resize((1024, 640), Image.Resampling.LANCZOS),
            "own pixels": picture,
        }
        for how, pixels in given.items():
            reading = reader.ocr(pixels, evened=paper)
            ms = cpu_ms(partial(reader.ocr, pixels, evened=paper), children=True)
            got = len(expected & words(reading.text))
            size = f"{pixels.width}x{pixels.height}"
            print(
                f"{name:<18} {how:<22} {size:>10} {ms:7.0f} {got:>4}/{len(expected):<4} "
                f"{reading.confidence:5.2f}"
            )


def peers_words() -> list[str]:
    """The words ``benchmarks.engine.screenshot`` draws."""
    drawn = ["cloud-image-app", "Gallery", "Upload", "API"]
    for row in range(40):
        drawn += f"Folder {row:02d} / album".split()
        drawn += (
            f"IMG_{4000 + row}.HEIC 4032x3024 2.{row % 10} MB labels: cat, sofa, window "
            f"score 0.{90 - row} uploaded 2026-05-{1 + row % 28:02d} 12:{row:02d}"
        ).split()
    return drawn + [f"Button {i}" for i in range(6)]


SERVER_MODES = {
    "labels off": {"LABELER": "none"},
    "classes only": {"LABELER": "local", "LOCAL_FEATURES": "none"},
    "classes, faces, text": {"LABELER": "local"},
}


def tree_rss_mb(root: int) -> dict[int, float]:
    """Resident memory (RSS, MB) of ``root`` and every process under it, by pid."""
    return {pid: resident_mb(pid)[0] for pid in process_tree([root])[0]}


def server() -> None:
    from tests.container import post_image, start_container, stop

    print(f"machine: {cpu_model()}; the Dockerfile's command, 24 uploads each")
    pictures = [skimage_photo("astronaut"), group(), screenshot(), skimage_photo("coffee")] * 6
    for mode, env in SERVER_MODES.items():
        with tempfile.TemporaryDirectory() as tmp:
            # The image converts the model at build time (Dockerfile): so does this, first.
            # Converting in the master instead leaves the builder's heap (onnx, the quantiser)
            # in it and in every worker forked from it: about 100 MB more per process.
            models = Path(tmp) / "models"
            convert_model(models)
            began = time.monotonic()
            running = start_container(Path(tmp), MODEL_CACHE_DIR=str(models), **env)
            started = time.monotonic() - began
            try:
                first = 0.0
                for index, picture in enumerate(pictures):
                    unique = picture.copy()
                    unique.putpixel((0, 0), (index, index, index))  # no duplicate answers
                    buffer = io.BytesIO()
                    unique.save(buffer, "PNG")
                    sent = time.monotonic()
                    status, _, body = post_image(running.url, buffer.getvalue())
                    assert status == 201, body
                    first = first or time.monotonic() - sent
                busy = tree_rss_mb(running.process.pid)
                # gunicorn.conf.py gives freed heap back once a worker is quiet for
                # GUNICORN_IDLE_TRIM_SECONDS (1 s): read again once that has passed.
                time.sleep(2.5)
                rss = tree_rss_mb(running.process.pid)
                pss = sum(resident_mb(pid)[1] for pid in rss)
            finally:
                stop(running)
        each = " + ".join(f"{mb:.0f}" for mb in rss.values())
        print(
            f"{mode:<22} RSS {sum(rss.values()):4.0f} MB (master + workers: {each}), "
            f"PSS {pss:4.0f} MB; at the last answer RSS {sum(busy.values()):4.0f} MB; "
            f"start-up {started:.1f} s (to /healthz), first upload {first:.2f} s"
        )


if __name__ == "__main__":
    import sys

    np.seterr(all="ignore")
    if "--server" in sys.argv[1:]:
        server()
    elif "--text" in sys.argv[1:]:
        text_sources()
    else:
        main()
