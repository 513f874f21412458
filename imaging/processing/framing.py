"""Smart crop: where a ``cover`` crop's window goes, and why (the receipt's ``crop``).

In order: the owner's focal point (``"focus"``), the faces a detector found (``"faces"``: the
caller passes their boxes as data, this package knows no detector), else the window with the most
edge energy on a small greyscale copy (``"saliency"``), else the centre (``"centre"``: nothing
stands out, or smart crop is off). Only outputs whose crop cuts something away are framed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from imaging.processing.decoding import Decoded
from imaging.processing.geometry import cuts, target_size
from imaging.processing.header import pillow_boundary
from imaging.processing.spec import Focus, RenderSpec

#: The saliency map's longer side: enough to tell a subject from its background, a few ms at most.
SALIENCY_SIDE = 128
#: Mean edge energy per pixel (grey levels) under which a picture is flat: nothing stands out.
FLAT_ENERGY = 1.0
#: How much more edge energy than the centred window the best window must hold to be chosen
#: over the centre: a picture textured all over (noise, grass) keeps the usual centre crop.
SALIENT_GAIN = 1.10

CROP_METHODS = ("faces", "focus", "saliency", "centre")


@dataclass(frozen=True)
class Framing:
    """What the crop step chose: the method (one of ``CROP_METHODS``) and its focus."""

    method: str
    focus: Focus | None = None


def cropping(decoded: Decoded, specs: Sequence[RenderSpec], *, max_side: int) -> bool:
    """Whether any of ``specs`` is a ``cover`` output whose crop cuts part of ``decoded`` away."""
    return any(_cuts(decoded, spec, max_side) for spec in specs)


def _cuts(decoded: Decoded, spec: RenderSpec, max_side: int) -> bool:
    return spec.fit == "cover" and cuts(*target_size(decoded.width, decoded.height, spec, max_side))


def faces_focus(faces: Sequence[Focus]) -> Focus | None:
    """The box around every face (None for none): the window centres on the group."""
    if len(faces) <= 1:
        return faces[0] if faces else None
    left = min(f.left for f in faces)
    top = min(f.top for f in faces)
    right = max(f.left + f.width for f in faces)
    bottom = max(f.top + f.height for f in faces)
    return Focus(left, top, round(right - left, 4), round(bottom - top, 4))


def salient_focus(decoded: Decoded, spec: RenderSpec, *, max_side: int) -> Focus | None:
    """The point to centre ``spec``'s crop on: where the edge energy lies in the window that
    holds the most of it. None when the picture is flat or no window stands out from the
    centred one by ``SALIENT_GAIN``."""
    size, crop = target_size(decoded.width, decoded.height, spec, max_side)
    if crop is None or not cuts(size, crop):
        return None
    with pillow_boundary():
        frame = decoded.frames[0]
        factor = math.ceil(max(frame.size) / SALIENCY_SIDE)
        small = frame.reduce(factor) if factor > 1 else frame
        grey = np.asarray(small.convert("L"), dtype=np.float32)
    h, w = grey.shape
    if h < 2 or w < 2:
        return None
    # Edge energy: the absolute gradient, horizontal plus vertical, on the small copy.
    energy = np.abs(np.diff(grey, axis=1))[:-1, :] + np.abs(np.diff(grey, axis=0))[:, :-1]
    if float(energy.mean()) < FLAT_ENERGY:
        return None
    eh, ew = energy.shape
    # The crop window in the energy map's cells; every placement's sum from one integral image.
    ww = max(1, min(ew, round(crop[0] / size[0] * ew)))
    wh = max(1, min(eh, round(crop[1] / size[1] * eh)))
    integral = np.zeros((eh + 1, ew + 1), dtype=np.float64)
    integral[1:, 1:] = energy.cumsum(0).cumsum(1)
    sums = integral[wh:, ww:] - integral[:-wh, ww:] - integral[wh:, :-ww] + integral[:-wh, :-ww]
    centre = float(sums[(eh - wh) // 2, (ew - ww) // 2])
    y, x = (int(i) for i in np.unravel_index(int(np.argmax(sums)), sums.shape))
    if float(sums[y, x]) < SALIENT_GAIN * centre:
        return None
    # Many placements tie around a small subject (each holds all of it): the window centres on
    # where the best one's energy lies, not on the first placement that holds it.
    inside = energy[y : y + wh, x : x + ww]
    total = float(inside.sum())
    if total <= 0:  # cannot happen with energy above FLAT_ENERGY; never divide by it anyway
        return None
    cx = x + float((inside.sum(0) * (np.arange(ww) + 0.5)).sum()) / total
    cy = y + float((inside.sum(1) * (np.arange(wh) + 0.5)).sum()) / total
    return Focus(round(cx / ew, 4), round(cy / eh, 4))


def frame(
    decoded: Decoded,
    specs: Mapping[str, RenderSpec],
    *,
    max_side: int,
    focus: Focus | None = None,
    faces: Sequence[Focus] = (),
    smart: bool = True,
) -> tuple[dict[str, RenderSpec], Framing | None]:
    """``specs`` with the chosen focus on each cover output that cuts something, and the
    choice (None when no output is cropped). ``focus`` is the owner's focal point and wins
    even when ``smart`` is off; ``faces`` are the boxes a detector found; with neither,
    ``smart`` looks for the salient window."""
    cropped = [name for name, spec in specs.items() if _cuts(decoded, spec, max_side)]
    if not cropped:
        return dict(specs), None
    if focus is not None:
        chosen = Framing("focus", focus)
    elif smart and faces:
        chosen = Framing("faces", faces_focus(faces))
    else:
        salient = salient_focus(decoded, specs[cropped[0]], max_side=max_side) if smart else None
        chosen = Framing("saliency", salient) if salient is not None else Framing("centre")
    if chosen.focus is None:
        return dict(specs), chosen
    framed = dict(specs)
    for name in cropped:
        framed[name] = replace(specs[name], focus=chosen.focus)
    return framed, chosen


__all__ = ["CROP_METHODS", "Framing", "cropping", "faces_focus", "frame", "salient_focus"]
