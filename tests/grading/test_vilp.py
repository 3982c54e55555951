"""ViLP's own answer comparison (vigos.grading.vilp), as its authors' scorer compares one-word answers."""

from __future__ import annotations

import pytest

from vigos.grading.answers import get_grader
from vigos.grading.vilp import normalize_vilp, vilp_equal


@pytest.mark.parametrize(
    ("prediction", "reference", "equal"),
    [
        ("cuboid", "Cube", True),
        ("Butterflies", "butterfly", True),
        ("Three.", "3", True),
        ("striped", "stripes", True),
        ("Refrigerators", "fridge", True),
        ("co2", "carbon dioxide", False),  # each stage looks up once: their scorer maps these apart
        ("none", "None", False),
        ("cat", "dog", False),
        (None, "cat", False),
    ],
)
def test_vilp_answers_compare_as_vilps_scorer_compares_them(prediction, reference, equal):
    assert vilp_equal(prediction, reference) is equal
    assert get_grader("vilp")(prediction, reference, None) is equal


def test_normalization_steps():
    assert normalize_vilp("  Cuboids. ") == "cube"  # case, spaces, one trailing period, then the synonym
    assert normalize_vilp("leaves") == "leaf" and normalize_vilp("mice") == "mouse"  # irregular plurals
    assert normalize_vilp("twenty") == "20" and normalize_vilp("twenty-one") == "twenty-one"
    assert normalize_vilp("refrigerators") == "fridge"  # one look-up per stage, synonyms before plurals
