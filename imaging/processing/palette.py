"""An image's dominant colours, each with a common name, and its perceptual hash: one small look.

``appearance`` shrinks the decoded first frame once to at most 32 px (about a millisecond for
a 2 MP photo, whatever the source size: ``python -m benchmarks.search``) and reads both the
palette (Pillow's median cut on those pixels) and the dHash (``phash``) from that copy.

Names come from a small table of the basic colour words people search with. Each swatch is
named in CIELAB, where distances follow what eyes see: a colour of low chroma is black, grey or
white by its lightness alone; any other takes the name of the nearest of a few reference colours
per name (dark, mid and light shades), so navy is "blue" and maroon is "red".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from imaging.processing.decoding import Decoded
from imaging.processing.phash import dhash

#: The long side of the copy everything here is read from.
SAMPLE_SIDE = 32
#: At most this many swatches, and none covering less of the picture than MIN_SHARE.
MAX_COLOURS = 5
MIN_SHARE = 0.03

#: The names a swatch can get, each with reference shades in sRGB (chromatic names only).
REFERENCES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "red": ((200, 30, 40), (130, 20, 30), (235, 80, 70)),
    "orange": ((245, 130, 30), (210, 100, 20), (250, 170, 90)),
    "yellow": ((245, 220, 50), (215, 175, 40), (250, 240, 140)),
    "green": ((60, 160, 60), (20, 90, 30), (150, 210, 80), (110, 130, 40), (160, 210, 160)),
    "teal": ((0, 128, 128), (60, 180, 170)),
    "blue": ((40, 90, 200), (20, 30, 100), (0, 0, 128), (120, 180, 235), (70, 120, 160)),
    "purple": ((120, 60, 160), (70, 30, 100), (180, 140, 210)),
    "pink": ((240, 140, 180), (210, 50, 150), (250, 200, 215)),
    "brown": ((120, 75, 40), (80, 50, 30), (165, 110, 70)),
    "beige": ((225, 205, 165), (200, 180, 140)),
}
ACHROMATIC = ("black", "grey", "white")
#: Every name a swatch may have: what colour search understands.
COLOUR_NAMES = (*REFERENCES, *ACHROMATIC)
#: Below this chroma (CIELAB C*) a colour has no hue worth naming.
GREY_CHROMA = 10.0


@dataclass(frozen=True)
class Swatch:
    hex: str  # "#a0522d"
    name: str  # one of COLOUR_NAMES
    share: float  # of the picture's pixels, 0..1


@dataclass(frozen=True)
class Appearance:
    colours: tuple[Swatch, ...]  # the largest share first
    phash: str  # 16 hex digits (``phash.dhash``)


def appearance(decoded: Decoded) -> Appearance:
    """The palette and perceptual hash of a decoded image (its first frame)."""
    small = sample(decoded.frames[0])
    return Appearance(palette(small), dhash(small))


def sample(frame: Image.Image) -> Image.Image:
    """A copy no larger than SAMPLE_SIDE, in RGB (transparency over white, as pages show it)."""
    # Every 4th pixel or so first (a strided read, no arithmetic), then a box average of
    # those: 20x cheaper than a box over millions of pixels, and as stable for a palette.
    side = max(frame.size)
    if side > 4 * SAMPLE_SIDE:
        scale = 4 * SAMPLE_SIDE / side
        size = (max(1, round(frame.width * scale)), max(1, round(frame.height * scale)))
        frame = frame.resize(size, Image.Resampling.NEAREST)
    small = frame.copy()
    small.thumbnail((SAMPLE_SIDE, SAMPLE_SIDE), Image.Resampling.BOX, reducing_gap=None)
    if small.mode in ("RGBA", "LA", "PA"):
        white = Image.new("RGBA", small.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, small.convert("RGBA")).convert("RGB")
    return small.convert("RGB")


def palette(image: Image.Image, max_colours: int = MAX_COLOURS) -> tuple[Swatch, ...]:
    """The dominant colours of a small RGB image, largest share first, each named."""
    # Median cut splits the colour box where the pixels are (octree, 2x faster, lumps a photo
    # into one bucket); its cost grows with the pixels, hence the 32 px sample.
    quantized = image.quantize(colors=max_colours, method=Image.Quantize.MEDIANCUT)
    entries = quantized.getpalette() or []
    # A "P" image's colours are (count, palette index) pairs; Pillow types the index loosely.
    counts = [(n, i) for n, i in quantized.getcolors(max_colours) or [] if isinstance(i, int)]
    total = image.width * image.height
    swatches = []
    for count, index in sorted(counts, key=lambda c: (-c[0], c[1])):
        share = count / total
        if share < MIN_SHARE:
            continue
        r, g, b = entries[3 * index : 3 * index + 3]
        swatches.append(Swatch(f"#{r:02x}{g:02x}{b:02x}", colour_name((r, g, b)), round(share, 3)))
    return tuple(swatches)


def colour_name(rgb: tuple[int, int, int]) -> str:
    """The basic colour word for an sRGB colour (see the module's docstring for the rule)."""
    lightness, a, b = lab(rgb)
    if math.hypot(a, b) < GREY_CHROMA or lightness < 12:
        if lightness < 25:
            return "black"
        return "white" if lightness > 88 else "grey"
    return min(_REFERENCE_LAB, key=lambda ref: math.dist(ref[1], (lightness, a, b)))[0]


def lab(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """sRGB (0..255) to CIELAB (D65)."""

    def linear(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116

    fx, fy, fz = f(x), f(y), f(z)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


_REFERENCE_LAB = [(name, lab(rgb)) for name, shades in REFERENCES.items() for rgb in shades]


def colour_distance(a: str, b: str) -> float:
    """How far apart two ``#rrggbb`` colours look (CIELAB distance; about 2.3 is just visible)."""
    return math.dist(lab(_rgb(a)), lab(_rgb(b)))


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    value = int(hex_colour.lstrip("#"), 16)
    return value >> 16, (value >> 8) & 0xFF, value & 0xFF
