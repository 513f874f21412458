"""The format registry: one table of what we read and write, as data.

The API's validation, the upload page's choices and the README's table are all generated from
these two mappings, so adding a format is one row here, its encoder options included (the way
Pillow's plugins register their save options): the engine reads them and never branches on a
format's name. This module imports nothing heavy, so the web layer can use it without Pillow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from imaging.errors import BadRequest

#: The encoder efforts a deployment chooses from (ENCODER_EFFORT): ``fast`` spends the least CPU
#: that keeps the output within +5 % bytes and -0.005 SSIM of Pillow's default effort;
#: ``smallest`` restores the slower settings that give the smallest files. Measured by
#: ``python -m benchmarks.encoders`` (docs/benchmarks.md, "Encoder settings").
EFFORTS = ("fast", "smallest")
DEFAULT_EFFORT = "fast"

#: Lossy WebP outputs larger than this are saved with libwebp method 2 whatever the effort.
#: From method 3 up, libwebp keeps a token buffer for the whole image: about 4 bytes a pixel
#: (200 MB for 50 MP) on top of its ARGB and YUV copies, and its time grows faster than the
#: pixel count (50 MP: 18 s against 2.4 s). Method 2 gives the same bytes within 2 % at 0.2-0.3 dB
#: less PSNR (README "Benchmarks").
LARGE_WEBP_PIXELS = 16_000_000


@dataclass(frozen=True)
class SaveOptions:
    """How the engine saves one output format: Pillow ``save()`` keyword arguments, as data.

    Every save gets ``options``; a lossy format (one with a ``default_quality``) also gets
    ``quality``, unless a lossless save was asked for and the format has ``lossless`` options.
    """

    options: Mapping[str, object] = field(default_factory=dict)
    #: Added to ``options`` by encoder effort (``EFFORTS``); an effort not named adds nothing.
    effort: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    #: Used instead of ``quality`` for lossless=1. None: the flag changes nothing for this format
    #: (PNG and GIF are lossless anyway; JPEG and AVIF are always lossy here).
    lossless: Mapping[str, object] | None = None
    #: A lossy save of more than ``large_pixels`` pixels adds ``large`` (a cheaper effort).
    large_pixels: int | None = None
    large: Mapping[str, object] = field(default_factory=dict)
    #: Whether the EXIF kept by KEEP_COPYRIGHT=1 is written.
    exif: bool = True
    #: Frames are quantised to a palette first (GIF has no other mode for colour).
    palette: bool = False
    #: Added to the save of an animation.
    animation: Mapping[str, object] = field(default_factory=dict)
    #: ``loop`` for an animation that plays once. WebP and APNG count plays, so 1 plays once;
    #: None leaves ``loop`` out (a GIF without a loop extension plays once).
    loop_once: int | None = 1


@dataclass(frozen=True)
class OutputFormat:
    name: str  # what clients ask for: ?format=webp
    pillow: str  # Pillow's format name for save() ("" when another renderer writes it)
    mime: str
    ext: str
    alpha: bool
    animation: bool
    default_quality: int | None  # None: lossless by nature
    quality_range: tuple[int, int] = (1, 100)
    label: str = ""
    save: SaveOptions = field(default_factory=SaveOptions)
    #: Which renderer writes it (``imaging.processing.encoding.RENDERERS``): ``pillow`` saves
    #: raster pixels with ``save``; ``vtracer`` traces flat art into SVG paths (``vector``).
    renderer: str = "pillow"


# Defaults chosen on purpose (see README "Formats"):
# - WebP 80: visually close to JPEG 85-90 at roughly 30 % fewer bytes; libwebp's own default is 75.
# - JPEG 85: the usual knee of the size/quality curve; progressive, 4:2:0 chroma.
# - AVIF 60 (Pillow scale): about JPEG 85 quality at roughly half the bytes; speed 7 keeps it quick.
OUTPUT_FORMATS: dict[str, OutputFormat] = {
    # Method 2 encodes a photo 1.8-2.7x faster than 4 for +3-4 % bytes, -0.003 SSIM; 3 costs
    # what 4 does, 0 and 1 lose 0.013 SSIM or add 17-23 % bytes. Lossless keeps method 4.
    "webp": OutputFormat(
        "webp", "WEBP", "image/webp", "webp", True, True, 80, label="WebP",
        save=SaveOptions(
            effort={"fast": {"method": 2}, "smallest": {"method": 4}},
            lossless={"lossless": True, "quality": 100, "method": 4},
            large_pixels=LARGE_WEBP_PIXELS,
            large={"method": 2},
        ),
    ),
    "jpeg": OutputFormat(
        "jpeg", "JPEG", "image/jpeg", "jpg", False, False, 85, label="JPEG",
        # Progressive (optimised tables): 7 % fewer bytes than baseline for ~10 ms a megapixel.
        save=SaveOptions({"progressive": True, "optimize": False, "subsampling": "4:2:0"}),
    ),
    "png": OutputFormat(
        "png", "PNG", "image/png", "png", True, True, None, label="PNG",
        # Level 3 is 2x faster but adds 5-10 % bytes on photos; optimize saves 2-4 % at 1.2x-8x.
        save=SaveOptions(
            {"compress_level": 6}, effort={"smallest": {"optimize": True}}
        ),
    ),
    "avif": OutputFormat(
        "avif", "AVIF", "image/avif", "avif", True, False, 60, label="AVIF",
        # libavif would use every core; one conversion per core is the budget (CONVERSION_SLOTS).
        # Speed 7: 1.2-2.1x faster than libavif's default 6 for +3-6 % bytes, -0.003 SSIM.
        save=SaveOptions(
            {"max_threads": 1}, effort={"fast": {"speed": 7}, "smallest": {"speed": 6}}
        ),
    ),
    "gif": OutputFormat(
        "gif", "GIF", "image/gif", "gif", True, True, None, label="GIF",
        save=SaveOptions(exif=False, palette=True, animation={"disposal": 2}, loop_once=None),
    ),
    # Traced, not saved by Pillow: logos and flat art become <path>s; a photo is refused (422).
    "svg": OutputFormat(
        "svg", "", "image/svg+xml", "svg", True, False, None, label="SVG", renderer="vtracer",
    ),
}  # fmt: skip

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
