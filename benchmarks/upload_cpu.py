"""CPU per upload: ``Pipeline.ingest`` in-process, labels off and on, against another checkout.

Run ``python -m benchmarks.upload_cpu [--against /path/to/other/checkout]``. It ingests distinct
copies of each input (a 2 MP and a 12 MP photo-like JPEG, a 1 MP screenshot PNG; the issue's
``format=webp&width=1024``, and a 48 MP JPEG with no width) into a LocalStore in a temporary
directory and prints the process CPU time (``time.process_time``: every thread, so the labeller's
too) per upload, and with a labeler the CPU of the labelling alone (the labelers' copy and the
labeler's call, on pixels already decoded). CPU time is what throughput is made of (2 cores /
CPU per request) and is far
less sensitive to other work on a shared machine than wall time.

With ``--against``, the same measurement runs in a child process on that checkout's code (e.g.
the main branch) in the same run, interleaved, and the table shows the ratio. With
``--labelling-only ROUNDS`` only the labelling alone is measured, in that many rounds that each
run this checkout and then the other (``--repeat`` labellings per case in each), and the table
shows the medians over the rounds and the median (and range) of each round's own ratio: the
ratio that issue 13's "labelling costs at most 10 ms" is followed with.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CASES = {
    "2 MP JPEG -> 1024 px WebP": ("jpeg2", 1024),
    "12 MP JPEG -> 1024 px WebP": ("jpeg12", 1024),
    "1 MP PNG -> 1024 px WebP": ("png1", 1024),
}


def _inputs() -> dict[str, bytes]:
    from benchmarks.engine import photo, screenshot

    return {
        "jpeg2": photo(1632, 1224),
        "jpeg12": photo(4000, 3000),
        "png1": screenshot(1280, 800),
    }


def measure(
    labeler: str, repeat: int, cases: list[str], *, ingest: bool = True
) -> dict[str, float]:
    """Median CPU ms per upload for each case, on the code importable from here (without
    ``ingest``: only the labelling alone)."""
    from imaging.catalog import Catalog
    from imaging.config import Settings
    from imaging.labeling import build_labeler
    from imaging.pipeline import Pipeline, UploadOptions
    from imaging.storage.local import LocalStore

    inputs = _inputs()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            media_root=Path(tmp) / "media",
            model_cache_dir=Path(os.environ.get("MODEL_CACHE_DIR", "/tmp/upload-cpu-models")),
            labeler=labeler,
            max_upload_mb=100,
        )
        store = LocalStore(settings.media_root)
        labels = build_labeler(settings)
        labels.check()  # load the model before timing
        pipeline = Pipeline(settings, store, labels, Catalog(store))
        serial = 0
        for case in cases:
            source, width = CASES[case]
            data = inputs[source]
            times = []
            for i in range(repeat + 1 if ingest else 0):
                serial += 1
                unique = data + serial.to_bytes(4, "big")  # distinct bytes: no duplicate answer
                options = UploadOptions(formats=("webp",), width=width)
                start = time.process_time()
                pipeline.ingest(unique, options)
                if i:  # the first is a warm-up
                    times.append(time.process_time() - start)
            if times:
                out[case] = statistics.median(times) * 1000
            if labeler != "none":
                out[f"{case} / labelling"] = _labelling_ms(pipeline, data, width, repeat)
    return out


def _labelling_ms(pipeline: Any, data: bytes, width: int, repeat: int) -> float:
    """CPU ms of the labelling alone: making the labelers' copy from the decoded pixels, and the
    labeler on it (through the pipeline's own steps, so either checkout's way of doing it)."""
    from imaging.pipeline import UploadOptions
    from imaging.processing import probe

    specs = pipeline._specs(UploadOptions(formats=("webp",), width=width))
    source = pipeline._decode(data, probe(data, pipeline.limits), specs)
    decoded = pipeline._shared_fit(source, specs) if hasattr(pipeline, "_shared_fit") else source
    times = []
    for i in range(repeat + 1):
        start = time.process_time()
        # The copy is made by its own step since smart crop (which reads faces off it first);
        # since the shared small copy it is made from the fitted pixels, the text reader's
        # from the decode itself.
        if not hasattr(pipeline, "_label_copy"):
            copy = decoded
        elif len(inspect.signature(pipeline._label_copy).parameters) == 2:
            copy = pipeline._label_copy(decoded, source)
        else:
            copy = pipeline._label_copy(decoded)
        pipeline._collect_labels(pipeline._start_labelling(copy), time.monotonic())
        if i:
            times.append(time.process_time() - start)
    return statistics.median(times) * 1000


def _child(
    checkout: str, labeler: str, repeat: int, cases: list[str], *, ingest: bool = True
) -> dict[str, float]:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2]);"
        "from benchmarks_upload_cpu import measure;"
        "print(json.dumps(measure(sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5]),"
        " ingest=sys.argv[6] == '1')))"
    )
    with tempfile.TemporaryDirectory() as shim:
        # This script, importable under a name that cannot clash with the other checkout's own.
        Path(shim, "benchmarks_upload_cpu.py").write_text(Path(__file__).read_text())
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                checkout,
                shim,
                labeler,
                str(repeat),
                json.dumps(cases),
                "1" if ingest else "0",
            ],
            check=True,
            capture_output=True,
            text=True,
            cwd=checkout,
        )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--against", help="another checkout to measure in the same run")
    parser.add_argument("--labelers", default="none,local")
    parser.add_argument(
        "--labelling-only",
        type=int,
        metavar="ROUNDS",
        help="only the labelling alone, this many rounds alternating the two checkouts",
    )
    args = parser.parse_args(argv)
    here = str(Path(__file__).resolve().parents[1])
    cases = list(CASES)
    if args.labelling_only:
        _labelling_rounds(here, args.against, args.labelers, args.repeat, args.labelling_only)
        return
    extra = "baseline ms | ratio |" if args.against else ""
    print("| case | labeler | CPU ms per upload | " + extra)
    print("|---|---|---:|" + ("---:|---:|" if args.against else ""))
    for labeler in args.labelers.split(","):
        ours = _child(here, labeler, args.repeat, cases)
        theirs = _child(args.against, labeler, args.repeat, cases) if args.against else {}
        for case in ours:
            row = f"| {case} | {labeler} | {ours[case]:.0f} |"
            if theirs:
                row += f" {theirs[case]:.0f} | {ours[case] / theirs[case]:.2f}x |"
            print(row, flush=True)


def _labelling_rounds(
    here: str, against: str | None, labelers: str, repeat: int, rounds: int
) -> None:
    """The labelling alone, in ``rounds`` rounds that each measure this checkout and then the
    other one: the medians of the rounds, and the median (and range) of each round's ratio."""
    cases = list(CASES)
    for labeler in labelers.split(","):
        if labeler == "none":
            continue
        ours: dict[str, list[float]] = {}
        theirs: dict[str, list[float]] = {}
        for _ in range(rounds):
            for side, checkout in ((ours, here), (theirs, against)):
                if checkout is None:
                    continue
                for case, ms in _child(checkout, labeler, repeat, cases, ingest=False).items():
                    side.setdefault(case, []).append(ms)
        for case, values in ours.items():
            row = f"| {case} | {labeler} | {statistics.median(values):.1f} |"
            if case in theirs:
                # Each round's own ratio: its two sides ran minutes apart, not the whole run.
                ratios = [a / b for a, b in zip(values, theirs[case], strict=True)]
                row += (
                    f" {statistics.median(theirs[case]):.1f} | {statistics.median(ratios):.2f}x"
                    f" ({min(ratios):.2f}-{max(ratios):.2f}) |"
                )
            print(row, flush=True)


if __name__ == "__main__":
    main()
