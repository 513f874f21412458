"""SVG benchmark: what tracing costs against a WebP of the same picture, and where the pre-check
draws the line between flat art and photos.

Run ``python -m benchmarks.vector``. For logos, a screenshot and scikit-image's photos (each as
the pipeline holds it after decoding), it prints the pre-check's busy share and verdict, then for
the pictures it lets through the median time of the SVG render against a WebP q80 render of the
same picture in the same run (the ratio), the SVG's bytes and paths. Photos are traced too, with
the pre-check bypassed, to show what the refusal saves. Figures, not asserts.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from PIL import Image

from benchmarks.machine import cpu_model
from imaging import processing
from imaging.processing import Limits, RenderSpec, TraceLimits, vector
from tests import images

LIMITS = Limits(max_bytes=1 << 30, max_pixels=200_000_000, max_side=16383, max_frames=1)
MAX_SIDE = 16383
UNBOUNDED = TraceLimits(max_side=1024, max_bytes=1 << 30)


def median_ms(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def pictures() -> dict[str, Image.Image]:
    return {
        "logo 400x300": images.logo(400, 300),
        "logo 1600x1200": images.logo(1600, 1200),
        "screenshot 1280x800": images.screenshot(),
        "photo: astronaut 512x512": images.skimage_photo("astronaut"),
        "photo: coffee 600x400": images.skimage_photo("coffee"),
        "photo: chelsea 451x300": images.skimage_photo("chelsea"),
        "photo: camera (grey) 512x512": images.skimage_photo("camera"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case (median)")
    args = parser.parse_args(argv)
    print(f"machine: {cpu_model()}; median of {args.repeat} runs; MAX_BUSY {vector.MAX_BUSY}\n")
    print("| picture | busy share | verdict | svg, ms | webp q80, ms | ratio | svg KB | paths |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    svg, webp = RenderSpec("svg"), RenderSpec("webp")
    for name, im in pictures().items():
        data = images.encode(im.convert("RGB"), "PNG")
        decoded = processing.decode(
            data, processing.probe(data, LIMITS), specs=[svg, webp], max_side=MAX_SIDE
        )
        busy = vector.busy_share(decoded.frames[0].convert("RGBA"))
        verdict = "traced" if busy <= vector.MAX_BUSY else "refused (422)"
        saved = vector.MAX_BUSY
        vector.MAX_BUSY = 1.0  # trace even photos: what a refusal saves
        try:

            def trace(d: processing.Decoded = decoded) -> processing.Rendition:
                return vector.render_svg(
                    d, svg, max_side=MAX_SIDE, background="#ffffff", tracing=UNBOUNDED
                )

            out = trace()
            svg_ms = median_ms(trace, args.repeat)
        finally:
            vector.MAX_BUSY = saved

        def encode(d: processing.Decoded = decoded) -> processing.Rendition:
            return processing.render(d, webp, max_side=MAX_SIDE, background="#ffffff")

        webp_ms = median_ms(encode, args.repeat)
        print(
            f"| {name} | {busy:.3f} | {verdict} | {svg_ms:.0f} | {webp_ms:.1f} | "
            f"{svg_ms / webp_ms:.1f}x | {len(out.data) / 1024:.0f} | {out.data.count(b'<path')} |"
        )


if __name__ == "__main__":
    main()
