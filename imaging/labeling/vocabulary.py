"""The words people use for the local model's ImageNet classes, with the model's scores rolled up.

The model answers in ImageNet's 1000 classes ("tabby cat", "minibus"); people search for "cat",
"bus", "animal", "vehicle". ``data/imagenet-vocabulary.json`` (made from WordNet by
``scripts/build-vocabulary``) gives each class a display name and its chain of common parent
words, nearest first, ending in one top-level word (tabby cat -> cat -> animal). A word's score
is the sum of the probabilities of every class it names or stands above, so a parent is always at
least as likely as any of its children, and the top-level words share out the whole probability.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass
from importlib.resources import files
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["CLASS_COUNT", "Kind", "Vocabulary", "WordScore", "roll_up", "vocabulary"]

#: How many classes the model scores, in this order.
CLASS_COUNT = 1000
_DATA = ("data", "imagenet-vocabulary.json")
#: Top words that say only "some man-made thing": every artifact class rolls up to one, so it
#: would top most pictures' labels. Shown only when no more telling word makes the cut.
CATCH_ALL = frozenset({"object"})
#: A parent word is shown only when it is at least this many times likelier than chance: than
#: its share of the classes (as if the model could tell nothing). "animal" covers 398 classes, so
#: it needs 0.8; "dog" (118) needs 0.24; a word of under 75 classes only ``min_score``. Without
#: it, "animal" topped galaxies, the moon, grass, a flower and screenshots at 0.16-0.5: the sum
#: of hundreds of small guesses, not a finding.
MIN_LIFT = 2.0

#: "class": a model class's own display name; "parent": a word above classes.
Kind = Literal["class", "parent"]


class WordScore(NamedTuple):
    word: str
    score: float  # 0..1
    kind: Kind


@dataclass(frozen=True)
class ClassWords:
    wnid: str  # the WordNet 3.0 noun synset, e.g. "n02123045"
    name: str  # what the page shows: "tabby cat"
    parents: tuple[str, ...]  # nearest first, the last a top-level word: ("cat", "animal")


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """The table, indexed once for adding up scores."""

    classes: tuple[ClassWords, ...]  # in the model's output order
    top: frozenset[str]
    words: tuple[str, ...]  # every distinct name and parent word
    kinds: tuple[Kind, ...]  # per word
    _pair_word: NDArray[np.intp]  # one (word, class) pair per class a word covers
    _pair_class: NDArray[np.intp]
    _child: NDArray[np.intp]  # every (child word, parent word) edge of the chains
    _parent: NDArray[np.intp]
    _depth: int  # the longest chain's number of edges
    _rank: NDArray[np.intp]  # tie-break: a class's name, then nearer (smaller) parents first
    _share: dict[str, float]  # per word, the share of the classes it covers

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        data = json.loads(text)
        classes = tuple(
            ClassWords(c["wnid"], c["name"], tuple(c["parents"])) for c in data["classes"]
        )
        if len(classes) != CLASS_COUNT:
            raise ValueError(f"the vocabulary has {len(classes)} classes, not {CLASS_COUNT}")
        names = {c.name for c in classes}
        index: dict[str, int] = {}
        pairs: set[tuple[int, int]] = set()
        edges: set[tuple[int, int]] = set()
        depth = 0
        for i, entry in enumerate(classes):
            chain = [index.setdefault(w, len(index)) for w in (entry.name, *entry.parents)]
            pairs.update((w, i) for w in chain)
            edges.update(itertools.pairwise(chain))
            depth = max(depth, len(chain) - 1)
        words = tuple(index)
        pair_word, pair_class = np.array(sorted(pairs), dtype=np.intp).T
        size = np.bincount(pair_word, minlength=len(words))
        kinds: tuple[Kind, ...] = tuple("class" if w in names else "parent" for w in words)
        is_parent = np.array([k == "parent" for k in kinds])
        rank = np.lexsort((is_parent, size))  # by size, then kind
        position = np.empty_like(rank)
        position[rank] = np.arange(len(rank))
        return cls(
            classes=classes,
            top=frozenset(data["top"]),
            words=words,
            kinds=kinds,
            _pair_word=pair_word,
            _pair_class=pair_class,
            _child=np.array([c for c, _ in sorted(edges)], dtype=np.intp),
            _parent=np.array([p for _, p in sorted(edges)], dtype=np.intp),
            _depth=depth,
            _rank=position,
            _share={w: int(n) / CLASS_COUNT for w, n in zip(words, size, strict=True)},
        )

    def scores(self, probabilities: ArrayLike) -> NDArray[np.float64]:
        """Every word's score (indexed like ``words``): the sum over the classes it covers."""
        p = np.asarray(probabilities, dtype=np.float64)
        if p.shape != (CLASS_COUNT,):
            raise ValueError(f"expected {CLASS_COUNT} class probabilities, got shape {p.shape}")
        sums = np.bincount(self._pair_word, weights=p[self._pair_class], minlength=len(self.words))
        scores: NDArray[np.float64] = np.clip(sums, 0.0, 1.0)  # a softmax may sum to 1 + 1e-7
        # A parent covers all its child's classes, but two float sums in different orders can
        # still differ in the last bit: settle that so a parent is never below its child.
        for _ in range(self._depth):  # each pass settles one more level of every chain
            np.maximum.at(scores, self._parent, scores[self._child])
        return scores

    def roll_up(
        self, probabilities: ArrayLike, *, max_results: int = 5, min_score: float = 0.15
    ) -> list[WordScore]:
        """The likeliest words, best first, each once: at most ``max_results``, none below
        ``min_score``. Equal scores put the more specific word first."""
        scores = self.scores(probabilities)
        order = np.lexsort((self._rank, -scores))
        return [
            WordScore(self.words[i], float(scores[i]), self.kinds[i])
            for i in order[:max_results]
            if scores[i] >= min_score
        ]

    def labels(
        self, probabilities: ArrayLike, *, max_results: int = 5, min_score: float = 0.15
    ) -> list[WordScore]:
        """The words a picture is labelled with: ``roll_up``'s without the parent words no
        likelier than ``MIN_LIFT`` times chance (their classes still show), and without the
        catch-all words (``CATCH_ALL``) unless nothing else is left."""
        words = self.roll_up(
            probabilities, max_results=2 * max_results + len(CATCH_ALL), min_score=min_score
        )
        found = [w for w in words if w.kind == "class" or w.score >= MIN_LIFT * self._share[w.word]]
        telling = [w for w in found if w.word not in CATCH_ALL]
        return (telling or found)[:max_results]


@functools.cache
def vocabulary() -> Vocabulary:
    """The bundled vocabulary, read once per process."""
    text = files("imaging.labeling").joinpath(*_DATA).read_text("utf-8")
    return Vocabulary.from_json(text)


def roll_up(
    probabilities: ArrayLike, *, max_results: int = 5, min_score: float = 0.15
) -> list[WordScore]:
    """The bundled vocabulary's likeliest words for the model's 1000 class probabilities."""
    return vocabulary().roll_up(probabilities, max_results=max_results, min_score=min_score)
