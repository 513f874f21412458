"""The local labeler's evaluation: does it name real photos in the words a person would use?

    .venv/bin/python -m benchmarks.labels

An evaluation set built from the pictures shipped inside scikit-image's wheel
(``skimage.data``), matplotlib's (``sample_data``) and scikit-learn's (``load_sample_image``),
the 2x2 group of portraits and the rendered screenshots of ``tests/images.py``, each with the
words a person would use for it (written down before looking at the output, and not tuned to
it). The first 17 pictures were the first set; their hit rate is printed on its own too.
Each picture is labelled as an upload is (the LOCAL_FEATURES default: classes, faces, text, on
a JPEG within 640 px; the text reader reads the picture itself) and the benchmark prints its
top labels, whether an expected word is among the labels shown (``shown``) and whether a
search for it finds the picture (``search``: the labels' vocabulary parents count, as in
imaging/search.py), then the hit rates and how often
the cheap look for text is right (each wrong pass costs an OCR run). Then ``benchmarks.findings``
prints, on the same pictures, the CPU each step adds (classes, faces, the text check, OCR), OCR
word recall on the screenshots and the memory of each model: one measurement, one place. In
between, the int8 classifier (the default) is compared with the float32 one on the same
pictures (``precisions``).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import findings
from tests.images import matplotlib_sample, on_white, skimage_photo, sklearn_photo

#: Per picture, the words a person would type for it; a hit is any one of them. Written down
#: from looking at each picture, before any run, and never changed after seeing the results.
EXPECTED: dict[str, tuple[str, ...]] = {
    "astronaut": ("person", "astronaut"),
    "camera": ("person", "camera", "photographer"),
    "coffee": ("coffee", "cup"),
    "chelsea": ("cat",),
    "rocket": ("rocket", "spacecraft"),
    "hubble_deep_field": ("galaxy", "space", "star"),
    "coins": ("coin", "money"),
    "clock": ("clock",),
    "horse": ("horse",),
    "moon": ("moon",),
    "stereo_motorcycle": ("motorcycle", "motorbike"),
    "retina": ("eye", "retina"),
    "page": ("text",),
    "group of 4": ("people",),
    "screenshot 1": ("text",),
    "screenshot 2": ("text",),
    "screenshot 3": ("text",),
    # Added later (issue 11's proof): the rest of scikit-image's shipped pictures that a person
    # might upload, matplotlib's sample_data pictures and scikit-learn's sample photos.
    "grace_hopper": ("person", "woman", "officer"),
    "china": ("pagoda", "temple", "tower", "building"),
    "flower": ("flower", "dahlia"),
    "present": ("gift", "present", "box"),
    "matplotlib logo": ("logo", "text"),
    "logo": ("logo",),
    "text": ("text", "writing", "handwriting"),
    "brick": ("brick", "wall"),
    "grass": ("grass", "lawn"),
    "gravel": ("gravel", "stone", "pebble"),
    "mri": ("brain", "head", "scan", "mri"),
    "cell": ("cell", "microscope"),
    "immunohistochemistry": ("cell", "tissue", "microscope"),
}
#: The first evaluation set (17 pictures): its hit rate is kept comparable across changes.
FIRST_SET = tuple(EXPECTED)[:17]
#: The pictures holding text (rendered, printed, handwritten or a logo's word); the others must
#: not pass the cheap look for text (each that does costs an OCR run).
HOLDS_TEXT = frozenset(
    {"page", "screenshot 1", "screenshot 2", "screenshot 3", "matplotlib logo", "text"}
)
#: Pictures shipped in scikit-image that nobody would label (test patterns, a tiny crop): not
#: in the set, but the look for text must turn them down too.
NOT_IN_SET = ("colorwheel", "shepp_logan_phantom", "microaneurysms", "checkerboard")


def evaluation_set() -> dict[str, Image.Image]:
    """The set's pictures by name, in ``EXPECTED``'s order."""
    from skimage import data

    pictures = findings.pictures()
    for name in ("coins", "clock", "horse", "moon", "retina", "page", "text"):
        pictures[name] = skimage_photo(name)
    for name in ("brick", "grass", "gravel", "cell", "immunohistochemistry"):
        pictures[name] = skimage_photo(name)
    pictures["logo"] = on_white(Image.fromarray(data.logo()))
    # A stereo pair: (left, right, disparity)
    pictures["stereo_motorcycle"] = Image.fromarray(data.stereo_motorcycle()[0]).convert("RGB")
    pictures["grace_hopper"] = matplotlib_sample("grace_hopper.jpg")
    pictures["present"] = matplotlib_sample("Minduka_Present_Blue_Pack.png")
    pictures["matplotlib logo"] = matplotlib_sample("logo2.png")
    pictures["mri"] = matplotlib_sample("s1045.ima.gz")
    pictures["china"] = sklearn_photo("china.jpg")
    pictures["flower"] = sklearn_photo("flower.jpg")
    return {name: pictures[name] for name in EXPECTED}


def main() -> None:
    from imaging.labeling.local import LocalLabeler
    from imaging.processing import LabelImage
    from imaging.search import parents, words

    with tempfile.TemporaryDirectory() as cache:
        models = findings.load_models(Path(cache))
        labeler = LocalLabeler(cache_dir=Path(cache), faces=models.detector, reader=models.reader)
        pictures = evaluation_set()
        print("per picture: the labels shown (best first), and whether an expected word is")
        print("among them (shown) and whether searching for it finds the picture (search)")
        print(f"{'picture':<20} {'expected':<28} {'shown':>5} {'search':>6}  top labels")
        shown_hits: dict[str, bool] = {}
        search_hits: dict[str, bool] = {}
        for name, picture in pictures.items():
            buffer = io.BytesIO()
            findings.label_copy(picture).save(buffer, "JPEG", quality=95)
            # As an upload: the labelers read the small copy, the text reader the picture.
            copy = LabelImage.from_bytes(buffer.getvalue(), text_source=picture.convert("RGB"))
            result = labeler.label(copy)
            descriptions = [label.description for label in result.labels]
            shown_words = {w for d in descriptions for w in d.lower().split()}
            searchable = {w for d in descriptions for text in (d, *parents(d)) for w in words(text)}
            expected = EXPECTED[name]
            shown = shown_hits[name] = any(word in shown_words for word in expected)
            search = search_hits[name] = any(set(words(word)) <= searchable for word in expected)
            top = ", ".join(f"{label.description} {label.score:.2f}" for label in result.labels)
            print(
                f"{name:<20} {'/'.join(expected):<28} {'yes' if shown else 'NO':>5} "
                f"{'yes' if search else 'NO':>6}  {top or '(none)'}"
            )
        for title, names in (("first set", FIRST_SET), ("whole set", tuple(EXPECTED))):
            shown_count = sum(shown_hits[n] for n in names)
            search_count = sum(search_hits[n] for n in names)
            print(
                f"hit rate, {title}: shown {shown_count}/{len(names)} "
                f"({shown_count / len(names):.0%}), search {search_count}/{len(names)} "
                f"({search_count / len(names):.0%})"
            )
        look_for_text(pictures)
        print()
        precisions(Path(cache), pictures)
        print()
        findings.costs(models, pictures)


def look_for_text(pictures: dict[str, Image.Image]) -> None:
    """How often the cheap look for text is right, on the set and on scikit-image's patterns."""
    from skimage import data

    from imaging.labeling.text import likely_text

    patterns = {name: Image.fromarray(getattr(data, name)()).convert("RGB") for name in NOT_IN_SET}
    passed = {n for n, p in {**pictures, **patterns}.items() if likely_text(findings.label_copy(p))}
    with_text = sorted(HOLDS_TEXT)
    without = [n for n in (*pictures, *patterns) if n not in HOLDS_TEXT]
    missed = [n for n in with_text if n not in passed]
    wrong = [n for n in without if n in passed]
    print(
        f"look for text: passed {len(with_text) - len(missed)} of {len(with_text)} pictures "
        f"holding text (missed: {', '.join(missed) or 'none'}); passed {len(wrong)} of "
        f"{len(without)} without (an OCR run each: {', '.join(wrong) or 'none'})"
    )


def precisions(cache: Path, pictures: dict[str, Image.Image]) -> None:
    """The int8 classifier (the default) against float32 on the same pictures: the top class
    of each, whether each one's top class is in the other's top 5, how many of the top 5 they
    share, and the largest difference in any class's probability."""
    from imaging.labeling.effnet import INPUT_SIZE
    from imaging.labeling.local import LocalLabeler
    from imaging.labeling.vocabulary import vocabulary
    from imaging.processing import LabelImage

    names = [c.name for c in vocabulary().classes]
    sessions = {
        precision: LocalLabeler(cache_dir=cache, precision=precision)._loaded().session
        for precision in ("float", "int8")
    }
    print("int8 against float32, the classifier's own classes (probabilities):")
    print(f"{'picture':<18} {'float top class':<28} {'int8 top class':<28} top-5 shared  max diff")
    same_top = in_top5 = shared = 0
    worst = 0.0
    for name, picture in pictures.items():
        buffer = io.BytesIO()
        findings.label_copy(picture).save(buffer, "JPEG", quality=95)
        square = LabelImage.from_bytes(buffer.getvalue()).square_rgb(INPUT_SIZE)
        batch = np.frombuffer(square, np.uint8).reshape(1, INPUT_SIZE, INPUT_SIZE, 3)
        p = {k: s.run(["probabilities"], {"pixels": batch})[0][0] for k, s in sessions.items()}
        top5 = {k: set(np.argsort(-v)[:5].tolist()) for k, v in p.items()}
        best = {k: int(np.argmax(v)) for k, v in p.items()}
        same_top += best["float"] == best["int8"]
        in_top5 += best["float"] in top5["int8"] and best["int8"] in top5["float"]
        shared += len(top5["float"] & top5["int8"])
        diff = float(np.abs(p["float"] - p["int8"]).max())
        worst = max(worst, diff)
        cells = [f"{names[best[k]][:22]} {p[k][best[k]]:.2f}" for k in ("float", "int8")]
        print(
            f"{name:<18} {cells[0]:<28} {cells[1]:<28} "
            f"{len(top5['float'] & top5['int8'])}/5{'':>8} {diff:.2f}"
        )
    total = len(pictures)
    print(
        f"same top class {same_top}/{total}; each top class in the other's top 5 "
        f"{in_top5}/{total}; top 5 shared {shared}/{5 * total}; largest difference {worst:.2f}"
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
