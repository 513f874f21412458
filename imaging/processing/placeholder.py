"""Placeholders: a ThumbHash of each upload, painted by the gallery while the thumbnail loads.

ThumbHash (Evan Wallace, MIT; https://evanw.github.io/thumbhash/) keeps an image's colours,
aspect ratio and alpha in about 25 bytes: the low-frequency cosine terms of its luminance, two
colour channels and alpha, each quantised to 4 bits. This is our own encoder of that format (and
a decoder, for tests and any server-side use); ``static/js/thumbhash.js`` decodes it in the
browser. Both follow the reference byte layout, so hashes are interchangeable with other ports.

The encoder reads a copy of at most 32x32 pixels (the format allows 100; 32 resolve its ~30
cosine terms): a point-sampled, box-averaged reduce of the pixels the pipeline already holds,
then a few small matrix products, so it costs a fraction of a millisecond an upload.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from imaging.processing.decoding import Decoded
from imaging.processing.header import pillow_boundary

#: The largest side the format encodes.
MAX_SIDE = 100
#: The side placeholders are computed at: the decoder paints 32 px, and 32 samples a side
#: resolve the 7 cosine terms kept with room to spare, at a tenth of 100 px's cost.
SAMPLE_SIDE = 32

Floats = NDArray[np.float64]


def thumbhash(decoded: Decoded) -> str:
    """The ThumbHash of a decoded image's first frame, base64 (what the record keeps)."""
    with pillow_boundary():
        small = _small_rgba(decoded.frames[0])
    return base64.b64encode(encode(small)).decode("ascii")


def _small_rgba(frame: Image.Image) -> NDArray[np.uint8]:
    width, height = frame.size
    scale = min(1.0, SAMPLE_SIDE / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if max(width, height) > 4 * SAMPLE_SIDE:
        # Point-sample a grid of 4x4 per output pixel, then average it: the cost no longer
        # grows with the source (a box filter over a 12 MP frame takes ~14 ms), and 16 samples
        # a pixel under 7 cosine terms is no visible difference in a placeholder.
        grid = frame.resize((size[0] * 4, size[1] * 4), Image.Resampling.NEAREST)
        small = grid.reduce(4)
    elif size != frame.size:
        small = frame.resize(size, Image.Resampling.BOX)
    else:
        small = frame
    return np.asarray(small.convert("RGBA"), dtype=np.uint8)


def encode(rgba: NDArray[np.uint8]) -> bytes:
    """The ThumbHash bytes of an RGBA image (``height x width x 4``, at most 100x100)."""
    height, width = rgba.shape[0], rgba.shape[1]
    if width > MAX_SIDE or height > MAX_SIDE or not width or not height:
        raise ValueError(f"{width}x{height} does not fit in {MAX_SIDE}x{MAX_SIDE}")
    pixels = rgba.astype(np.float64) / 255.0
    alpha = pixels[..., 3]
    total_alpha = float(alpha.sum())
    average = np.zeros(3)
    if total_alpha > 0:
        average = (pixels[..., :3] * alpha[..., None]).sum(axis=(0, 1)) / total_alpha
    # Transparent pixels are composited over the average colour, so they do not tint the rest.
    rgb = average * (1.0 - alpha[..., None]) + pixels[..., :3] * alpha[..., None]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    has_alpha = total_alpha < width * height
    l_limit = 5 if has_alpha else 7  # fewer luminance terms when alpha needs the room
    lx = max(1, _round(l_limit * width / max(width, height)))
    ly = max(1, _round(l_limit * height / max(width, height)))

    lum = _Channel.encode((r + g + b) / 3.0, max(3, lx), max(3, ly))
    p = _Channel.encode((r + g) / 2.0 - b, 3, 3)
    q = _Channel.encode(r - g, 3, 3)
    channels = [lum, p, q]
    header24 = (
        _round(63.0 * lum.dc)
        | _round(31.5 + 31.5 * p.dc) << 6
        | _round(31.5 + 31.5 * q.dc) << 12
        | _round(31.0 * lum.scale) << 18
        | int(has_alpha) << 23
    )
    landscape = width > height
    header16 = (
        (ly if landscape else lx)
        | _round(63.0 * p.scale) << 3
        | _round(63.0 * q.scale) << 9
        | int(landscape) << 15
    )
    out = bytearray(
        [header24 & 255, (header24 >> 8) & 255, header24 >> 16, header16 & 255, header16 >> 8]
    )
    if has_alpha:
        a = _Channel.encode(alpha, 5, 5)
        channels.append(a)
        out.append(_round(15.0 * a.dc) | _round(15.0 * a.scale) << 4)
    nibbles = [_round(15.0 * f) for channel in channels for f in channel.ac]
    nibbles += [0] * (len(nibbles) % 2)
    out += bytes(lo | hi << 4 for lo, hi in zip(nibbles[::2], nibbles[1::2], strict=True))
    return bytes(out)


def decode(thumbhash: bytes) -> tuple[int, int, NDArray[np.uint8]]:
    """``(width, height, rgba)`` of the ~32 px image a ThumbHash describes."""
    if len(thumbhash) < 5:
        raise ValueError("a ThumbHash has at least 5 bytes")
    header24 = thumbhash[0] | thumbhash[1] << 8 | thumbhash[2] << 16
    header16 = thumbhash[3] | thumbhash[4] << 8
    has_alpha = bool(header24 >> 23)
    landscape = bool(header16 >> 15)
    long_side = 5 if has_alpha else 7
    lx = max(3, long_side if landscape else header16 & 7)
    ly = max(3, header16 & 7 if landscape else long_side)
    start = 6 if has_alpha else 5
    nibbles = [n for byte in thumbhash[start:] for n in (byte & 15, byte >> 4)]
    needed = _term_count(lx, ly) + 2 * _term_count(3, 3) + (_term_count(5, 5) if has_alpha else 0)
    if len(nibbles) < needed:
        raise ValueError("the ThumbHash is truncated")
    terms = iter(n / 7.5 - 1.0 for n in nibbles)

    if not header16 & 7:
        raise ValueError("the ThumbHash has no aspect ratio")
    ratio = _aspect_ratio(thumbhash)
    width = _round(32.0 if ratio > 1 else 32.0 * ratio)
    height = _round(32.0 / ratio if ratio > 1 else 32.0)
    # Saturation is boosted by 1.25 to make up for the quantisation (as the reference does).
    lum = _Channel.read(terms, lx, ly, (header24 & 63) / 63, ((header24 >> 18) & 31) / 31)
    p = _Channel.read(
        terms, 3, 3, ((header24 >> 6) & 63) / 31.5 - 1, 1.25 * ((header16 >> 3) & 63) / 63
    )
    q = _Channel.read(
        terms, 3, 3, ((header24 >> 12) & 63) / 31.5 - 1, 1.25 * ((header16 >> 9) & 63) / 63
    )
    l_px, p_px, q_px = (c.render(width, height) for c in (lum, p, q))
    a_px = np.ones((height, width))
    if has_alpha:
        alpha = _Channel.read(terms, 5, 5, (thumbhash[5] & 15) / 15, (thumbhash[5] >> 4) / 15)
        a_px = alpha.render(width, height)
    b_px = l_px - 2.0 / 3.0 * p_px
    r_px = (3.0 * l_px - b_px + q_px) / 2.0
    g_px = r_px - q_px
    rgba = np.stack([r_px, g_px, b_px, a_px], axis=-1)
    # Truncated, not rounded: what the reference's Uint8Array stores.
    return width, height, (255.0 * np.clip(rgba, 0.0, 1.0)).astype(np.uint8)


@dataclass(frozen=True)
class _Channel:
    """One channel's cosine terms: the constant (``dc``), the rest scaled to 0..1 (``ac``)."""

    nx: int
    ny: int
    dc: float
    ac: tuple[float, ...]
    scale: float

    @classmethod
    def encode(cls, values: Floats, nx: int, ny: int) -> _Channel:
        height, width = values.shape
        # term[cy, cx] = mean over the pixels of value * cos(pi cx (x+.5)/w) * cos(pi cy (y+.5)/h)
        cos_x = np.cos(np.pi / width * np.outer(np.arange(nx), np.arange(width) + 0.5))
        cos_y = np.cos(np.pi / height * np.outer(np.arange(ny), np.arange(height) + 0.5))
        coefficients = cos_y @ values @ cos_x.T / (width * height)
        terms = [float(coefficients[cy, cx]) for cy, cx in _terms(nx, ny)]
        dc, ac = terms[0], terms[1:]
        scale = max((abs(f) for f in ac), default=0.0)
        if scale > 0:
            ac = [0.5 + 0.5 / scale * f for f in ac]
        return cls(nx, ny, dc, tuple(ac), scale)

    @classmethod
    def read(cls, terms: Iterator[float], nx: int, ny: int, dc: float, scale: float) -> _Channel:
        ac = tuple(next(terms) * scale for _ in range(_term_count(nx, ny)))
        return cls(nx, ny, dc, ac, scale)

    def render(self, width: int, height: int) -> Floats:
        cos_x = np.cos(np.pi / width * np.outer(np.arange(width) + 0.5, np.arange(self.nx)))
        cos_y = np.cos(np.pi / height * np.outer(np.arange(height) + 0.5, np.arange(self.ny)))
        weights = np.zeros((self.ny, self.nx))
        for (cy, cx), f in zip(_terms(self.nx, self.ny)[1:], self.ac, strict=True):
            weights[cy, cx] = 2.0 * f
        rendered: Floats = self.dc + cos_y @ weights @ cos_x.T
        return rendered


def _terms(nx: int, ny: int) -> list[tuple[int, int]]:
    """The (cy, cx) terms a channel keeps, in the format's order: a triangle, DC first."""
    return [(cy, cx) for cy in range(ny) for cx in range(nx) if cx * ny < nx * (ny - cy)]


def _term_count(nx: int, ny: int) -> int:
    return len(_terms(nx, ny)) - 1  # the AC terms: every term but the DC


def _aspect_ratio(thumbhash: bytes) -> float:
    has_alpha = bool(thumbhash[2] & 0x80)
    landscape = bool(thumbhash[4] & 0x80)
    long_side = 5 if has_alpha else 7
    lx = long_side if landscape else thumbhash[3] & 7
    ly = thumbhash[3] & 7 if landscape else long_side
    return lx / ly


def _round(value: float) -> int:
    """Half up, as JavaScript's Math.round (Python's round() goes to even)."""
    return math.floor(value + 0.5)
