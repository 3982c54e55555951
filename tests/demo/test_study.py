"""The paired study: ViGOS - OPSD per seed and item, a two-level bootstrap interval, a verdict read off it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigos.demo.study import item_scores, paired_difference


def _scores(table: list[list[float]]) -> dict[int, dict[str, float]]:
    return {seed: {f"item{i}": v for i, v in enumerate(row)} for seed, row in enumerate(table)}


def test_hand_computed_mean_and_a_clear_lead_each_way():
    vigos = _scores([[1.0, 0.75, 1.0, 0.5], [1.0, 1.0, 0.75, 0.75]])
    opsd = _scores([[0.5, 0.25, 0.5, 0.25], [0.25, 0.5, 0.5, 0.25]])
    ahead = paired_difference(vigos, opsd)
    # Differences: 0.5, 0.5, 0.5, 0.25 and 0.75, 0.5, 0.25, 0.5: mean 3.75 / 8.
    assert ahead.mean == pytest.approx(3.75 / 8)
    assert (ahead.seeds, ahead.items) == (2, 4)
    assert 0 < ahead.low <= ahead.mean <= ahead.high
    assert ahead.verdict == "ViGOS ahead"
    behind = paired_difference(opsd, vigos)
    assert behind.verdict == "OPSD ahead"
    assert behind.mean == pytest.approx(-ahead.mean)
    assert "ViGOS - OPSD = +46.9" in ahead.describe("Score")


def test_equal_methods_resolve_no_difference():
    same = _scores([[1.0, 0.0, 0.5], [0.25, 0.75, 1.0]])
    result = paired_difference(same, same)
    assert (result.mean, result.low, result.high) == (0.0, 0.0, 0.0)
    assert result.verdict == "no difference resolved"


def test_mixed_differences_within_the_noise_are_not_a_verdict():
    vigos = _scores([[1.0, 0.0, 1.0, 0.0, 1.0, 0.0]] * 3)
    opsd = _scores([[0.0, 1.0, 0.0, 1.0, 0.0, 1.0]] * 3)
    result = paired_difference(vigos, opsd)
    assert result.low < 0 < result.high
    assert result.verdict == "no difference resolved"


def test_only_shared_seeds_and_items_are_paired_and_none_is_an_error():
    vigos = {0: {"a": 1.0, "b": 1.0}, 1: {"a": 1.0, "b": 0.0}, 2: {"a": 0.0}}
    opsd = {0: {"a": 0.0, "b": 0.0, "c": 1.0}, 1: {"a": 0.0, "b": 0.0}}
    result = paired_difference(vigos, opsd)
    assert (result.seeds, result.items) == (2, 2)
    assert result.mean == pytest.approx(0.75)
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference({0: {"a": 1.0}}, {1: {"a": 1.0}})
    with pytest.raises(ValueError, match="no item"):
        paired_difference({0: {"a": 1.0}}, {0: {"b": 1.0}})


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 4), min_size=3, max_size=3), min_size=2, max_size=4),
    st.lists(st.lists(st.integers(0, 4), min_size=3, max_size=3), min_size=2, max_size=4),
    st.integers(-4, 4),
)
def test_a_constant_shift_moves_the_mean_and_the_interval_alike(a, b, shift):
    rows = min(len(a), len(b))
    vigos = _scores([[v / 4 for v in row] for row in a[:rows]])
    opsd = _scores([[v / 4 for v in row] for row in b[:rows]])
    shifted = {s: {i: v + shift / 4 for i, v in items.items()} for s, items in vigos.items()}
    base, moved = paired_difference(vigos, opsd, resamples=200), paired_difference(shifted, opsd, resamples=200)
    for before, after in ((base.mean, moved.mean), (base.low, moved.low), (base.high, moved.high)):
        assert after == pytest.approx(before + shift / 4)
    assert base.low <= base.high


def test_item_scores_read_the_first_k_samples_of_one_side():
    records = {
        "c1": {"conflict": True, "correct": [True, False, True, True]},
        "c2": {"conflict": True, "correct": [False, False, False, True]},
        "a1": {"conflict": False, "correct": [True, True, True, True]},
    }
    assert item_scores(records, 2, conflict=True) == {"c1": 0.5, "c2": 0.0}
    assert item_scores(records, 4, conflict=False) == {"a1": 1.0}
