"""Encoder settings by measurement: every effort setting of each output format, in one run.

Run ``python -m benchmarks.encoders``. For a few real photos (scikit-image's sample photos, and
the engine benchmark's photo-like 2 MP cat downscaled to the 1024 px a typical output has) and a
screenshot, it encodes each format at each effort setting and prints the encode CPU time
(``time.process_time``, median of ``--repeat``: less sensitive to a shared machine than wall
time), the bytes and the SSIM against the encoder's input, each as a ratio or a difference to
Pillow's default effort for that format (WebP method 4, AVIF speed 6, JPEG baseline without
optimised tables, PNG compress_level 6) measured in the same run.

The effort chosen for ``ENCODER_EFFORT=fast`` (``imaging.formats``) is the cheapest setting whose
output stays within +5 % bytes and -0.005 SSIM of that default on every photo.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from benchmarks.engine import photo, screenshot
from benchmarks.machine import cpu_model

#: What the fast defaults may cost against Pillow's default effort, on every photo.
MAX_BYTES_RATIO = 1.05
MAX_SSIM_LOSS = 0.005


@dataclass(frozen=True)
class Setting:
    name: str
    params: Mapping[str, object]
    default: bool = False  # Pillow's own default effort for the format: the baseline


#: format -> (Pillow format, the settings tried); quality is the app's default for the format.
GRID: dict[str, tuple[str, list[Setting]]] = {
    "webp": (
        "WEBP",
        [Setting(f"method {m}", {"quality": 80, "method": m}, default=m == 4) for m in range(7)],
    ),
    "avif": (
        "AVIF",
        [
            Setting(f"speed {s}", {"quality": 60, "speed": s, "max_threads": 1}, default=s == 6)
            for s in (4, 6, 7, 8, 9, 10)
        ],
    ),
    "jpeg": (
        "JPEG",
        [
            Setting("baseline", {"quality": 85}, default=True),
            Setting("optimize", {"quality": 85, "optimize": True}),
            Setting("progressive", {"quality": 85, "progressive": True}),
        ],
    ),
    "png": (
        "PNG",
        [Setting(f"level {c}", {"compress_level": c}, default=c == 6) for c in (1, 3, 6, 9)]
        + [Setting("optimize", {"optimize": True})],
    ),
}


def inputs() -> dict[str, Image.Image]:
    from skimage import data as samples

    cat = Image.open(io.BytesIO(photo(1632, 1224))).convert("RGB")
    return {
        "cat 1024x768": cat.resize((1024, 768), Image.Resampling.LANCZOS),
        "coffee 600x400": Image.fromarray(samples.coffee()),
        "astronaut 512x512": Image.fromarray(samples.astronaut()),
        "screenshot 1280x800": Image.open(io.BytesIO(screenshot())).convert("RGB"),
    }


def encode(im: Image.Image, fmt: str, params: Mapping[str, object]) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def cpu_ms(im: Image.Image, fmt: str, params: Mapping[str, object], repeat: int) -> float:
    encode(im, fmt, params)  # warm-up
    times = []
    for _ in range(repeat):
        start = time.process_time()
        encode(im, fmt, params)
        times.append(time.process_time() - start)
    return statistics.median(times) * 1000


def ssim(reference: Image.Image, data: bytes) -> float:
    from skimage.metrics import structural_similarity

    out = Image.open(io.BytesIO(data)).convert("RGB")
    return float(structural_similarity(np.asarray(reference), np.asarray(out), channel_axis=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed encodes per cell (median)")
    parser.add_argument("--formats", default=",".join(GRID), help="comma-separated formats")
    args = parser.parse_args(argv)
    print("Building inputs...", file=sys.stderr)
    images = inputs()
    print(f"- CPU: {cpu_model()}; encode CPU time, median of {args.repeat}")
    for fmt in args.formats.split(","):
        pillow, settings = GRID[fmt]
        # Photos are what the lossy formats are for; PNG and GIF are for flat art too.
        names = [n for n in images if fmt == "png" or not n.startswith("screenshot")]
        print(f"\n### {fmt}\n")
        print("| setting | " + " | ".join(f"{n}: CPU ms, bytes, SSIM" for n in names) + " |")
        print("|---|" + "---:|" * len(names))
        base: dict[str, tuple[float, int, float]] = {}
        rows: list[tuple[Setting, list[tuple[float, int, float]]]] = []
        for setting in settings:
            print(f"  {fmt} {setting.name}...", file=sys.stderr)
            cells = []
            for name in names:
                im = images[name]
                data = encode(im, pillow, setting.params)
                quality = ssim(im, data) if fmt != "png" else 1.0
                cells.append((cpu_ms(im, pillow, setting.params, args.repeat), len(data), quality))
            rows.append((setting, cells))
            if setting.default:
                base = dict(zip(names, cells, strict=True))
        for setting, cells in rows:
            text = []
            for name, (ms, size, quality) in zip(names, cells, strict=True):
                b_ms, b_size, b_q = base[name]
                ok = size / b_size <= MAX_BYTES_RATIO and quality - b_q >= -MAX_SSIM_LOSS
                text.append(
                    f"{ms:.1f} ({b_ms / ms:.2f}x faster), {size / b_size:.3f}x, "
                    f"{quality - b_q:+.4f}{'' if ok else ' ✗'}"
                )
            label = setting.name + (" (Pillow default)" if setting.default else "")
            print(f"| {label} | " + " | ".join(text) + " |")


if __name__ == "__main__":
    main()
