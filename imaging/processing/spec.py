"""What a caller asks the engine for and gets back: ``RenderSpec`` in, ``Rendition`` out."""

from __future__ import annotations

from dataclasses import dataclass

from imaging.formats import DEFAULT_EFFORT


@dataclass(frozen=True)
class Focus:
    """What a ``cover`` crop keeps in view: a box in fractions (0..1) of the picture's width and
    height (a point is a box of no size). The window is centred on it, as far as the edges allow.
    """

    left: float
    top: float
    width: float = 0.0
    height: float = 0.0

    @property
    def centre(self) -> tuple[float, float]:
        return self.left + self.width / 2, self.top + self.height / 2


@dataclass(frozen=True)
class RenderSpec:
    """One output: format and an optional box (``width``/``height``) to fit into."""

    format: str
    width: int | None = None
    height: int | None = None
    fit: str = "contain"
    quality: int | None = None
    lossless: bool = False
    upscale: bool = False
    animate: bool = True
    effort: str = DEFAULT_EFFORT  # one of imaging.formats.EFFORTS (ENCODER_EFFORT)
    focus: Focus | None = None  # where a cover crop's window goes (None: the centre)
    #: The resampling filter: ``lanczos`` (Pillow's, the sharpest), ``lanczos3`` (libvips',
    #: as sharp for half the CPU, RESAMPLER=vips), or ``bilinear`` (a third of the CPU, slightly
    #: softer: for a small copy made from pixels already resampled, the thumbnail).
    resample: str = "lanczos"


@dataclass(frozen=True)
class TraceLimits:
    """The bounds of an SVG trace (SVG_TRACE_SIDE, SVG_MAX_KB): the side of the copy traced,
    which bounds the tracer's time, and the most bytes the traced SVG may have."""

    max_side: int = 1024
    max_bytes: int = 2048 * 1024


@dataclass(frozen=True)
class Rendition:
    format: str
    mime: str
    ext: str
    data: bytes
    width: int
    height: int
    frames: int
    warning: str | None = None
