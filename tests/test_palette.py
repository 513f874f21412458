"""The palette and the perceptual hash (imaging/processing/palette.py, phash.py)."""

from __future__ import annotations

import pytest
from PIL import Image

from imaging import processing
from imaging.processing.palette import COLOUR_NAMES, colour_name, palette, sample
from imaging.processing.phash import dhash, distance, is_hash
from tests import images


@pytest.mark.parametrize(
    ("rgb", "name"),
    [
        ((230, 25, 35), "red"),
        ((128, 0, 0), "red"),  # maroon
        ((255, 150, 20), "orange"),
        ((250, 225, 40), "yellow"),
        ((30, 150, 50), "green"),
        ((0, 100, 0), "green"),  # dark green
        ((20, 60, 200), "blue"),
        ((0, 0, 128), "blue"),  # navy
        ((135, 206, 235), "blue"),  # sky blue
        ((128, 0, 128), "purple"),
        ((255, 182, 193), "pink"),
        ((139, 69, 19), "brown"),
        ((0, 0, 0), "black"),
        ((128, 128, 128), "grey"),
        ((250, 250, 250), "white"),
    ],
)
def test_colours_get_the_basic_name_people_use(rgb: tuple[int, int, int], name: str) -> None:
    assert colour_name(rgb) == name
    assert name in COLOUR_NAMES


def test_the_palette_orders_colours_by_share_and_drops_slivers() -> None:
    # 96 px shrinks to 32 by whole 3x3 boxes, so the red band's edge blends into no third colour.
    im = Image.new("RGB", (96, 96), (20, 60, 200))
    im.paste((230, 25, 35), (0, 0, 96, 30))  # 31 % red
    im.paste((250, 250, 250), (0, 93, 3, 96))  # one box of white: below the smallest share

    swatches = palette(sample(im))

    assert [s.name for s in swatches] == ["blue", "red"]
    assert swatches[0].share == pytest.approx(0.69, abs=0.02)
    assert all(s.hex.startswith("#") and len(s.hex) == 7 for s in swatches)


def test_transparency_counts_as_white_as_pages_show_it() -> None:
    im = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    assert [s.name for s in palette(sample(im))] == ["white"]


def test_the_hash_survives_resizing_and_recompression_but_not_another_picture() -> None:
    cat = images.open_image(images.photo("chelsea"))
    smaller = images.open_image(images.encode(cat.resize((150, 100)), "JPEG", quality=60))
    coffee = images.open_image(images.photo("coffee"))

    assert is_hash(dhash(cat))
    assert distance(dhash(sample(cat)), dhash(sample(smaller))) <= 8
    assert distance(dhash(sample(cat)), dhash(sample(coffee))) > 16


def test_a_flat_image_hashes_to_zero_whatever_the_encoder_noise() -> None:
    noisy = images.open_image(images.encode(Image.new("RGB", (64, 64), (200, 20, 30)), "JPEG"))
    assert dhash(sample(noisy)) == "0" * 16


def test_appearance_reads_both_from_a_decoded_image() -> None:
    data = images.photo("chelsea")
    probed = processing.probe(data, processing.Limits(10**7, 10**8, 10**4, 10))
    decoded = processing.decode(data, probed, specs=[], max_side=4096, keep_copyright=False)

    look = processing.appearance(decoded)

    assert look.colours[0].name == "brown"
    assert is_hash(look.phash)
