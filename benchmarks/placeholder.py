"""Placeholder benchmark: what the ThumbHash and the camera facts add to an upload's render.

Run ``python -m benchmarks.placeholder``. For a 12 MP photo (the full-size pixels, as an upload
without a box holds them) and for the same photo shrunk to 1024 px (an upload with a box), it
times, in one run, the render step's own work (decode + one WebP + the 480 px thumbnail) and
what the gallery work of issue 12 adds to it (``processing.thumbhash`` on the decoded pixels,
``processing.read_camera`` on the opened file), and prints medians and the ratio. Figures, not
asserts: the target is "under a millisecond, whatever the source".
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from functools import partial

from PIL import Image

from benchmarks.engine import photo
from benchmarks.machine import cpu_model
from imaging import processing
from imaging.processing import Limits, RenderSpec

LIMITS = Limits(max_bytes=1 << 30, max_pixels=200_000_000, max_side=16383, max_frames=1)
MAX_SIDE = 16383


def median_ms(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case (median)")
    args = parser.parse_args(argv)
    data = photo(4000, 3000)
    probed = processing.probe(data, LIMITS)
    webp, thumb = RenderSpec("webp"), RenderSpec("webp", 480, 480)
    print(f"machine: {cpu_model()}; median of {args.repeat} runs\n")
    print("| pixels | render step, ms | thumbhash, ms | camera facts, ms | added |")
    print("|---|---:|---:|---:|---:|")
    for label, box in (("4000x3000 (full size)", None), ("1024x768 (a box)", (1024, 1024))):
        specs = [webp if box is None else RenderSpec("webp", *box), thumb]

        def decode(
            specs: list[RenderSpec] = specs, box: tuple[int, int] | None = box
        ) -> processing.Decoded:
            decoded = processing.decode(data, probed, specs=specs, max_side=MAX_SIDE)
            return decoded if box is None else processing.shrink(decoded, box, max_side=MAX_SIDE)

        def render(specs: list[RenderSpec] = specs) -> None:
            decoded = decode()
            for spec in specs:
                processing.render(decoded, spec, max_side=MAX_SIDE, background="#ffffff")

        decoded = decode()
        render_ms = median_ms(render, args.repeat)
        hash_ms = median_ms(partial(processing.thumbhash, decoded), args.repeat * 20)
        camera_ms = median_ms(
            lambda: processing.read_camera(Image.open(io.BytesIO(data))), args.repeat * 20
        )
        added = (hash_ms + camera_ms) / render_ms
        print(f"| {label} | {render_ms:.0f} | {hash_ms:.2f} | {camera_ms:.2f} | {added:.2%} |")


if __name__ == "__main__":
    main()
