"""What the camera recorded, read from the original's EXIF before decoding strips it.

An allowlist, never a copy: camera make and model, lens, date taken, exposure time, f-number,
ISO and focal length. Nothing else is read, so the GPS IFD (where a phone keeps the place a
photo was taken) is never even opened. Every value is untrusted input: text is cut to printable
characters and a short length, numbers must be finite and positive, a date must look like one.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from PIL import Image

#: IFD0 tags.
MAKE, MODEL, EXIF_IFD = 0x010F, 0x0110, 0x8769
#: Exif sub-IFD tags.
EXPOSURE_TIME, F_NUMBER, ISO = 0x829A, 0x829D, 0x8827
DATE_TAKEN, DATE_OFFSET, FOCAL_LENGTH = 0x9003, 0x9011, 0x920A
LENS_MAKE, LENS_MODEL = 0xA433, 0xA434

MAX_TEXT = 80
_DATE = re.compile(r"^(\d{4}):(\d{2}):(\d{2}) (\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"^[+-]\d{2}:\d{2}$")


@dataclass(frozen=True)
class Camera:
    """The shooting facts of a photo; a field is ``None`` when the file does not say."""

    make: str | None = None
    model: str | None = None
    lens: str | None = None
    taken_at: str | None = None  # ISO 8601, as the camera's clock said (with its offset if known)
    exposure_time: float | None = None  # seconds
    f_number: float | None = None
    iso: int | None = None
    focal_length: float | None = None  # mm

    def as_dict(self) -> dict[str, Any]:
        """The fields the file did give: what a record keeps (``{}`` for none)."""
        return {name: value for name, value in asdict(self).items() if value is not None}


def read_camera(image: Image.Image) -> Camera:
    """The camera facts in the EXIF of ``image``; an empty ``Camera`` when none or broken."""
    try:
        exif = image.getexif()
        if not exif:
            return Camera()
        sub = exif.get_ifd(EXIF_IFD)
        make, model = _text(exif.get(MAKE)), _text(exif.get(MODEL))
        if make and model and model.lower().startswith(make.lower()):
            model = model[len(make) :].strip() or model  # "Canon" + "Canon EOS R5": say it once
        lens = _text(sub.get(LENS_MODEL))
        lens_make = _text(sub.get(LENS_MAKE))
        if lens and lens_make and not lens.lower().startswith(lens_make.lower()):
            lens = f"{lens_make} {lens}"[:MAX_TEXT]
        iso = _number(_first(sub.get(ISO)))
        return Camera(
            make=make,
            model=model,
            lens=lens,
            taken_at=_date(sub.get(DATE_TAKEN), sub.get(DATE_OFFSET)),
            exposure_time=_number(sub.get(EXPOSURE_TIME)),
            f_number=_rounded(_number(sub.get(F_NUMBER)), 1),
            iso=None if iso is None else int(iso),
            focal_length=_rounded(_number(sub.get(FOCAL_LENGTH)), 1),
        )
    except (ValueError, TypeError, KeyError, struct.error, SyntaxError, OSError):
        # A broken EXIF block costs the photo its camera facts, never its upload.
        return Camera()


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = " ".join("".join(ch for ch in value if ch.isprintable()).split())
    return text[:MAX_TEXT] or None


def _first(value: object) -> object:
    # ISO is a list of values in some files (one per sensitivity type): the first is the one.
    return value[0] if isinstance(value, tuple | list) and value else value


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]  # int, float or IFDRational
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _date(value: object, offset: object) -> str | None:
    text = _text(value)
    match = _DATE.match(text or "")
    if match is None:
        return None
    try:  # "0000:00:00 00:00:00" is how many cameras say "clock not set"
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        stamp = datetime(year, month, day, hour, minute, second).isoformat()
    except ValueError:
        return None
    zone = _text(offset)
    return f"{stamp}{zone}" if zone and _OFFSET.match(zone) else stamp
