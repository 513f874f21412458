"""Is there a cheaper OCR than Tesseract that ships its model in a package? RapidOCR, measured.

    .venv/bin/python -m benchmarks.ocr_engines

Issue 13 asks that the default labeler cost at most 10 % of a conversion; on the screenshot of
``make bench-peers`` the text read alone costs about ten conversions. This benchmark prints what
the one packaged alternative issue 11 named, ``rapidocr-onnxruntime`` (PaddleOCR's detection
and recognition models in ONNX, inside its wheel), costs on the same pictures in the same run:
CPU ms per read (median of 5, one thread each: ``OMP_THREAD_LIMIT=1`` for Tesseract
as the app runs it, ``intra_op_num_threads=1`` for onnxruntime, as a worker has one core), the
words read back, and each read's CPU as a ratio to the baseline measured in the same run: the
whole upload of the bench-peers screenshot with labels off (``benchmarks.upload_cpu``).

RapidOCR is installed into its own venv under ``PEERS_CACHE_DIR`` (outside the repository, like
``make bench-peers``' thumbor), never into the app's, and runs there as a child that reads PNGs
and prints JSON. Not a test and never asserted.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import tempfile
from functools import partial
from pathlib import Path

from PIL import Image

from benchmarks.engine import screenshot as peers_screenshot
from benchmarks.findings import ROUNDS, SCREENS, cpu_ms, peers_words, words
from benchmarks.machine import cpu_model
from benchmarks.peers import CACHE, install_into_venv, say, venv_version
from tests.images import screenshot

RAPIDOCR_REQUIREMENT = "rapidocr-onnxruntime>=1.4,<2"

# Runs in RapidOCR's venv: reads each PNG ``rounds`` times after one warm-up, prints per picture
# the median process CPU ms of a read and the text of the last one.
CHILD = r"""
import json, resource, statistics, sys
from rapidocr_onnxruntime import RapidOCR
rounds, paths = int(sys.argv[1]), sys.argv[2:]
engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
def cpu():
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime
found = {}
for path in paths:
    engine(path, use_cls=False)
    times = []
    for _ in range(rounds):
        before = cpu()
        result, _ = engine(path, use_cls=False)
        times.append((cpu() - before) * 1000)
    found[path] = {"ms": statistics.median(times), "text": "\n".join(r[1] for r in result or [])}
print(json.dumps(found))
"""


def install_rapidocr() -> tuple[Path | None, str]:
    """The python of RapidOCR's venv under the cache, or None and why not."""
    venv = CACHE / "rapidocr-venv"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import rapidocr_onnxruntime"]
    if not python.exists() or subprocess.run(probe, capture_output=True).returncode:
        log = CACHE / "rapidocr-install.log"
        if not install_into_venv(venv, RAPIDOCR_REQUIREMENT, log):
            return None, f"pip install {RAPIDOCR_REQUIREMENT} failed (see {log})"
    return python, venv_version(venv, "rapidocr-onnxruntime")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)

    from benchmarks.upload_cpu import measure
    from imaging.labeling.text import TextReader

    peers = Image.open(io.BytesIO(peers_screenshot(1280, 800))).convert("RGB")
    cases = {"bench-peers screenshot": (peers, words(" ".join(peers_words())))}
    for index, lines in enumerate(SCREENS):
        cases[f"screenshot {index + 1}"] = (screenshot(lines), words(" ".join(lines)))

    python, version = install_rapidocr()
    rapid: dict[str, tuple[float, str]] = {}  # picture: (CPU ms, text read)
    with tempfile.TemporaryDirectory() as scratch:
        paths: dict[str, str] = {}
        for name, (picture, _) in cases.items():
            paths[name] = str(Path(scratch) / f"{len(paths)}.png")
            picture.save(paths[name])
        if python:
            say(f"RapidOCR {version}: {ROUNDS} reads of each picture...")
            done = subprocess.run(
                [str(python), "-c", CHILD, str(ROUNDS), *paths.values()],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode:
                version = f"failed: {done.stderr.strip().splitlines()[-1:]}"
            else:
                by_path = json.loads(done.stdout)
                rapid = {
                    name: (float(by_path[path]["ms"]), str(by_path[path]["text"]))
                    for name, path in paths.items()
                }

    say("the baseline: the bench-peers screenshot's upload, labels off...")
    upload = "1 MP PNG -> 1024 px WebP"
    upload_ms = measure("none", ROUNDS, [upload])[upload]
    reader = TextReader(timeout=60, cpu_seconds=30)
    print(f"machine: {cpu_model()}; CPU ms per read, median of {ROUNDS}, one thread each")
    print(f"RapidOCR: {version}; Tesseract: the app's TextReader (the upload's own pixels)")
    print(f"baseline: the bench-peers screenshot's whole upload, labels off: {upload_ms:.0f} ms")
    print(
        f"{'picture':<24} {'size':>9} | {'Tesseract ms':>12} {'/ upload':>8} {'words':>9} | "
        f"{'RapidOCR ms':>11} {'/ upload':>8} {'words':>9}"
    )
    for name, (picture, expected) in cases.items():
        reading = reader.ocr(picture, evened=False)
        tesseract_ms = cpu_ms(partial(reader.ocr, picture, evened=False), children=True)
        ours = f"{len(expected & words(reading.text))}/{len(expected)}"
        theirs, their_ms, their_ratio = "-", "-", "-"
        if name in rapid:
            ms, text = rapid[name]
            their_ms, their_ratio = f"{ms:.0f}", f"{ms / upload_ms:.1f}x"
            theirs = f"{len(expected & words(text))}/{len(expected)}"
        size = f"{picture.width}x{picture.height}"
        print(
            f"{name:<24} {size:>9} | {tesseract_ms:12.0f} {tesseract_ms / upload_ms:7.1f}x "
            f"{ours:>9} | {their_ms:>11} {their_ratio:>8} {theirs:>9}"
        )


if __name__ == "__main__":
    main()
