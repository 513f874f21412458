"""The format registry: one table of what we read and write, as data.

The API's validation, the upload page's choices and the README's table are all generated from
these two mappings, so adding a format is one row here (plus its encoder options in processing).
This module imports nothing heavy, so the web layer can use it without Pillow.
"""

from __future__ import annotations

from dataclasses import dataclass

from imaging.errors import BadRequest


@dataclass(frozen=True)
class OutputFormat:
    name: str  # what clients ask for: ?format=webp
    pillow: str  # Pillow's format name for save()
    mime: str
    ext: str
    alpha: bool
    animation: bool
    default_quality: int | None  # None: lossless by nature
    quality_range: tuple[int, int] = (1, 100)
    label: str = ""


# Defaults chosen on purpose (see README "Formats"):
# - WebP 80: visually close to JPEG 85-90 at roughly 30 % fewer bytes; libwebp's own default is 75.
# - JPEG 85: the usual knee of the size/quality curve; progressive, 4:2:0 chroma.
# - AVIF 60 (Pillow scale): about JPEG 85 quality at roughly half the bytes; speed 7 keeps it quick.
OUTPUT_FORMATS: dict[str, OutputFormat] = {
    "webp": OutputFormat("webp", "WEBP", "image/webp", "webp", True, True, 80, label="WebP"),
    "jpeg": OutputFormat("jpeg", "JPEG", "image/jpeg", "jpg", False, False, 85, label="JPEG"),
    "png": OutputFormat("png", "PNG", "image/png", "png", True, True, None, label="PNG"),
    "avif": OutputFormat("avif", "AVIF", "image/avif", "avif", True, False, 60, label="AVIF"),
    "gif": OutputFormat("gif", "GIF", "image/gif", "gif", True, True, None, label="GIF"),
}

#: Other names clients use for the same output format.
ALIASES: dict[str, str] = {"jpg": "jpeg", "jpe": "jpeg"}


@dataclass(frozen=True)
class InputFormat:
    name: str
    pillow: str  # the Pillow plugin name passed to Image.open(formats=...)
    mime: str
    label: str


#: The allowlist of input formats, detected from the bytes, never from names or headers.
INPUT_FORMATS: dict[str, InputFormat] = {
    "JPEG": InputFormat("jpeg", "JPEG", "image/jpeg", "JPEG"),
    "MPO": InputFormat("jpeg", "MPO", "image/jpeg", "JPEG (MPO)"),
    "PNG": InputFormat("png", "PNG", "image/png", "PNG / APNG"),
    "GIF": InputFormat("gif", "GIF", "image/gif", "GIF"),
    "WEBP": InputFormat("webp", "WEBP", "image/webp", "WebP"),
    "AVIF": InputFormat("avif", "AVIF", "image/avif", "AVIF"),
    "HEIF": InputFormat("heic", "HEIF", "image/heic", "HEIC / HEIF"),
    "TIFF": InputFormat("tiff", "TIFF", "image/tiff", "TIFF"),
    "BMP": InputFormat("bmp", "BMP", "image/bmp", "BMP"),
}

ACCEPTED_INPUT_DESCRIPTION = ", ".join(dict.fromkeys(f.label for f in INPUT_FORMATS.values()))


def accepted_inputs_sentence() -> str:
    """The input formats as a person reads them: ``JPEG, PNG, ..., TIFF or BMP``."""
    names = list(dict.fromkeys(f.label.split(" ")[0] for f in INPUT_FORMATS.values()))
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


#: What the upload page's file picker offers; the server re-checks from the bytes anyway.
ACCEPT_ATTRIBUTE = ",".join(
    sorted({f.mime for f in INPUT_FORMATS.values()} | {".heic", ".heif", ".avif"})
)


def canonical_format(name: str) -> str:
    """``'JPG'`` -> ``'jpeg'``; raises BadRequest for a format we cannot write."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in OUTPUT_FORMATS:
        raise BadRequest(
            f"Unknown output format {name.strip()[:20]!r}. "
            f"Choose from: {', '.join(OUTPUT_FORMATS)}."
        )
    return key


def parse_format_list(raw: str) -> tuple[str, ...]:
    """``'webp,jpg'`` -> ``('webp', 'jpeg')``, de-duplicated, order kept."""
    names = [canonical_format(p) for p in raw.split(",") if p.strip()]
    return tuple(dict.fromkeys(names))


def describe_outputs() -> list[dict[str, object]]:
    """The output registry as plain data, for the API and the upload page alike."""
    return [
        {
            "name": f.name,
            "label": f.label,
            "mime": f.mime,
            "ext": f.ext,
            "alpha": f.alpha,
            "animation": f.animation,
            "default_quality": f.default_quality,
        }
        for f in OUTPUT_FORMATS.values()
    ]
