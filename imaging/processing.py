"""The conversion engine (the only module that imports Pillow): probe, decode, render, encode."""

from __future__ import annotations

import io

from PIL import Image


def rgb_pixels(data: bytes, size: int) -> bytes:
    """Raw RGB bytes (size*size*3) of an image for a classifier: ImageNet-style eval crop.

    The shorter side is resized to ``round(size / 0.875)`` (bicubic), then the centre
    ``size x size`` square is cut out.
    """
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        short = round(size / 0.875)
        scale = short / min(im.size)
        w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
        im = im.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        return im.crop((left, top, left + size, top + size)).tobytes()
