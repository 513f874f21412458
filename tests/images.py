"""Test images built in memory (Pillow's way): small, deterministic, each for one purpose."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image


def encode(im: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def gradient(width: int = 64, height: int = 48, mode: str = "RGB") -> Image.Image:
    """A left-to-right red ramp over a top-to-bottom green ramp: resizing keeps it recognisable."""
    im = Image.new("RGB", (width, height))
    im.putdata(
        [
            (x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), 96)
            for y in range(height)
            for x in range(width)
        ]
    )
    return im.convert(mode) if mode != "RGB" else im


def jpeg(width: int = 64, height: int = 48, **params: Any) -> bytes:
    return encode(gradient(width, height), "JPEG", quality=90, **params)


def png(width: int = 64, height: int = 48, mode: str = "RGB") -> bytes:
    return encode(gradient(width, height, mode), "PNG")


def rgba_png(width: int = 32, height: int = 32) -> bytes:
    """Half transparent: the left half is fully transparent red, the right half opaque blue."""
    im = Image.new("RGBA", (width, height), (0, 0, 255, 255))
    im.paste((255, 0, 0, 0), (0, 0, width // 2, height))
    return encode(im, "PNG")


def animated_gif(frames: int = 4, width: int = 40, height: int = 30, duration: int = 80) -> bytes:
    images = [Image.new("RGB", (width, height), (i * 40 % 256, 80, 160)) for i in range(frames)]
    return encode(
        images[0], "GIF", save_all=True, append_images=images[1:], duration=duration, loop=0
    )


def photo(name: str) -> bytes:
    """A real photo shipped inside scikit-image's wheel, as JPEG: 'chelsea' (cat), 'coffee'."""
    from skimage import data

    return encode(Image.fromarray(getattr(data, name)()), "JPEG", quality=92)


def open_image(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im
