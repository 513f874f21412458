"""The conversion engine, and the only package that imports Pillow: probe, decode, render.

Bytes come in, renditions go out, one room per step:

- ``header``: ``probe`` sniffs the real format through an allowlist and checks every limit from
  the header before a pixel is decoded; the one Pillow error boundary lives here.
- ``decoding``: ``decode`` orients, keeps animation frames and shrinks on load; ``colour``
  brings every frame to sRGB; ``shrink`` and ``shared_fit`` scale it down once for every output.
- ``labelcopy``: ``LabelImage``, the labelers' small copy: pixels for a classifier, a JPEG for
  Cloud Vision, each made on first ask.
- ``geometry``: the fit modes, ``target_size`` and the one resampling pass; ``resampler``:
  libvips' lanczos3 for it (RESAMPLER=vips), Pillow's Lanczos where libvips is not there.
- ``framing``: smart crop, ``frame`` puts each cover output's window on a ``Focus`` (the
  owner's point, the faces a caller found, or the salient part) or leaves it centred.
- ``encoding``: ``render`` fits, flattens and saves one output with its format's options, which
  are data on the format registry (``imaging.formats``), through the renderer the registry
  names; ``vector`` registers the SVG one (vtracer, bounded by ``TraceLimits``).
- ``spec``: ``RenderSpec`` in, ``Rendition`` out (``TraceLimits``: the SVG trace's bounds).
- ``camera``: ``read_camera``, the camera facts of the original's EXIF (an allowlist; no GPS),
  kept on ``Decoded.camera``; ``placeholder``: ``thumbhash``, the ThumbHash the gallery
  paints while a thumbnail loads.
- ``palette`` and ``phash``: ``appearance`` reads the dominant colours (named) and the
  perceptual hash from one 32 px copy of the decoded pixels.

The modules are named as nouns so that ``processing.probe`` and ``processing.decode`` stay the
functions callers use. Import from here; the modules' layout is the package's own business.
"""

from __future__ import annotations

# The SVG renderer registers itself with encoding (as Pillow's plugins do): import it here, so
# it is there whatever module of the package is imported first.
from imaging.processing import vector  # noqa: F401
from imaging.processing.camera import Camera, read_camera
from imaging.processing.decoding import Decoded, decode, shared_fit, shrink
from imaging.processing.encoding import render
from imaging.processing.framing import CROP_METHODS, Framing, cropping, frame
from imaging.processing.geometry import FIT_MODES, parse_fit, target_size
from imaging.processing.header import Limits, Probe, probe
from imaging.processing.labelcopy import LabelImage
from imaging.processing.palette import Appearance, Swatch, appearance
from imaging.processing.placeholder import thumbhash
from imaging.processing.resampler import available as libvips_available
from imaging.processing.spec import Focus, RenderSpec, Rendition, TraceLimits

__all__ = [
    "CROP_METHODS",
    "FIT_MODES",
    "Appearance",
    "Camera",
    "Decoded",
    "Focus",
    "Framing",
    "LabelImage",
    "Limits",
    "Probe",
    "RenderSpec",
    "Rendition",
    "Swatch",
    "TraceLimits",
    "appearance",
    "cropping",
    "decode",
    "frame",
    "libvips_available",
    "parse_fit",
    "probe",
    "read_camera",
    "render",
    "shared_fit",
    "shrink",
    "target_size",
    "thumbhash",
]
