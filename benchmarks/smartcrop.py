"""What smart crop costs: CPU and wall time per ``fit=cover`` upload, against the centre crop.

Run ``python -m benchmarks.smartcrop [--repeat N]``. Each round ingests distinct copies of one
2 MP photo-like JPEG (``benchmarks.engine.photo``, 1632x1224, with scikit-image's astronaut
pasted off-centre: a face to find) as ``format=webp&width=300&height=300&fit=cover``
through ``Pipeline.ingest`` on a LocalStore in a temporary directory, in four pipelines built in
the same process and run interleaved, round after round:

- ``centre``: ``SMART_CROP=off``, no labeler: the baseline;
- ``saliency``: ``SMART_CROP=on``, no labeler: the edge-energy window (no face detector to ask);
- ``centre + faces``: ``SMART_CROP=off``, the local labeler with faces (detected in the label
  thread, beside the encodes);
- ``faces``: ``SMART_CROP=on``, the same labeler: faces detected once before the encodes, reused
  by the labels.

It prints the median process CPU time (``time.process_time``: every thread) and wall time per
upload, and each smart row's ratio to its centre row. CPU is what throughput is made of; the
wall time shows what detecting faces before the encodes (not beside them) adds to latency.
A whole upload's CPU also moves with what the window holds (the encoder spends more on detail),
so a second table times the choice alone: ``processing.frame`` on the decoded pixels (the
saliency map), and the face detector on the labelers' copy.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def with_face() -> bytes:
    """The 2 MP photo-like JPEG with a 600 px portrait pasted right of centre, q90."""
    from PIL import Image
    from skimage import data as samples

    from benchmarks.engine import photo

    picture = Image.open(io.BytesIO(photo(1632, 1224))).convert("RGB")
    picture.paste(Image.fromarray(samples.astronaut()).resize((600, 600)), (1000, 300))
    buf = io.BytesIO()
    picture.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    from imaging.catalog import Catalog
    from imaging.config import Settings
    from imaging.labeling import build_labeler
    from imaging.pipeline import Pipeline, UploadOptions
    from imaging.storage.local import LocalStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    data = with_face()
    options = UploadOptions(formats=("webp",), width=300, height=300, fit="cover")
    runs = {
        "centre": ("off", "none"),
        "saliency": ("on", "none"),
        "centre + faces": ("off", "local"),
        "faces": ("on", "local"),
    }
    cache = Path(os.environ.get("MODEL_CACHE_DIR", "/tmp/upload-cpu-models"))
    with tempfile.TemporaryDirectory() as tmp:
        pipelines = {}
        for name, (smart, labeler) in runs.items():
            settings = Settings(
                media_root=Path(tmp) / name.replace(" ", ""),
                model_cache_dir=cache,
                labeler=labeler,
                smart_crop=smart,
                local_features=("faces",),
            )
            store = LocalStore(settings.media_root)
            labels = build_labeler(settings)
            labels.check()  # load the models before timing
            pipelines[name] = Pipeline(settings, store, labels, Catalog(store))
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        wall: dict[str, list[float]] = {name: [] for name in runs}
        crops: dict[str, str] = {}
        serial = 0
        for round_ in range(args.repeat + 1):
            for name, pipeline in pipelines.items():
                serial += 1
                unique = data + serial.to_bytes(4, "big")  # distinct bytes: no duplicate answer
                start_cpu, start_wall = time.process_time(), time.perf_counter()
                result = pipeline.ingest(unique, options)
                if round_:  # the first round is a warm-up
                    cpu[name].append(time.process_time() - start_cpu)
                    wall[name].append(time.perf_counter() - start_wall)
                crops[name] = str(result.record.receipt.get("crop"))
        choice = _choice_ms(pipelines["faces"], data, options, args.repeat * 4)
    print(f"2 MP JPEG -> 300x300 WebP, fit=cover; median of {args.repeat} rounds, interleaved")
    print("| run | receipt crop | CPU ms per upload | vs centre | wall ms | vs centre |")
    print("|---|---|---:|---:|---:|---:|")
    for name in runs:
        base = "centre + faces" if name in ("faces", "centre + faces") else "centre"
        c, w = statistics.median(cpu[name]) * 1000, statistics.median(wall[name]) * 1000
        bc, bw = statistics.median(cpu[base]) * 1000, statistics.median(wall[base]) * 1000
        print(f"| {name} | {crops[name]} | {c:.1f} | {c / bc:.3f}x | {w:.1f} | {w / bw:.3f}x |")
    print()
    print("| the choice alone | CPU ms |")
    print("|---|---:|")
    for name, ms in choice.items():
        print(f"| {name} | {ms:.2f} |")


def _choice_ms(pipeline: Any, data: bytes, options: Any, repeat: int) -> dict[str, float]:
    """Median CPU ms of the saliency window and of the face detector, each alone."""
    from imaging import processing
    from imaging.processing import LabelImage

    specs = pipeline._specs(options)
    decoded = pipeline._decode(data, processing.probe(data, pipeline.limits), specs)
    box = pipeline.settings.presets["label"]
    saliency, faces = [], []
    for _ in range(repeat):
        start = time.process_time()
        processing.frame(decoded, specs, max_side=pipeline.settings.max_output_side)
        saliency.append(time.process_time() - start)
        copy = LabelImage.of(decoded, box=(box.width, box.height), background="#ffffff")
        start = time.process_time()
        pipeline.labeler.faces_in(copy)
        faces.append(time.process_time() - start)
    return {
        "saliency window (`processing.frame`, no faces given)": statistics.median(saliency) * 1000,
        "face detector on the labelers' copy": statistics.median(faces) * 1000,
    }


if __name__ == "__main__":
    main()
