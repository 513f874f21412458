"""What keeping the original of a cover upload costs (imaging/refocus.py), and what a bounded
re-encode instead of the raw bytes would cost.

Run ``python -m benchmarks.kept_original [--repeat N]``. For a 2 MP and a 12 MP photo-like JPEG
(``benchmarks.engine.photo``) asked for as ``format=webp&width=800&height=800&fit=cover``, two
pipelines on LocalStores in a temporary directory ingest distinct copies, interleaved round after
round:

- ``not kept``: the baseline, a pipeline whose records keep no original (as before refocus);
- ``raw kept``: the shipped pipeline, which writes the upload's bytes to ``src/<id>/original``.

It prints the median process CPU (every thread) and wall time per upload and the ratio to the
baseline; then, for each way of keeping what a re-crop needs, the CPU of making and writing it
and its bytes: the raw upload (shipped), or the decoded pixels at the size the cover output is
cut from (the least a re-crop needs) as a q95 JPEG or, for pictures with alpha, a PNG.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> None:
    from benchmarks.engine import photo
    from imaging.catalog import Catalog, ImageRecord
    from imaging.config import Settings
    from imaging.labeling import build_labeler
    from imaging.pipeline import Pipeline, UploadOptions
    from imaging.processing import Rendition
    from imaging.storage.local import LocalStore

    class NotKept(Pipeline):
        """The pipeline as it was before originals were kept."""

        def _store(
            self,
            record: ImageRecord,
            renditions: dict[str, Rendition],
            written: list[str],
            *,
            original: bytes = b"",
        ) -> None:
            super()._store(dataclasses.replace(record, original={}), renditions, written)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    options = UploadOptions(formats=("webp",), width=800, height=800, fit="cover")
    inputs = {"2 MP JPEG": photo(1632, 1224), "12 MP JPEG": photo(4000, 3000)}
    print(f"-> 800x800 WebP, fit=cover; median of {args.repeat} rounds, interleaved")
    print("| input | run | CPU ms per upload | vs not kept | wall ms | vs not kept |")
    print("|---|---|---:|---:|---:|---:|")
    alternatives: dict[str, dict[str, tuple[float, int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, data in inputs.items():
            pipelines: dict[str, Pipeline] = {}
            for name, kind in (("not kept", NotKept), ("raw kept", Pipeline)):
                settings = Settings(
                    media_root=Path(tmp) / f"{label}-{name}".replace(" ", ""), labeler="none"
                )
                store = LocalStore(settings.media_root)
                pipelines[name] = kind(settings, store, build_labeler(settings), Catalog(store))
            cpu: dict[str, list[float]] = {name: [] for name in pipelines}
            wall: dict[str, list[float]] = {name: [] for name in pipelines}
            serial = 0
            for round_ in range(args.repeat + 1):
                for name, pipeline in pipelines.items():
                    serial += 1
                    unique = data + serial.to_bytes(4, "big")  # no duplicate answers
                    start_cpu, start_wall = time.process_time(), time.perf_counter()
                    result = pipeline.ingest(unique, options)
                    if round_:  # the first round warms up
                        cpu[name].append(time.process_time() - start_cpu)
                        wall[name].append(time.perf_counter() - start_wall)
                    assert result.record.receipt.get("crop")
            kept = {name: len(p.store.list("src/", limit=1000)) for name, p in pipelines.items()}
            assert kept == {"not kept": 0, "raw kept": args.repeat + 1}, kept
            base_cpu, base_wall = (
                statistics.median(cpu["not kept"]),
                statistics.median(wall["not kept"]),
            )
            for name in pipelines:
                c, w = statistics.median(cpu[name]), statistics.median(wall[name])
                print(
                    f"| {label} | {name} | {c * 1000:.1f} | {c / base_cpu:.3f}x "
                    f"| {w * 1000:.1f} | {w / base_wall:.3f}x |"
                )
            alternatives[label] = _reencoded(pipelines["raw kept"], data, options, args.repeat)
    print()
    print("| input | kept as | CPU ms to make and write it | bytes kept |")
    print("|---|---|---:|---:|")
    for label, rows in alternatives.items():
        for name, (ms, size) in rows.items():
            print(f"| {label} | {name} | {ms:.1f} | {size:,} |")


def _reencoded(pipeline: Any, data: bytes, options: Any, repeat: int) -> dict[str, Any]:
    """Each way to keep what a re-crop needs, with the median CPU ms of making and writing it
    (to the pipeline's LocalStore) and its bytes: the raw upload (a write only), or the decoded
    pixels resampled to the cover's scale-to size and encoded as a q95 JPEG or a PNG."""
    from PIL import Image

    from imaging import processing
    from imaging.processing.geometry import target_size

    specs = pipeline._specs(options)
    decoded = pipeline._decode(data, processing.probe(data, pipeline.limits), specs)
    size, _ = target_size(decoded.width, decoded.height, specs["webp"], 1 << 20)

    def raw() -> bytes:
        return data

    def encoded(fmt: str, **params: Any) -> Any:
        def make() -> bytes:
            buf = io.BytesIO()
            decoded.frames[0].resize(size, Image.Resampling.LANCZOS).save(buf, fmt, **params)
            return buf.getvalue()

        return make

    ways = {
        "raw bytes (shipped)": raw,
        f"{size[0]}x{size[1]} JPEG q95": encoded("JPEG", quality=95),
        f"{size[0]}x{size[1]} PNG": encoded("PNG"),
    }
    rows: dict[str, Any] = {}
    serial = 0
    for name, make in ways.items():
        times, out = [], b""
        for _ in range(repeat):
            serial += 1
            start = time.process_time()
            out = make()
            pipeline.store.put(f"bench/{serial}", out, content_type="application/octet-stream")
            times.append(time.process_time() - start)
        rows[name] = (statistics.median(times) * 1000, len(out))
    return rows


if __name__ == "__main__":
    main()
