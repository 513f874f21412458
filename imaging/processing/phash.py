"""A 64-bit perceptual hash (dHash) of an image, and the distance between two of them.

dHash (Neal Krawetz's "difference hash"): shrink to 9x8 grey pixels and keep one bit per pair of
horizontal neighbours, set when the left one is clearly brighter. Re-encoding, resizing, small
crops and colour tweaks flip only a few of the 64 bits, so a small Hamming distance means "looks
the same".
"""

from __future__ import annotations

from PIL import Image

#: The hash's width in bits, and how it is written in a record: 16 hex digits.
BITS = 64
HEX_DIGITS = BITS // 4
#: A bit is set only when the left pixel is brighter by more than this (of 255): in flat areas
#: neighbours are equal but for encoder noise, which would otherwise flip bits at random.
TIE = 2


def dhash(image: Image.Image) -> str:
    """The 64-bit difference hash of ``image`` (any mode) as 16 lowercase hex digits."""
    grey = image.convert("L").resize((9, 8), Image.Resampling.BOX)
    pixels = grey.tobytes()  # 8 rows of 9 bytes
    value = 0
    for row in range(8):
        line = pixels[row * 9 : row * 9 + 9]
        for x in range(8):
            value = (value << 1) | (line[x] > line[x + 1] + TIE)
    return f"{value:0{HEX_DIGITS}x}"


def distance(a: str, b: str) -> int:
    """How many of the 64 bits differ between two hashes (Hamming distance)."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def is_hash(text: str) -> bool:
    """Whether ``text`` is a hash as ``dhash`` writes it (records from before hashing have "")."""
    return len(text) == HEX_DIGITS and all(c in "0123456789abcdef" for c in text)
