"""How search scales: ``?q=`` latency against the plain gallery listing, at 2,000 and 20,000 images.

Run ``.venv/bin/python -m benchmarks.search`` (a few minutes on two cores). For each size it
seeds a LocalStore (in /dev/shm when there is one) with records shaped like the pipeline's
(``benchmarks.catalog.make_records``: two variants, a thumbnail, one to three of fifty labels)
plus colours (one to three of the basic names) and a random 64-bit hash, and writes each
record's index markers (``idx/``, ``phash/``, ``lbl/``) and the record straight to the files
LocalStore would hold: the catalog's own ``marker_keys``, not an upload each. Then, through a
store wrapper that counts every call, it times the newest page (``limit=24``) of:

* baseline  the gallery without ``q`` (``Catalog.page``): the figure every ratio divides by,
            measured in the same run on the same store;
* single words: a label's parent word (``cat``: "Tabby cat" and "Cat" records), a common colour
  (``red``), a word nothing has;
* several words: a rare word with a common one, two common ones, and three words whose
  intersection is nearly empty, the case that walks the furthest.

Each query runs 15 times after one warm-up; the table gives the median and p95, the ratio of
the median to the baseline's, and the storage calls of one run. The claim under test: search
costs O(results) storage calls, not O(catalog), so the ratio stays flat from 2,000 to 20,000.

First it prints what colours and the hash cost an upload: ``processing.appearance`` on a
decoded 2 MP photo (scikit-image's astronaut, scaled up), against decoding that photo (the
baseline, in the same run).
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.catalog import make_records
from benchmarks.machine import cpu_model
from imaging.catalog import Catalog, ImageRecord
from imaging.processing.palette import COLOUR_NAMES, Swatch
from imaging.search import Search
from imaging.storage.local import LocalStore
from tests.faults import CountingStore

SIZES = (2_000, 20_000)
REPEATS = 15
LIMIT = 24
#: Colour names weighted as photos have them: many greys and blues, few purples.
COLOUR_WEIGHTS = {name: 1.0 for name in COLOUR_NAMES} | {
    "grey": 4.0,
    "blue": 3.0,
    "white": 3.0,
    "black": 3.0,
    "brown": 2.0,
    "green": 2.0,
}
QUERIES = (
    ("cat", "parent word (~4 %)"),
    ("red", "common colour"),
    ("zebra", "no such word"),
    ("car red", "rare + common"),
    ("grey blue", "common + common"),
    ("tabby purple beach", "three words, ~empty"),
)


@dataclass(frozen=True)
class Row:
    size: int
    query: str
    what: str
    median_ms: float
    p95_ms: float
    ratio: float
    lists: int
    gets: int
    shown: int


def decorate(records: list[ImageRecord], seed: int) -> list[ImageRecord]:
    """Give each record colours and a hash, as an upload would have."""
    rng = random.Random(seed)
    names, weights = list(COLOUR_WEIGHTS), list(COLOUR_WEIGHTS.values())
    out = []
    for record in records:
        picked = dict.fromkeys(rng.choices(names, weights, k=rng.randint(1, 3)))
        colours = tuple(Swatch("#808080", name, round(1 / len(picked), 3)) for name in picked)
        out.append(replace(record, colours=colours, phash=f"{rng.getrandbits(64):016x}"))
    return out


def seed(root: Path, records: list[ImageRecord]) -> int:
    """Write the records and their markers as LocalStore's files; how many files."""

    def write(record: ImageRecord) -> int:
        keys = record.marker_keys()
        for key in keys:
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        path = root / record.location()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(record.to_json())
        return len(keys) + 1

    with ThreadPoolExecutor(max_workers=8) as pool:
        return sum(pool.map(write, records))


def timed(run: Callable[[], int], store: CountingStore) -> tuple[list[float], int, int, int]:
    run()  # warm-up: the page cache, the pool's threads
    samples = []
    for _ in range(REPEATS):
        store.reset()
        started = time.perf_counter()
        shown = run()
        samples.append((time.perf_counter() - started) * 1000)
    return samples, store.calls["list"], store.calls["get"], shown


def found(search: Search, query: str) -> int:
    return len(search.find(query, limit=LIMIT).records)


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1]


def measure(size: int, scratch: Path) -> tuple[list[Row], int]:
    root = scratch / f"local-{size}"
    records = decorate(make_records(size, seed=size), seed=size)
    files = seed(root, records)
    store = CountingStore(LocalStore(root))
    catalog = Catalog(store)
    search = Search(catalog)
    base, lists, gets, shown = timed(lambda: len(catalog.page(limit=LIMIT).records), store)
    base_ms = statistics.median(base)
    rows = [
        Row(size, "(none)", "baseline: the gallery", base_ms, p95(base), 1.0, lists, gets, shown)
    ]
    for query, what in QUERIES:
        samples, lists, gets, shown = timed(functools.partial(found, search, query), store)
        median = statistics.median(samples)
        rows.append(
            Row(size, query, what, median, p95(samples), median / base_ms, lists, gets, shown)
        )
    return rows, files


def appearance_cost() -> str:
    """The median time of ``appearance`` on a 2 MP photo, and as a share of its decode."""
    from PIL import Image
    from skimage import data

    from imaging import processing
    from tests.images import encode

    photo = encode(Image.fromarray(data.astronaut()).resize((1632, 1224)), "JPEG", quality=90)
    probed = processing.probe(photo, processing.Limits(10**8, 10**8, 10**5, 10))

    def decode() -> processing.Decoded:
        return processing.decode(photo, probed, specs=[], max_side=8192, keep_copyright=False)

    decoded = decode()

    def median_ms(run: Callable[[], object], repeats: int) -> float:
        run()
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            samples.append((time.perf_counter() - started) * 1000)
        return statistics.median(samples)

    decode_ms = median_ms(decode, 15)
    look_ms = median_ms(lambda: processing.appearance(decoded), 200)
    return (
        f"- colours + hash (`processing.appearance`) of a 2 MP photo: median {look_ms:.2f} ms, "
        f"{look_ms / decode_ms:.1%} of its decode ({decode_ms:.0f} ms)"
    )


def table(rows: list[Row]) -> str:
    lines = [
        "| records | q | what | median ms | p95 ms | × baseline | list calls | get calls | shown |",
        "|--:|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.size:,} | `{r.query}` | {r.what} | {r.median_ms:.1f} | {r.p95_ms:.1f} | "
            f"{r.ratio:.2f} | {r.lists} | {r.gets} | {r.shown} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    scratch = Path(tempfile.mkdtemp(prefix="bench-search-", dir=base))
    try:
        cost = appearance_cost()
        rows: list[Row] = []
        notes = []
        for size in args.sizes:
            started = time.perf_counter()
            measured, files = measure(size, scratch)
            rows += measured
            notes.append(
                f"{size:,} records: {files:,} files, {time.perf_counter() - started:.0f} s"
            )
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        report = "\n".join(
            [
                table(rows),
                "",
                cost,
                f"- machine: {cpu_model()}, {os.cpu_count()} cores; load average {load}",
                f"- LocalStore on {'/dev/shm' if base else 'disk'}; " + "; ".join(notes),
            ]
        )
        print(report)
        if args.out:
            args.out.write_text(report + "\n", "utf-8")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
