"""Test images built in memory (Pillow's way): small, deterministic, each for one purpose."""

from __future__ import annotations

import io
import random
import struct
import zlib
from typing import Any

from PIL import Image, ImageDraw, ImageFont


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


# -- Added for the engine's tests (tests/test_processing.py, tests/test_pngsuite.py) ---------

#: sRGB's red, green and blue colorants, adapted to the D50 white of the ICC connection space.
SRGB_COLORANTS = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))
_D50 = (0.9642, 1.0, 0.8249)


def _icc_s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _icc_profile(space: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """An ICC v2 display profile: a 128-byte header, a tag table, then the tags (4-aligned)."""
    table_end = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += signature + struct.pack(">II", table_end + len(body), len(data))
        body += data
    header = (
        struct.pack(
            ">I4sI4s4s4s", table_end + len(body), b"none", 0x02100000, b"mntr", space, b"XYZ "
        )
        + b"\0" * 12  # creation date
        + b"acsp"
        + b"\0" * 28  # platform, flags, manufacturer, model, attributes, intent
        + b"".join(_icc_s15(v) for v in _D50)  # the connection space's illuminant
        + b"\0" * 48  # creator, profile id, reserved
    )
    return header + struct.pack(">I", len(tags)) + table + body


def _icc_xyz(xyz: tuple[float, float, float]) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_icc_s15(v) for v in xyz)


def _icc_gamma(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))


def rgb_icc_profile(
    red: tuple[float, float, float],
    green: tuple[float, float, float],
    blue: tuple[float, float, float],
    gamma: float = 2.2,
) -> bytes:
    """A matrix/TRC RGB profile with the given colorants: enough to build any RGB colour space."""
    curve = _icc_gamma(gamma)
    return _icc_profile(
        b"RGB ",
        [
            (b"wtpt", _icc_xyz(_D50)),
            (b"rXYZ", _icc_xyz(red)),
            (b"gXYZ", _icc_xyz(green)),
            (b"bXYZ", _icc_xyz(blue)),
            (b"rTRC", curve),
            (b"gTRC", curve),
            (b"bTRC", curve),
        ],
    )


def swapped_primaries_profile() -> bytes:
    """sRGB with red and green swapped: pure red in this space IS sRGB's pure green.

    No real camera uses it, which is the point: if the profile is honoured the colour flips,
    so a test can tell a converted image from one whose profile was ignored.
    """
    red, green, blue = SRGB_COLORANTS
    return rgb_icc_profile(green, red, blue)


def grey_icc_profile(gamma: float = 1.0) -> bytes:
    """A greyscale profile; gamma 1.0 (linear light) makes mid-grey visibly lighter in sRGB."""
    return _icc_profile(b"GRAY", [(b"wtpt", _icc_xyz(_D50)), (b"kTRC", _icc_gamma(gamma))])


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` RGB pixels, followed by a 1-row IDAT.

    The header is valid (right CRCs), so only the size check stands between it and a decoder
    asked to allocate width*height*3 bytes.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0\0\0\0"))
        + png_chunk(b"IEND", b"")
    )


def gif_with_screen(width: int, height: int) -> bytes:
    """A GIF whose logical screen is ``width`` x ``height`` but whose one image is 1x1."""
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", width, height, 0x80, 0, 0)
        + b"\0\0\0\xff\xff\xff"  # two-colour global table
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        + b"\x02\x02\x44\x01\x00"  # LZW data for one pixel
        + b";"
    )


def gif_of_frames(frames: int) -> bytes:
    """A 1x1 GIF of ``frames`` frames, built block by block (fast for thousands of frames)."""
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return gif_with_screen(1, 1)[:-11] + frame * frames + b";"


def psd(width: int = 8, height: int = 8) -> bytes:
    """A minimal, valid Photoshop file (raw RGB): Pillow can read it, the allowlist must not."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    return (
        header
        + struct.pack(">III", 0, 0, 0)
        + struct.pack(">H", 0)
        + b"\x80" * (3 * width * height)
    )


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Random RGB pixels: incompressible, so a lossy encoder cannot return them unchanged."""
    return Image.frombytes(
        "RGB", (width, height), random.Random(seed).randbytes(width * height * 3)
    )


def logo(width: int = 400, height: int = 300) -> Image.Image:
    """Flat art: a red disc, a blue bar and a red triangle on white (three colours, smooth
    edges drawn at 4x and reduced, as a real logo's are)."""
    im = Image.new("RGB", (width * 4, height * 4), "white")
    draw = ImageDraw.Draw(im)
    w, h = width * 4, height * 4
    draw.ellipse((w // 16, h // 12, w * 7 // 16, h * 7 // 12), fill=(220, 30, 40))
    draw.rectangle((w // 2, h // 6, w * 7 // 8, h // 2), fill=(20, 60, 200))
    draw.polygon(
        [(w // 8, h * 11 // 12), (w // 2, h * 2 // 3), (w * 7 // 8, h * 11 // 12)],
        fill=(220, 30, 40),
    )
    return im.resize((width, height), Image.Resampling.LANCZOS)


def corner_marked(width: int = 60, height: int = 40) -> Image.Image:
    """Blue, with a red square in the top-left corner: shows where a rotation took that corner."""
    im = Image.new("RGB", (width, height), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, width // 4, height // 4))
    return im


def bands(width: int = 300, height: int = 100) -> Image.Image:
    """Three vertical bands, red | green | blue: a centred crop keeps only green."""
    im = Image.new("RGB", (width, height), (0, 255, 0))
    im.paste((255, 0, 0), (0, 0, width // 3, height))
    im.paste((0, 0, 255), (2 * width // 3, 0, width, height))
    return im


def large_jpeg(width: int = 4000, height: int = 3000) -> bytes:
    """A big photo-sized JPEG, quick to make: the gradient, stretched."""
    return encode(gradient(64, 48).resize((width, height), Image.Resampling.BILINEAR), "JPEG")


#: What ``camera_photo`` says the camera recorded, as a record keeps it.
CAMERA_FACTS = {
    "make": "Fujifilm",
    "model": "X-T5",
    "lens": "XF 35mm F1.4 R",
    "taken_at": "2025-06-14T18:42:07+02:00",
    "exposure_time": 0.004,
    "f_number": 2.8,
    "iso": 400,
    "focal_length": 35.0,
}
#: Where ``camera_photo`` was taken: none of it may reach a record, a page or a copy.
GPS_POSITION = {1: "N", 2: (48.0, 51.0, 29.5), 3: "E", 4: (2.0, 17.0, 40.2)}


def camera_photo(
    width: int = 64, height: int = 48, gps: bool = True, image: Image.Image | None = None
) -> bytes:
    """A JPEG (of ``image``, or of a gradient) whose EXIF holds a camera's facts
    (``CAMERA_FACTS``) and, like a phone's, a GPS position (``GPS_POSITION``)."""
    from PIL import TiffImagePlugin

    exif = Image.Exif()
    exif[0x010F] = "Fujifilm"
    exif[0x0110] = "X-T5"
    sub = exif.get_ifd(0x8769)
    sub[0x829A] = TiffImagePlugin.IFDRational(1, 250)  # ExposureTime
    sub[0x829D] = TiffImagePlugin.IFDRational(28, 10)  # FNumber
    sub[0x8827] = 400  # ISO
    sub[0x9003] = "2025:06:14 18:42:07"  # DateTimeOriginal
    sub[0x9011] = "+02:00"  # OffsetTimeOriginal
    sub[0x920A] = TiffImagePlugin.IFDRational(35, 1)  # FocalLength
    sub[0xA434] = "XF 35mm F1.4 R"  # LensModel
    if gps:
        exif.get_ifd(0x8825).update(GPS_POSITION)
    pixels = gradient(width, height) if image is None else image
    return encode(pixels, "JPEG", quality=90, exif=exif)


def skimage_photo(name: str) -> Image.Image:
    """A sample photo shipped inside scikit-image's wheel ('astronaut', 'camera', ...), as RGB."""
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB")


def on_white(picture: Image.Image) -> Image.Image:
    """RGB, any transparency flattened onto white (as the pipeline flattens a labeler's copy)."""
    rgba = picture.convert("RGBA")
    flat = Image.new("RGB", rgba.size, "white")
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def matplotlib_sample(name: str) -> Image.Image:
    """A picture shipped inside matplotlib's wheel (``mpl-data/sample_data``), as RGB:
    'grace_hopper.jpg' (a portrait), 'Minduka_Present_Blue_Pack.png' (clip art of a present),
    'logo2.png' (the matplotlib logo) or 's1045.ima.gz' (an MRI slice of a head)."""
    import gzip

    import numpy as np
    from matplotlib import cbook

    path = cbook.get_sample_data(name, asfileobj=False)
    if name == "s1045.ima.gz":  # raw 256x256 16-bit samples, as matplotlib's MRI demo reads it
        with gzip.open(path) as raw:
            samples = np.frombuffer(raw.read(), np.uint16)
        scaled = samples.reshape(256, 256).astype(np.float64) * 255 / max(1, int(samples.max()))
        return Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
    with Image.open(path) as picture:
        return on_white(picture)


def sklearn_photo(name: str) -> Image.Image:
    """A photo shipped inside scikit-learn's wheel ('china.jpg', 'flower.jpg'; CC BY 2.0)."""
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image(name)).convert("RGB")


def portrait() -> Image.Image:
    """One person: scikit-image's astronaut (Eileen Collins), 512x512."""
    return skimage_photo("astronaut")


def group() -> Image.Image:
    """Four people: portraits in a 2x2 grid, two astronauts and two cameramen, 800x800."""
    astronaut = portrait().resize((400, 400))
    cameraman = skimage_photo("camera").resize((400, 400))
    grid = Image.new("RGB", (800, 800))
    for tile, place in ((astronaut, (0, 0)), (cameraman, (400, 0))):
        grid.paste(tile, place)
    for tile, place in ((cameraman, (0, 400)), (astronaut, (400, 400))):
        grid.paste(tile, place)
    return grid


#: The words ``screenshot()`` shows, line by line.
SCREEN_LINES = (
    "Quarterly report for the harbour office",
    "Invoice number 4711 is due on Friday",
    "Please restart the server before lunch",
    "Gallery settings and upload limits",
)


def screenshot(lines: tuple[str, ...] = SCREEN_LINES, *, dark: bool = False) -> Image.Image:
    """A screenshot-like picture, 1280x800: lines of text in Pillow's bundled TrueType font
    (no system font needed)."""
    background, ink = ("#1e1e28", "#e6e6e6") if dark else ("white", "#141414")
    picture = Image.new("RGB", (1280, 800), background)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=22)
    for row, line in enumerate(lines):
        draw.text((30, 30 + row * 40), line, font=font, fill=ink)
    return picture


def photographed_page(*, ink: bool = True) -> Image.Image:
    """A page of printed text as a phone or scanner sees it, 1280x800: 16 lines of
    ``SCREEN_LINES`` on grey paper lit unevenly (a third darker at the right) with sensor
    noise, so no area of it is flat; ``ink=False`` gives the blank sheet."""
    import numpy as np

    sheet = screenshot(SCREEN_LINES * 4 if ink else ())
    pixels = np.asarray(sheet.convert("L"), dtype=np.float64)
    light = np.linspace(0.9, 0.6, pixels.shape[1])[None, :]
    noise = np.random.default_rng(7).normal(0, 12, pixels.shape)
    seen = np.clip(pixels * light + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(seen).convert("RGB")
