"""Vector output: flat art (logos, icons, diagrams) traced into SVG paths by vtracer, bounded.

A photo would explode into thousands of paths and megabytes of SVG after seconds of tracing
(vtracer holds the GIL while it works), so the trace is bounded three ways: it runs on a copy
fitted within ``TraceLimits.max_side``; a cheap pre-check on a 256 px copy refuses a picture
whose pixels are mostly "busy" (photos: 30-50 %, logos and screenshots: 3-6 %) before any
tracing; and a traced SVG over ``TraceLimits.max_bytes`` is refused too. All three answer 422
``too_detailed``.

The SVG we store is rebuilt from the tracer's output, element by element, from an allowlist:
one ``<svg>`` root with a ``viewBox`` and ``<path d fill transform>`` children whose values
match strict patterns. No script, no event attribute, no link, no style can be in it, so it is
safe wherever it is served (docs/security.md).
"""

from __future__ import annotations

import io
import logging
import re
import xml.etree.ElementTree as ET

import numpy as np
import vtracer
from PIL import Image

from imaging.errors import TooDetailed
from imaging.formats import OUTPUT_FORMATS
from imaging.processing.decoding import Decoded
from imaging.processing.encoding import first_frame_warning, register_renderer
from imaging.processing.geometry import fit_frame, target_size
from imaging.processing.header import pillow_boundary
from imaging.processing.spec import RenderSpec, Rendition, TraceLimits

log = logging.getLogger(__name__)

TOO_DETAILED = "This picture is too detailed to trace as SVG; ask for png or webp."
UNTRACEABLE = "This picture could not be traced as SVG; ask for png or webp."

#: The side of the copy the pre-check reads: enough to tell texture from flat areas, ~5 ms.
CHECK_SIDE = 256
#: A pixel is busy when one of its channels differs from its right or lower neighbour by more.
BUSY_STEP = 8
#: The most busy pixels a picture may have to be traced: logos and screenshots measure 3-6 %,
#: scikit-image's photos 30-50 % (docs/formats-and-labels.md, "SVG").
MAX_BUSY = 0.2

#: vtracer's settings: colour, stacked shapes, splines; coordinates to 2 decimals (its default
#: of 8 makes the file 2-3x larger for no visible difference at these sizes).
TRACE_OPTIONS: dict[str, object] = {
    "colormode": "color",
    "hierarchical": "stacked",
    "mode": "spline",
    "path_precision": 2,
}

SVG_NS = "http://www.w3.org/2000/svg"
_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE]-?\d+)?"
_PATH_DATA = re.compile(rf"(?:[MLCQZmlcqz]|{_NUMBER}|[ ,])*")
_FILL = re.compile(r"#[0-9A-Fa-f]{6}")
_TRANSLATE = re.compile(rf"translate\({_NUMBER},{_NUMBER}\)")
_PATH_ATTRIBUTES = {"d": _PATH_DATA, "fill": _FILL, "transform": _TRANSLATE}


def render_svg(
    decoded: Decoded,
    spec: RenderSpec,
    *,
    max_side: int,
    background: str,
    tracing: TraceLimits,
) -> Rendition:
    """Trace the first frame of ``decoded`` into an SVG of the size ``spec`` asks for."""
    out = OUTPUT_FORMATS[spec.format]
    with pillow_boundary():
        size, crop = target_size(decoded.width, decoded.height, spec, max_side)
        width, height = crop or size
        scale = min(1.0, tracing.max_side / max(width, height))
        traced_size = _scaled(size, scale)
        traced_crop = _scaled(crop, scale) if crop is not None else None
        frame = fit_frame(decoded.frames[0], traced_size, traced_crop).convert("RGBA")
        busy = busy_share(frame)
        if busy > MAX_BUSY:
            raise TooDetailed(TOO_DETAILED, detail=f"busy share {busy:.3f}")
        buf = io.BytesIO()
        frame.save(buf, "PNG", compress_level=0)  # the tracer's input: the fastest PNG there is
    traced: str = vtracer.convert_raw_image_to_svg(
        buf.getvalue(), img_format="png", **TRACE_OPTIONS
    )
    data = clean_svg(traced, width=width, height=height, grid=frame.size)
    if len(data) > tracing.max_bytes:
        raise TooDetailed(TOO_DETAILED, detail=f"traced SVG of {len(data)} bytes")
    warning = first_frame_warning(decoded, spec, 1)
    return Rendition(spec.format, out.mime, out.ext, data, width, height, 1, warning)


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def busy_share(im: Image.Image) -> float:
    """The share of pixels (of a copy within CHECK_SIDE) that differ from a neighbour by more
    than BUSY_STEP in some channel: texture and noise are busy, flat colour and edges are not."""
    small = im.copy()
    small.thumbnail((CHECK_SIDE, CHECK_SIDE))
    if small.width < 2 or small.height < 2:
        return 0.0
    pixels = np.asarray(small, dtype=np.int16)
    across = np.abs(np.diff(pixels, axis=1)).max(axis=2)[:-1, :] > BUSY_STEP
    down = np.abs(np.diff(pixels, axis=0)).max(axis=2)[:, :-1] > BUSY_STEP
    return float((across | down).mean())


def clean_svg(traced: str, *, width: int, height: int, grid: tuple[int, int]) -> bytes:
    """The tracer's SVG rebuilt from an allowlist: ``<path d fill transform>`` only, in an
    ``<svg>`` of ``width`` x ``height`` whose ``viewBox`` is the traced ``grid`` (so it scales).

    Anything else in it (it never happens: vtracer writes paths only) refuses the picture
    rather than let an unexpected element through.
    """
    try:
        root = ET.fromstring(traced)  # noqa: S314 (our tracer's output, no entities)
    except ET.ParseError as exc:
        raise _unexpected(f"unparsable SVG: {exc}") from None
    if root.tag != f"{{{SVG_NS}}}svg" or (root.text or "").strip():
        raise _unexpected(f"root {root.tag!r}")
    paths = []
    for element in root:
        if element.tag != f"{{{SVG_NS}}}path" or len(element) or (element.text or "").strip():
            raise _unexpected(f"element {element.tag!r}")
        if (element.tail or "").strip():
            raise _unexpected("text between elements")
        attributes = []
        for name, value in element.attrib.items():
            pattern = _PATH_ATTRIBUTES.get(name)
            if pattern is None or not pattern.fullmatch(value):
                raise _unexpected(f"attribute {name!r}")
            attributes.append(f'{name}="{value.strip()}"')
        paths.append(f"<path {' '.join(attributes)}/>")
    head = (
        f'<svg xmlns="{SVG_NS}" width="{width}" height="{height}" '
        f'viewBox="0 0 {grid[0]} {grid[1]}" preserveAspectRatio="none">'
    )
    return "\n".join([head, *paths, "</svg>\n"]).encode()


def _unexpected(detail: str) -> TooDetailed:
    log.error("vtracer wrote an unexpected SVG: %s", detail)
    return TooDetailed(UNTRACEABLE, detail=detail)


register_renderer("vtracer", render_svg)
