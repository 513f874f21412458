"""What managing costs: the streamed ZIP against one built in memory, and the stats scan.

Run ``.venv/bin/python -m benchmarks.manage`` (about a minute on two cores). Both parts print
ratios against a baseline measured in the same run, never a bare time:

* ZIP: ``GET /api/images.zip`` of ``--images`` incompressible PNGs (about 1 MiB each), read to
  the end through the test client, against the baseline a naive route would use (the same
  entries written by ``zipfile`` into a ``BytesIO``, the whole archive in memory). Figures: the
  peak memory Python allocated while answering (tracemalloc) and the throughput.
* Stats: ``summarize(Catalog.scan(...))`` over catalogs of realistic records (benchmarks.catalog's
  ``make_records``) on LocalStore, against reading one gallery page of the same catalog.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import tempfile
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.catalog import fill, make_records
from benchmarks.machine import cpu_model
from imaging.catalog import Catalog
from imaging.config import Settings
from imaging.stats import summarize
from imaging.storage.local import LocalStore
from tests.uploads import upload_ok


def noise_png(side: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def traced(run: Callable[[], int]) -> tuple[int, int, float]:
    """(bytes produced, peak bytes allocated, seconds) of one run."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        produced = run()
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return produced, peak, seconds


def bench_zip(scratch: Path, count: int) -> list[str]:
    from cloud_image_app import create_app

    settings = Settings(
        media_root=scratch / "zip",
        labeler="none",
        secret_key="bench",  # noqa: S106
        testing=True,
        max_upload_mb=8,
        max_bulk_images=max(100, count),
    ).validated()
    app = create_app(settings)
    client = app.test_client()
    records = [
        upload_ok(client, noise_png(600, n), f"noise{n}.png", format="png") for n in range(count)
    ]
    ids = ",".join(r["id"] for r in records)
    store = LocalStore(settings.media_root)

    def streamed() -> int:
        response = client.get(f"/api/images.zip?ids={ids}")
        return sum(len(chunk) for chunk in response.response)

    def in_memory() -> int:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
            for record in records:
                variant = record["variants"][0]
                key = "img/" + variant["url"].split("/img/", 1)[1]
                archive.writestr(f"{record['id']}.png", store.get(key))
        return len(buffer.getvalue())

    runs: dict[str, list[tuple[int, int, float]]] = {"streamed": [], "in memory": []}
    for _ in range(3):  # alternate, so a busy neighbour slows both alike
        runs["streamed"].append(traced(streamed))
        runs["in memory"].append(traced(in_memory))
    size = runs["streamed"][0][0]
    rows = [
        f"ZIP of {count} incompressible PNGs, {size / 2**20:.1f} MiB (median of 3 runs each)",
        "",
        "| answer | peak memory, MiB | peak / archive | MiB/s |",
        "|---|---:|---:|---:|",
    ]
    medians = {}
    for name, samples in runs.items():
        peak = statistics.median(s[1] for s in samples)
        rate = statistics.median(s[0] / s[2] for s in samples) / 2**20
        medians[name] = (peak, rate)
        rows.append(f"| {name} | {peak / 2**20:.2f} | {peak / size:.3f} | {rate:.0f} |")
    (s_peak, s_rate), (m_peak, m_rate) = medians["streamed"], medians["in memory"]
    rows += [
        "",
        f"streamed / in memory: peak memory {s_peak / m_peak:.3f}x, throughput "
        f"{s_rate / m_rate:.2f}x",
    ]
    return rows


def bench_stats(scratch: Path, sizes: list[int]) -> list[str]:
    rows = [
        "Stats over the catalog on LocalStore (median of 3; baseline: one gallery page of 24)",
        "",
        "| records | stats scan, ms | gallery page, ms | scan / page |",
        "|---:|---:|---:|---:|",
    ]
    for size in sizes:
        root = scratch / f"stats-{size}"
        catalog = Catalog(LocalStore(root))
        fill(catalog, make_records(size, seed=size))
        scans, pages = [], []
        for _ in range(3):
            started = time.perf_counter()
            figures = summarize(catalog.scan(limit=size), limit=size)
            scans.append(time.perf_counter() - started)
            started = time.perf_counter()
            catalog.page(limit=24)
            pages.append(time.perf_counter() - started)
        assert figures.images == size, figures
        scan, page = statistics.median(scans), statistics.median(pages)
        rows.append(f"| {size} | {scan * 1000:.0f} | {page * 1000:.1f} | {scan / page:.0f}x |")
        shutil.rmtree(root, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=30, help="images in the ZIP")
    parser.add_argument("--sizes", default="1000,5000", help="catalog sizes for the stats scan")
    args = parser.parse_args(argv)
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    scratch = Path(tempfile.mkdtemp(prefix="bench-manage-", dir=base))
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"Machine: {cpu_model()}, {os.cpu_count()} cores; load average {load}\n")
        print("\n".join(bench_zip(scratch, args.images)))
        print()
        print("\n".join(bench_stats(scratch, [int(s) for s in args.sizes.split(",")])))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
