"""Colour normalisation: every frame to L, RGB or RGBA in sRGB, whatever mode and profile it has."""

from __future__ import annotations

import io

from PIL import Image, ImageCms, ImageMath

_SRGB = ImageCms.createProfile("sRGB")


class Colour:
    """Brings every frame to L, RGB or RGBA in sRGB; builds each ICC transform once per image.

    ``status`` says what happened to the embedded ICC profile (see ``Decoded.profile``).
    """

    def __init__(self, icc: bytes | None, bit_depth: int, *, in_place: bool) -> None:
        self.status = "none"
        self._bit_depth = bit_depth
        self._in_place = in_place  # never in an animation: Pillow composes the next frame on it
        self._profile: ImageCms.ImageCmsProfile | None = None
        self._transforms: dict[str, ImageCms.ImageCmsTransform | None] = {}
        if icc:
            try:
                self._profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
                self.status = "ignored"

    def normalise(self, frame: Image.Image) -> Image.Image:
        """``frame`` itself when nothing needed doing, else a new image (with ``info`` copied)."""
        im = frame
        profile_applied = False
        if self._profile is not None and im.mode == "CMYK":
            # A CMYK profile must see CMYK pixels: convert before any naive CMYK -> RGB.
            im = self._to_srgb(im)
            profile_applied = True
        im = self._to_standard_mode(im)
        if self._profile is not None and not profile_applied:
            im = self._to_srgb(im)
        if im.mode == "RGBA" and im.getchannel("A").getextrema()[0] == 255:
            im = im.convert("RGB")  # fully opaque: drop the channel, it only costs bytes
        return im

    def _to_standard_mode(self, im: Image.Image) -> Image.Image:
        mode = im.mode
        transparency = im.info.get("transparency")
        if mode.startswith("I"):
            return self._from_wide_grey(im)
        if mode == "F":
            return im.convert("L")
        if mode in ("L", "RGB") and transparency is not None:
            # Pillow keeps a PNG's tRNS colour at the file's bit depth, but its pixels in 8 bits.
            if mode == "RGB" and self._bit_depth == 16 and isinstance(transparency, tuple):
                im = im.copy()
                im.info["transparency"] = tuple(v >> 8 for v in transparency)
            elif mode == "L" and self._bit_depth in (2, 4) and isinstance(transparency, int):
                im = im.copy()
                im.info["transparency"] = transparency * 255 // (2**self._bit_depth - 1)
            return im.convert("RGBA")
        if mode in ("RGB", "RGBA", "L"):
            return im
        if mode == "P":
            # Not has_transparency_data: it asserts on a (damaged) palette image with no palette.
            alpha = "transparency" in im.info or (im.palette is not None and "A" in im.palette.mode)
            return im.convert("RGBA" if alpha else "RGB")
        if mode == "1":
            return im.convert("RGBA" if transparency is not None else "L")
        if mode in ("LA", "La", "PA", "RGBa"):
            return im.convert("RGBA")
        return im.convert("RGBA" if im.has_transparency_data else "RGB")

    def _from_wide_grey(self, im: Image.Image) -> Image.Image:
        """16-bit greyscale scaled to 8 bits, instead of clipping everything above 255 to white."""
        wide = im if im.mode == "I" else im.convert("I")
        grey = wide.point(lambda v: v * (1 / 256)).convert("L")
        transparent = im.info.get("transparency")
        if not isinstance(transparent, int):
            return grey
        alpha = ImageMath.lambda_eval(lambda a: (a["im"] != transparent) * 255, im=wide)
        return Image.merge("LA", (grey, alpha.convert("L"))).convert("RGBA")

    def _to_srgb(self, im: Image.Image) -> Image.Image:
        transform = self._transform(im.mode)
        if transform is None:
            return im
        if transform.input_mode == transform.output_mode and self._in_place:
            ImageCms.applyTransform(im, transform, inPlace=True)
            return im
        converted = ImageCms.applyTransform(im, transform)
        assert converted is not None
        # A grey profile's grey stays grey in sRGB: back to one channel, a third of the bytes.
        return converted.convert("L") if im.mode == "L" else converted

    def _transform(self, mode: str) -> ImageCms.ImageCmsTransform | None:
        if mode in self._transforms:
            return self._transforms[mode]
        assert self._profile is not None
        transform: ImageCms.ImageCmsTransform | None = None
        out_mode = {"CMYK": "RGB", "L": "RGB"}.get(mode, mode)
        try:
            transform = ImageCms.buildTransform(self._profile, _SRGB, mode, out_mode)
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            # The profile does not describe these pixels (an RGB profile on a grey image...):
            # browsers ignore such a profile and so do we.
            self.status = "ignored"
        else:
            if mode in ("RGB", "RGBA") and _is_identity(transform):
                # Most camera JPEGs embed sRGB itself: converting would cost a pass for nothing.
                transform = None
                if self.status == "none":
                    self.status = "srgb"
            else:
                self.status = "converted"
        self._transforms[mode] = transform
        return transform


def _is_identity(transform: ImageCms.ImageCmsTransform) -> bool:
    """Whether ``transform`` leaves colours alone (within rounding) on a spread of samples."""
    levels = range(0, 256, 15)
    mode = transform.input_mode
    pixels = bytes(
        v for r in levels for g in levels for b in levels for v in (r, g, b, 255)[: len(mode)]
    )
    sample = Image.frombytes(mode, (len(pixels) // len(mode), 1), pixels)
    out = ImageCms.applyTransform(sample, transform)
    assert out is not None
    return max(abs(a - b) for a, b in zip(pixels, out.tobytes(), strict=True)) <= 2
