"""Resampler benchmark: the main output's downscale with libvips' lanczos3 against Pillow's
Lanczos (RESAMPLER=vips / pillow), in one run, interleaved.

Run ``python -m benchmarks.resampler [--repeat N]``. For the 2 MP and 12 MP photo-like JPEGs and
the 1 MP screenshot PNG of ``benchmarks.engine`` (-> 1024 px WebP, the issue's upload), it prints
the CPU (``time.process_time``, median of N calls alternating between the two) of the resize
alone on the decoded pixels and of a whole ``Pipeline.ingest`` (labels off, LocalStore in a
temporary directory) with each resampler; the main output's bytes; its SSIM against a
full-resolution reference (the source decoded at full size, one Pillow Lanczos pass) and the
SSIM of libvips' output to Pillow's; and issue 13's bound: bytes and SSIM of the shipped output
(``RESAMPLER=vips``, the default effort) against Pillow's method-4 output (Lanczos all the way,
WebP method 4, q80) of the same decode. Then the memory pyvips adds to one process (RSS and PSS
after importing it and after a few resizes with it), measured in fresh child processes.
libvips runs on one thread, its cache off (as the app runs it). Figures, not asserts.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from benchmarks.engine import photo, screenshot

RESAMPLERS = ("pillow", "vips")
#: The ``RenderSpec.resample`` each setting renders the main output with.
FILTERS = {"pillow": "lanczos", "vips": "lanczos3"}


def _inputs() -> dict[str, tuple[bytes, int]]:
    return {
        "2 MP JPEG": (photo(1632, 1224), 1024),
        "12 MP JPEG": (photo(4000, 3000), 1024),
        "1 MP PNG": (screenshot(1280, 800), 1024),
    }


def _paired(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median CPU ms of each of ``runs``, called in turn ``repeat`` times (after a warm-up):
    alternating, so whatever else loads the shared machine weighs on each alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(repeat + 1):
        for name, run in runs.items():
            start = time.process_time()
            run()
            if i:
                times[name].append((time.process_time() - start) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def _ssim(a: Image.Image, b: Image.Image) -> float:
    import numpy as np
    from skimage.metrics import structural_similarity

    a, b = a.convert("RGB"), b.convert("RGB")
    return float(structural_similarity(np.asarray(a), np.asarray(b), channel_axis=2))


class _Uploads:
    """Ingests distinct copies of one upload (one more byte each: never a duplicate answer)."""

    def __init__(self, data: bytes, options: Any) -> None:
        self.data, self.options, self.serial = data, options, 0

    def __call__(self, pipeline: Any) -> object:
        self.serial += 1
        return pipeline.ingest(self.data + self.serial.to_bytes(4, "big"), self.options)


def measure(repeat: int) -> list[dict[str, object]]:
    """One row per input: resize and ingest CPU for each resampler, bytes and SSIM."""
    from imaging import processing
    from imaging.catalog import Catalog
    from imaging.config import Settings
    from imaging.labeling import build_labeler
    from imaging.pipeline import Pipeline, UploadOptions
    from imaging.processing.geometry import fit_frame
    from imaging.storage.local import LocalStore

    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        pipelines = {}
        for name in RESAMPLERS:
            settings = Settings(
                media_root=Path(tmp) / name, labeler="none", resampler=name, max_upload_mb=100
            )
            store = LocalStore(settings.media_root)
            pipelines[name] = Pipeline(settings, store, build_labeler(settings), Catalog(store))
        for source, (data, width) in _inputs().items():
            options = UploadOptions(formats=("webp",), width=width)
            pipe = pipelines["pillow"]
            specs = pipe._specs(options)
            decoded = processing.decode(
                data,
                processing.probe(data, pipe.limits),
                specs=list(specs.values()),
                max_side=pipe.settings.max_output_side,
            )
            size, _ = processing.target_size(
                decoded.width, decoded.height, specs["webp"], pipe.settings.max_output_side
            )
            frame = decoded.frames[0]
            row: dict[str, object] = {
                "case": f"{source} -> {width} px WebP",
                "decoded": f"{frame.width}x{frame.height} -> {size[0]}x{size[1]}",
            }
            outputs = {}
            uploads = _Uploads(data, options)
            resize = _paired(
                {
                    name: functools.partial(fit_frame, frame, size, None, None, filter_)
                    for name, filter_ in FILTERS.items()
                },
                repeat,
            )
            ingest = _paired(
                {name: functools.partial(uploads, pipelines[name]) for name in RESAMPLERS}, repeat
            )
            for name, filter_ in FILTERS.items():
                spec = dataclasses.replace(specs["webp"], resample=filter_)
                rendition = processing.render(
                    processing.shared_fit(decoded, [spec], max_side=pipe.settings.max_output_side),
                    spec,
                    max_side=pipe.settings.max_output_side,
                    background="#ffffff",
                )
                outputs[name] = rendition.data
                row[f"resize {name} ms"] = resize[name]
                row[f"ingest {name} ms"] = ingest[name]
                row[f"bytes {name}"] = len(rendition.data)
            # Pillow's method-4 output: its Lanczos to the output size (even for a short step
            # up, which the engine takes bicubic), WebP method 4: what issue 13 bounds against.
            buf = io.BytesIO()
            frame.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0).save(
                buf, "WEBP", quality=80, method=4
            )
            outputs["method 4"] = buf.getvalue()
            row["bytes method 4"] = len(outputs["method 4"])
            reference = Image.open(io.BytesIO(data)).convert("RGB")
            out = {n: Image.open(io.BytesIO(b)) for n, b in outputs.items()}
            reference = reference.resize(out["pillow"].size, Image.Resampling.LANCZOS)
            for name in (*RESAMPLERS, "method 4"):
                row[f"ssim {name}"] = _ssim(out[name], reference)
            row["ssim vips to pillow"] = _ssim(out["vips"], out["pillow"])
            rows.append(row)
    return rows


def _memory_child(use_vips: str) -> None:
    """In a fresh process: the app imported, then pyvips imported, then 5 uploads converted."""
    from imaging import processing
    from imaging.processing.geometry import fit_frame

    data = photo(1632, 1224)
    frame = Image.open(io.BytesIO(data)).convert("RGB")
    fit_frame(frame, (1024, 768), None)  # Pillow's resize once, in both
    report = {"app": _smaps()}
    if use_vips == "1":
        processing.libvips_available()
        report["imported"] = _smaps()
    for _ in range(5):
        fit_frame(frame, (1024, 768), None, None, "lanczos3" if use_vips == "1" else "lanczos")
    report["used"] = _smaps()
    print(json.dumps(report))


def _smaps() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        if key in ("Rss", "Pss"):
            out[key] = int(value.split()[0]) / 1024
    return out


def memory() -> dict[str, dict[str, dict[str, float]]]:
    result = {}
    for use in ("0", "1"):
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.resampler", "--memory-child", use],
            check=True,
            capture_output=True,
            text=True,
        )
        result["vips" if use == "1" else "pillow"] = json.loads(done.stdout)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        _memory_child(args.memory_child)
        return
    print("| case | resize Pillow ms | resize libvips ms | ingest Pillow ms | ingest libvips ms |")
    print("|---|---:|---:|---:|---:|")
    rows = measure(args.repeat)
    for r in rows:
        print(
            f"| {r['case']} ({r['decoded']}) | {r['resize pillow ms']:.1f} | "
            f"{r['resize vips ms']:.1f} | {r['ingest pillow ms']:.0f} | "
            f"{r['ingest vips ms']:.0f} |"
        )
    print()
    print("| case | bytes Pillow | bytes libvips | SSIM Pillow | SSIM libvips | SSIM to Pillow |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        bp, bv = int(str(r["bytes pillow"])), int(str(r["bytes vips"]))
        print(
            f"| {r['case']} | {bp} | {bv} ({bv / bp - 1:+.1%}) | {r['ssim pillow']:.4f} | "
            f"{r['ssim vips']:.4f} | {r['ssim vips to pillow']:.4f} |"
        )
    print()
    print("| case | bytes method 4 | bytes shipped | SSIM method 4 | SSIM shipped |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        b4, bv = int(str(r["bytes method 4"])), int(str(r["bytes vips"]))
        s4, sv = float(str(r["ssim method 4"])), float(str(r["ssim vips"]))
        print(
            f"| {r['case']} | {b4} | {bv} ({bv / b4 - 1:+.1%}) | {s4:.4f} | "
            f"{sv:.4f} ({sv - s4:+.4f}) |"
        )
    print()
    mem = memory()
    pillow, vips = mem["pillow"], mem["vips"]
    for key in ("Rss", "Pss"):
        print(
            f"- {key}: app {vips['app'][key]:.0f} MB; pyvips imported +"
            f"{vips['imported'][key] - vips['app'][key]:.1f} MB; after 5 resizes "
            f"+{vips['used'][key] - vips['app'][key]:.1f} MB with libvips against "
            f"+{pillow['used'][key] - pillow['app'][key]:.1f} MB with Pillow alone"
        )


if __name__ == "__main__":
    main()
