"""Engine benchmark: our Pillow engine against libvips (pyvips) on the same inputs, in one run.

Run ``python -m benchmarks.engine`` (``make bench``). It builds every input in memory (photo-like
JPEGs with sensor-like noise, a screenshot-like PNG), times probe + decode + render of our engine
and the libvips equivalent for each case, then measures the peak memory one 50 MP JPEG costs,
and prints a Markdown table. Figures, not asserts: the targets are reported against.

Encoder settings are matched on purpose: WebP quality 80, method/effort 4; JPEG quality 85,
progressive, optimised Huffman tables, 4:2:0; AVIF quality 60 at AV1 speed 7 (libvips: effort 2)
through libaom in both; lossless WebP at quality 100, method/effort 4. libvips runs with its
operation cache off, so no repeat is served from a cache.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import PIL
from PIL import Image, ImageChops, ImageDraw, ImageFont, features

from benchmarks.machine import cpu_model
from imaging import processing
from imaging.config import DEFAULT_PRESETS, Settings
from imaging.processing import Limits, RenderSpec

DEFAULTS = Settings()
LIMITS = Limits(
    max_bytes=1 << 30,  # the byte cap is the web layer's business; a 50 MP JPEG is over 20 MB
    max_pixels=DEFAULTS.max_pixels,
    max_side=DEFAULTS.max_side,
    max_frames=DEFAULTS.max_frames,
)
#: The pipeline caps every output's longest side here (MAX_OUTPUT_SIDE); no input below exceeds it
#: except the 50 MP JPEG of the memory measurement.
OUTPUT_SIDE = DEFAULTS.max_output_side
TARGET_RATIO = 1.1  # 12 MP -> 1024 px WebP: within 1.1x of libvips
TARGET_RSS_MB = 300  # one 50 MP JPEG through the engine with default options

Convert = Callable[[bytes], bytes]
#: Our WebP rows use ENCODER_EFFORT=smallest (method 4), libvips' effort 4: the same encoder work.
#: AVIF's default effort (speed 7) is already libvips' effort 2.
MATCHED = "smallest"


# -- Inputs ---------------------------------------------------------------------------------


def photo(width: int, height: int) -> bytes:
    """A photo-like q90 JPEG: a real photo (a cat) enlarged, plus sensor-like noise.

    Enlarging alone gives a blur that every codec squeezes to nothing; the noise brings back the
    fine detail a real 12 MP photo spends its bytes and its decode time on.
    """
    from skimage import data as samples

    cat = Image.fromarray(samples.chelsea())  # 451 x 300
    aspect = width / height
    crop_w = min(cat.width, round(cat.height * aspect))
    crop_h = min(cat.height, round(crop_w / aspect))
    left, top = (cat.width - crop_w) // 2, (cat.height - crop_h) // 2
    big = cat.crop((left, top, left + crop_w, top + crop_h)).resize(
        (width, height), Image.Resampling.LANCZOS
    )
    noise = Image.merge("RGB", [Image.effect_noise((width, height), 12) for _ in range(3)])
    noisy = ImageChops.add(big, noise, scale=1.0, offset=-128)
    return _encode(noisy, "JPEG", quality=90)


def screenshot(width: int = 1280, height: int = 800) -> bytes:
    """A screenshot-like PNG: flat panels, thin rules and lots of small anti-aliased text."""
    im = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=13)
    draw.rectangle((0, 0, width, 44), fill=(33, 37, 41))
    draw.text((16, 14), "cloud-image-app  Gallery  Upload  API", font=font, fill=(255, 255, 255))
    draw.rectangle((0, 44, 220, height), fill=(236, 239, 243))
    for row in range(40):
        y = 60 + row * 18
        draw.text((16, y), f"Folder {row:02d} / album", font=font, fill=(52, 58, 64))
        draw.text(
            (240, y),
            f"IMG_{4000 + row}.HEIC  4032x3024  2.{row % 10} MB  labels: cat, sofa, window "
            f"score 0.{90 - row}  uploaded 2026-05-{1 + row % 28:02d} 12:{row:02d}",
            font=font,
            fill=(33, 37, 41) if row % 5 else (13, 110, 253),
        )
        draw.line((240, y + 16, width - 16, y + 16), fill=(222, 226, 230))
    for i in range(6):
        x = 240 + i * 170
        draw.rounded_rectangle((x, height - 60, x + 150, height - 24), 6, fill=(13, 110, 253))
        draw.text((x + 40, height - 50), f"Button {i}", font=font, fill=(255, 255, 255))
    return _encode(im, "PNG")


def _encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


# -- The two engines ------------------------------------------------------------------------


def ours(spec: RenderSpec) -> Convert:
    def run(data: bytes) -> bytes:
        probed = processing.probe(data, LIMITS)
        decoded = processing.decode(data, probed, specs=[spec], max_side=OUTPUT_SIDE)
        rendition = processing.render(
            decoded, spec, max_side=OUTPUT_SIDE, background=DEFAULTS.background
        )
        return rendition.data

    return run


def vips_thumbnail(fmt: str, size: int) -> Convert:
    import pyvips

    def run(data: bytes) -> bytes:
        im = pyvips.Image.thumbnail_buffer(data, size)
        return _vips_save(im, fmt)

    return run


def vips_full(fmt: str, *, lossless: bool = False) -> Convert:
    import pyvips

    def run(data: bytes) -> bytes:
        im = pyvips.Image.new_from_buffer(data, "", access="sequential")
        return _vips_save(im, fmt, lossless=lossless)

    return run


def _vips_save(im: object, fmt: str, *, lossless: bool = False) -> bytes:
    save: Callable[..., bytes] = getattr(im, f"{'heif' if fmt == 'avif' else fmt}save_buffer")
    if fmt == "webp" and lossless:
        return save(lossless=True, Q=100, effort=4, strip=True)
    if fmt == "webp":
        return save(Q=80, effort=4, strip=True)
    if fmt == "jpeg":
        return save(Q=85, interlace=True, optimize_coding=True, subsample_mode="on", strip=True)
    if fmt == "avif":
        return save(compression="av1", Q=60, effort=2, subsample_mode="on", strip=True)
    raise ValueError(fmt)


# -- Measuring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    source: str
    ours: Convert
    vips: Convert
    repeat: int
    box: int | None = None  # the downscale target, for the quality check


@dataclass(frozen=True)
class Timing:
    ms: float
    output: bytes


def median_ms(convert: Convert, data: bytes, repeat: int) -> Timing:
    out = convert(data)  # warm-up: imports, codec set-up, first-touch page faults
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = convert(data)
        times.append(time.perf_counter() - start)
    return Timing(statistics.median(times) * 1000, out)


def ssim_to_reference(output: bytes, source: bytes) -> float:
    """SSIM of a downscaled output against the best downscale we can make: the whole source
    decoded at full resolution, then one Lanczos pass straight to the output's size."""
    import numpy as np
    from skimage.metrics import structural_similarity

    out = Image.open(io.BytesIO(output)).convert("RGB")
    reference = Image.open(io.BytesIO(source)).convert("RGB")
    reference = reference.resize(out.size, Image.Resampling.LANCZOS)
    return float(structural_similarity(np.asarray(reference), np.asarray(out), channel_axis=2))


def vips_concurrency(threads: int) -> None:
    import pyvips

    pyvips.concurrency_set(threads)


def peak_rss_growth_mb(path: Path, engine: str, cap: int) -> float:
    """Peak RSS growth of converting the file at ``path`` once, in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.engine", "--rss-child", str(path), engine, str(cap)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "VIPS_CONCURRENCY": "1"},
    )
    return float(json.loads(result.stdout)["growth_mb"])


def _rss_child(path: str, engine: str, cap: str) -> None:
    """Runs in the subprocess: read the file, reset the high-water mark, convert, report.

    ``cap`` is the longest output side: the default MAX_OUTPUT_SIDE, or WebP's 16383 limit,
    which leaves a 50 MP photo at full size.
    """
    data = Path(path).read_bytes()
    max_side = int(cap)
    specs = default_specs()
    if engine == "vips":
        import pyvips

        pyvips.cache_set_max(0)
    baseline = _reset_peak()
    if engine == "ours":
        probed = processing.probe(data, LIMITS)
        decoded = processing.decode(data, probed, specs=specs, max_side=max_side)
        for spec in specs:
            processing.render(decoded, spec, max_side=max_side, background="#ffffff")
        del decoded
    else:
        if max_side >= max(Image.open(io.BytesIO(data)).size):
            vips_full("webp")(data)
        else:
            vips_thumbnail("webp", max_side)(data)
        vips_thumbnail("webp", DEFAULT_PRESETS["thumb"].width)(data)
        vips_thumbnail("jpeg", DEFAULT_PRESETS["label"].width)(data)
    print(json.dumps({"growth_mb": (_peak_kb() - baseline) / 1024}))


def default_specs() -> list[RenderSpec]:
    """What an upload with the default settings renders: the default format at full size
    (within MAX_OUTPUT_SIDE), the gallery thumbnail and the labeler's copy."""
    thumb, label = DEFAULT_PRESETS["thumb"], DEFAULT_PRESETS["label"]
    return [
        RenderSpec(DEFAULTS.default_formats[0]),
        RenderSpec("webp", thumb.width, thumb.height, thumb.fit, animate=False),
        RenderSpec("jpeg", label.width, label.height, label.fit, animate=False),
    ]


def _reset_peak() -> int:
    """Reset VmHWM to the current RSS (Linux: clear_refs 5) and return it, in kB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS")


def _peak_kb() -> int:
    return _status_kb("VmHWM")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # pragma: no cover - not Linux


# -- Report ---------------------------------------------------------------------------------


def machine(vips_threads: int) -> str:
    import pyvips

    cpu = cpu_model()
    return (
        f"- CPU: {cpu}, {os.cpu_count()} logical cores (nproc)\n"
        f"- Python {platform.python_version()}, Pillow {PIL.__version__} "
        f"(libjpeg-turbo {features.version('libjpeg_turbo')}, libwebp {features.version('webp')}, "
        f"libavif {features.version('avif')})\n"
        f"- libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)} "
        f"(pyvips {pyvips.__version__}, pyvips-binary), default concurrency {vips_threads}\n"
        f"- {platform.system()} {platform.release()}"
    )


def _vips_default_concurrency() -> int:
    import pyvips

    return int(pyvips.concurrency_get())


def cases(inputs: dict[str, bytes], repeat: int) -> list[Case]:
    slow = max(1, repeat // 2)
    rows = []
    for source in ("12 MP JPEG", "2 MP JPEG"):
        rows += [
            Case(
                "-> 1024 px WebP",
                source,
                ours(RenderSpec("webp", 1024, 1024, effort=MATCHED)),
                vips_thumbnail("webp", 1024),
                repeat,
                box=1024,
            ),
            Case(
                "-> 1024 px JPEG",
                source,
                ours(RenderSpec("jpeg", 1024, 1024)),
                vips_thumbnail("jpeg", 1024),
                repeat,
                box=1024,
            ),
            Case(
                "-> full-size WebP",
                source,
                ours(RenderSpec("webp", effort=MATCHED)),
                vips_full("webp"),
                slow,
            ),
            Case("-> full-size AVIF", source, ours(RenderSpec("avif")), vips_full("avif"), slow),
        ]
    rows.append(
        Case(
            "-> lossless WebP",
            "1 MP PNG",
            ours(RenderSpec("webp", lossless=True)),
            vips_full("webp", lossless=True),
            repeat,
        )
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per case (median)")
    parser.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        _rss_child(*args.rss_child)
        return

    import pyvips

    pyvips.cache_set_max(0)
    default_threads = _vips_default_concurrency()
    load_before = Path("/proc/loadavg").read_text().split()[0]
    print("Building inputs in memory...", file=sys.stderr)
    inputs = {
        "12 MP JPEG": photo(4000, 3000),
        "2 MP JPEG": photo(1632, 1224),
        "1 MP PNG": screenshot(1280, 800),
    }
    sizes = {name: Image.open(io.BytesIO(data)).size for name, data in inputs.items()}
    lines = [
        "| case | ours ms | ours MP/s | libvips ms (1 thread) | libvips ms (default) "
        "| ours / libvips (1 thread) | ours / libvips (default) | KiB ours / libvips "
        "| SSIM ours / libvips |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    headline: dict[str, float] = {}
    for case in cases(inputs, args.repeat):
        data = inputs[case.source]
        mp = sizes[case.source][0] * sizes[case.source][1] / 1e6
        print(f"  {case.source} {case.name}...", file=sys.stderr)
        mine = median_ms(case.ours, data, case.repeat)
        vips_concurrency(1)
        single = median_ms(case.vips, data, case.repeat)
        vips_concurrency(default_threads)
        pooled = median_ms(case.vips, data, case.repeat)
        ratio_1, ratio_n = mine.ms / single.ms, mine.ms / pooled.ms
        label = f"{case.source} {case.name}"
        headline[label] = ratio_1
        quality = "-"
        if case.box is not None:
            quality = " / ".join(f"{ssim_to_reference(t.output, data):.3f}" for t in (mine, single))
        lines.append(
            f"| {label} | {mine.ms:.0f} | {mp / (mine.ms / 1000):.0f} | {single.ms:.0f} "
            f"| {pooled.ms:.0f} | {ratio_1:.2f}x | {ratio_n:.2f}x "
            f"| {len(mine.output) / 1024:.0f} / {len(single.output) / 1024:.0f} | {quality} |"
        )

    print("Measuring peak memory of one 50 MP JPEG...", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "50mp.jpg"
        big.write_bytes(photo(8660, 5773))
        caps = (OUTPUT_SIDE, DEFAULTS.max_side)
        rss = {
            (engine, cap): peak_rss_growth_mb(big, engine, cap)
            for engine in ("ours", "vips")
            for cap in caps
        }
        rss_ours = rss["ours", OUTPUT_SIDE]

    key = "12 MP JPEG -> 1024 px WebP"
    load_after = Path("/proc/loadavg").read_text().split()[0]
    print(machine(default_threads))
    print(f"- 1-minute load average: {load_before} before, {load_after} after the run")
    print()
    print(
        f"Median of {args.repeat} runs after one warm-up (full-size AVIF and WebP: "
        f"{max(1, args.repeat // 2)}); probe + decode + render for ours, "
        "thumbnail_buffer / new_from_buffer + *save_buffer for libvips."
    )
    print()
    print("\n".join(lines))
    print()
    print(
        f"- Target: {key} within {TARGET_RATIO}x of libvips: "
        f"{headline[key]:.2f}x (single-threaded libvips) -> "
        f"{'met' if headline[key] <= TARGET_RATIO else 'NOT met'}"
    )
    print(
        f"- Target: peak RSS growth for one 50 MP JPEG (8660x5773) with the default outputs "
        f"(WebP capped at MAX_OUTPUT_SIDE={OUTPUT_SIDE} px + 480 px WebP thumbnail + 640 px "
        f"JPEG label copy) under {TARGET_RSS_MB} MB: {rss_ours:.0f} MB -> "
        f"{'met' if rss_ours < TARGET_RSS_MB else 'NOT met'} "
        f"(libvips, the same three outputs: {rss['vips', OUTPUT_SIDE]:.0f} MB)"
    )
    print(
        f"- The same with MAX_OUTPUT_SIDE={DEFAULTS.max_side}, so the WebP is full size "
        f"(8660 px): {rss['ours', DEFAULTS.max_side]:.0f} MB "
        f"(libvips: {rss['vips', DEFAULTS.max_side]:.0f} MB)"
    )


if __name__ == "__main__":
    main()
