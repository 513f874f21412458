"""libvips (pyvips) where it beats Pillow: the lanczos3 resampler, the main output's downscale
(about half of Pillow's Lanczos CPU for the same picture: docs/benchmarks.md, "Resampling with
libvips"), and the pixels of a plain 8-bit PNG (``png_pixels``: libspng's decode, 40 % less CPU
than Pillow's for a screenshot).

Loaded on first use, on one thread and with libvips' operation cache off (a worker converts each
upload once; a cache would only hold memory). When pyvips is missing or libvips fails to load,
``available()`` says so once in the log and every caller keeps Pillow's Lanczos.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from PIL import Image

log = logging.getLogger(__name__)

#: The Pillow modes handed to libvips as they are: 8 bits a band, bands interleaved. Any other
#: (16-bit, palette, CMYK, 1-bit) stays on Pillow.
MODES = {"L": 1, "RGB": 3, "RGBA": 4}


@functools.cache
def _pyvips() -> Any:
    try:
        import pyvips

        pyvips.cache_set_max(0)
        pyvips.concurrency_set(1)
    except Exception as exc:  # ImportError, or OSError/cffi errors when libvips cannot load
        log.warning("libvips unavailable (%s): resampling with Pillow's Lanczos", exc)
        return None
    return pyvips


def available() -> bool:
    """Whether libvips loaded (tried once per process; a failure is logged once)."""
    return _pyvips() is not None


def downscale(im: Image.Image, size: tuple[int, int]) -> Image.Image | None:
    """``im`` resampled down to exactly ``size`` with libvips' lanczos3, or None where it does
    not apply (libvips not loaded, a mode it is not handed, a side not reduced) and the caller
    resamples with Pillow."""
    bands = MODES.get(im.mode)
    w, h = size
    if bands is None or w > im.width or h > im.height or (w, h) == im.size:
        # libvips enlarges through another path (an affine interpolator) that frames a few
        # tenths of a pixel off Pillow's: upscales stay on Pillow, as does the identity.
        return None
    pyvips = _pyvips()
    if pyvips is None:
        return None
    source = pyvips.Image.new_from_memory(im.tobytes(), im.width, im.height, bands, "uchar")
    if bands == 4:
        # Weigh colours by their alpha, as Pillow does, so transparent pixels' colours do not
        # bleed into the edges of what is opaque.
        out = (
            source.premultiply()
            .resize(w / im.width, vscale=h / im.height, kernel="lanczos3")
            .unpremultiply()
            .rint()
            .cast("uchar")
        )
    else:
        out = source.resize(w / im.width, vscale=h / im.height, kernel="lanczos3")
    if (out.width, out.height) != size:  # libvips rounds its own size from the scales
        return None
    return Image.frombuffer(im.mode, size, out.write_to_memory(), "raw", im.mode, 0, 1)


def png_pixels(data: bytes, mode: str, size: tuple[int, int]) -> Image.Image | None:
    """The PNG ``data``'s pixels as a Pillow image of ``mode`` and ``size`` (what Pillow opened
    it as), decoded by libvips, or None where that does not apply and the caller decodes with
    Pillow: libvips not loaded, a mode it is not handed (palette, 16-bit, 1-bit), or a file that
    libvips decodes to other bands (a tRNS colour key) or warns about at all.

    A PNG is lossless, so both decoders give the same pixels
    (``tests/test_pngsuite.py::test_libvips_decodes_every_plain_png_as_pillow_does``).
    """
    bands = MODES.get(mode)
    pyvips = _pyvips()
    if bands is None or pyvips is None:
        return None
    try:
        source = pyvips.Image.pngload_buffer(data, access="sequential", fail_on="warning")
        if (source.width, source.height, source.bands, source.format) != (*size, bands, "uchar"):
            return None
        pixels = source.write_to_memory()
    except pyvips.Error:
        return None
    # frombytes, not frombuffer: the colour step may convert the frame in place.
    return Image.frombytes(mode, size, pixels)
