"""Pass@k / Avg@k and their bootstrap intervals, against hand-worked numbers and brute force."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigos.eval.metrics import (
    MetricSummary,
    avg_at_k,
    bootstrap_ci,
    item_scores,
    metric_names,
    pass_at_k,
    summarize,
    vilp_scores,
)

# --- pass@k -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 1, 1, 0.2),  # one right of five, one draw
        (5, 0, 5, 0.0),
        (5, 5, 1, 1.0),
        (5, 2, 5, 1.0),  # n == k: any correct sample solves the item
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5) = 11/12
        (10, 1, 5, 0.5),  # 1 - C(9,5)/C(10,5) = 1 - 126/252
        (4, 2, 2, 1 - 1 / 6),  # 1 - C(2,2)/C(4,2)
        (6, 4, 3, 1.0),  # only two wrong samples: every 3-subset holds a right one
    ],
)
def test_pass_at_k_hand_worked(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_hand_worked_exact_fraction():
    # 1 - C(17,4)/C(20,4) = 1 - 2380/4845 = 2465/4845
    assert pass_at_k(20, 3, 4) == pytest.approx(float(Fraction(2465, 4845)), abs=1e-12)


def brute_force_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """Share of the k-subsets of n samples (the first c of them correct) that hold a correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    hits = sum(any(index < c for index in subset) for subset in subsets)
    return Fraction(hits, len(subsets))


@st.composite
def n_c_k(draw):
    n = draw(st.integers(1, 12))
    return n, draw(st.integers(0, n)), draw(st.integers(1, n))


@given(n_c_k())
@settings(max_examples=300, deadline=None)
def test_pass_at_k_matches_brute_force(nck):
    n, c, k = nck
    assert pass_at_k(n, c, k) == pytest.approx(float(brute_force_pass_at_k(n, c, k)), abs=1e-12)


def test_pass_at_k_all_small_cases_match_brute_force():
    for n in range(1, 10):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(float(brute_force_pass_at_k(n, c, k)), abs=1e-12)


def test_pass_at_k_stable_for_large_n():
    # The binomials here overflow a float; the product form does not.
    exact = 1 - Fraction(math.comb(1900, 500), math.comb(2000, 500))
    assert pass_at_k(2000, 100, 500) == pytest.approx(float(exact), rel=1e-9)
    assert 0.0 <= pass_at_k(2000, 1, 1) <= 1.0


@given(n_c_k())
def test_pass_at_k_monotone_in_c_and_k(nck):
    n, c, k = nck
    value = pass_at_k(n, c, k)
    if c < n:
        assert pass_at_k(n, c + 1, k) >= value - 1e-12
    if k < n:
        assert pass_at_k(n, c, k + 1) >= value - 1e-12
    assert pass_at_k(n, c, 1) == pytest.approx(c / n)


@pytest.mark.parametrize(
    ("n", "c", "k", "match"),
    [(3, 1, 5, "at least k=5 samples"), (5, 6, 1, "c=6"), (5, -1, 1, "c=-1"), (5, 1, 0, "k must be at least 1")],
)
def test_pass_at_k_rejects_bad_counts(n, c, k, match):
    with pytest.raises(ValueError, match=match):
        pass_at_k(n, c, k)


def test_pass_at_k_rejects_non_integers():
    with pytest.raises(TypeError, match="n must be an integer"):
        pass_at_k(5.5, 1, 1)


# --- avg@k and item scores ------------------------------------------------------------------------


def test_avg_at_k():
    assert avg_at_k([True, False, False, True, False]) == pytest.approx(0.4)
    assert avg_at_k([False] * 5) == 0.0
    assert avg_at_k([1, 1, 0, 1]) == pytest.approx(0.75)


@pytest.mark.parametrize("bad", [[], ["yes", True], [True, 2]])
def test_avg_at_k_rejects_bad_samples(bad):
    with pytest.raises(ValueError):
        avg_at_k(bad)


@given(st.lists(st.booleans(), min_size=5, max_size=5))
def test_item_scores_with_exactly_k_samples(correct):
    scores = item_scores(correct, 5)
    assert set(scores) == {"pass@5", "avg@5"}
    assert scores["pass@5"] == float(any(correct))
    assert scores["avg@5"] == pytest.approx(sum(correct) / 5)


def test_item_scores_with_more_samples_than_k():
    scores = item_scores([True, False, False, False, False, False, False, False, False, False], 5)
    assert scores == {"pass@5": pytest.approx(0.5), "avg@5": pytest.approx(0.1)}
    assert metric_names(3) == ("pass@3", "avg@3")


# --- bootstrap ------------------------------------------------------------------------------------


@given(st.lists(st.sampled_from([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), min_size=1, max_size=60), st.integers(0, 2**16))
@settings(max_examples=50, deadline=None)
def test_bootstrap_ci_contains_the_mean(values, seed):
    low, high = bootstrap_ci(values, n_resamples=500, seed=seed)
    mean = float(np.mean(values))
    assert low - 1e-9 <= mean <= high + 1e-9
    assert min(values) - 1e-9 <= low <= high <= max(values) + 1e-9


def test_bootstrap_ci_narrows_with_more_items():
    rng = np.random.default_rng(1)
    small = rng.random(20) < 0.5
    large = rng.random(2000) < 0.5
    low_s, high_s = bootstrap_ci(small.astype(float))
    low_l, high_l = bootstrap_ci(large.astype(float))
    assert high_l - low_l < (high_s - low_s) / 4
    # Width of a 95% interval for a proportion near 0.5 over 2000 items: about 2 * 1.96 * sqrt(.25/2000).
    assert high_l - low_l == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 2000), rel=0.15)


def test_bootstrap_ci_deterministic_with_seed():
    # Continuous values, so that percentiles of different resamples do not land on the same grid point.
    values = np.random.default_rng(0).random(40).tolist()
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
    assert bootstrap_ci([0.5] * 10) == (0.5, 0.5)


def test_bootstrap_ci_wider_at_higher_confidence():
    values = [1, 0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 1]
    low90, high90 = bootstrap_ci(values, confidence=0.90)
    low99, high99 = bootstrap_ci(values, confidence=0.99)
    assert low99 <= low90 and high90 <= high99 and (high99 - low99) > (high90 - low90)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"values": []}, "non-empty"),
        ({"values": [1.0], "confidence": 1.0}, "confidence"),
        ({"values": [1.0], "n_resamples": 0}, "n_resamples"),
    ],
)
def test_bootstrap_ci_rejects_bad_input(kwargs, match):
    values = kwargs.pop("values")
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(values, **kwargs)


def test_metric_summary_to_dict():
    assert MetricSummary(0.5, 0.25, 0.75, 8).to_dict() == {"mean": 0.5, "low": 0.25, "high": 0.75, "n": 8}


# --- summarize -------------------------------------------------------------------------------------

T, F = True, False
RECORDS = [
    # "alpha": 4 items, pass@2 = [1, 1, 0, 1] -> 0.75, avg@2 = [0.5, 1, 0, 0.5] -> 0.5
    {"benchmark": "alpha", "correct": [T, F], "category": "geometry", "split": "test"},
    {"benchmark": "alpha", "correct": [T, T], "category": "geometry", "split": "test"},
    {"benchmark": "alpha", "correct": [F, F], "category": "algebra", "split": "dev"},
    {"benchmark": "alpha", "correct": [F, T], "category": "algebra"},
    # "beta": 2 items of 4 samples, pass@2 = [1 - C(3,2)/C(4,2), 0] = [0.5, 0], avg@2 = [0.25, 0]
    {"benchmark": "beta", "correct": [T, F, F, F]},
    {"benchmark": "beta", "correct": [F, F, F, F]},
]


def test_summarize_known_answers():
    summary = summarize(RECORDS, 2, n_resamples=400)
    alpha, beta = summary["benchmarks"]["alpha"], summary["benchmarks"]["beta"]
    assert list(summary["benchmarks"]) == ["alpha", "beta"]
    assert alpha["n"] == 4 and beta["n"] == 2
    assert alpha["pass@2"]["mean"] == pytest.approx(0.75)
    assert alpha["avg@2"]["mean"] == pytest.approx(0.5)
    assert beta["pass@2"]["mean"] == pytest.approx(0.25)
    assert beta["avg@2"]["mean"] == pytest.approx(0.125)
    for block in (alpha, beta):
        for name in ("pass@2", "avg@2"):
            assert block[name]["low"] <= block[name]["mean"] <= block[name]["high"]
            assert block[name]["n"] == block["n"]

    assert alpha["by_category"]["geometry"]["pass@2"]["mean"] == pytest.approx(1.0)
    assert alpha["by_category"]["geometry"]["avg@2"]["mean"] == pytest.approx(0.75)
    assert alpha["by_category"]["algebra"]["pass@2"]["mean"] == pytest.approx(0.5)
    assert alpha["by_category"]["algebra"]["avg@2"]["mean"] == pytest.approx(0.25)
    # The item without a split is not in by_split.
    assert {name: block["n"] for name, block in alpha["by_split"].items()} == {"dev": 1, "test": 2}
    assert alpha["by_split"]["test"]["avg@2"]["mean"] == pytest.approx(0.75)
    assert beta["by_category"] == {} and beta["by_split"] == {}

    mean = summary["mean"]
    assert mean["n_benchmarks"] == 2
    assert mean["pass@2"]["mean"] == pytest.approx((0.75 + 0.25) / 2)  # unweighted over benchmarks
    assert mean["avg@2"]["mean"] == pytest.approx((0.5 + 0.125) / 2)
    assert mean["pass@2"]["n"] == 6
    assert mean["pass@2"]["low"] <= mean["pass@2"]["mean"] <= mean["pass@2"]["high"]


def test_summarize_mean_interval_resamples_within_benchmarks():
    # One benchmark where every item is right and one where none is: resampling within each keeps the
    # mean at exactly 0.5, whereas pooling the items would spread it.
    records = [{"benchmark": "all", "correct": [T]} for _ in range(30)]
    records += [{"benchmark": "none", "correct": [F]} for _ in range(5)]
    mean = summarize(records, 1)["mean"]
    assert mean["pass@1"] == {"mean": 0.5, "low": 0.5, "high": 0.5, "n": 35}


def test_summarize_is_deterministic_and_seeded():
    rng = np.random.default_rng(0)
    records = [{"benchmark": f"b{i % 3}", "correct": (rng.random(8) < 0.4).tolist()} for i in range(90)]
    assert summarize(records, 5, seed=3) == summarize(records, 5, seed=3)
    assert summarize(records, 5, seed=3)["mean"] != summarize(records, 5, seed=4)["mean"]


def test_summarize_group_by_several_fields():
    summary = summarize(RECORDS[:4], 2, group_by=("benchmark", "category"), n_resamples=200)
    assert sorted(summary["benchmarks"]) == ["alpha/algebra", "alpha/geometry"]
    assert summary["mean"]["pass@2"]["mean"] == pytest.approx((0.5 + 1.0) / 2)


@pytest.mark.parametrize(
    ("records", "kwargs", "match"),
    [
        ([{"benchmark": "a", "correct": [T]}], {}, r"record 0 \(a, id \?\) has 1 samples, fewer than k=2"),
        ([{"benchmark": "a"}], {}, "no 'correct' field"),
        ([{"correct": [T, T]}], {}, "no 'benchmark' field"),
        ([{"benchmark": "a", "correct": [T, "x"]}], {}, r"'correct'\[1\] is 'x'"),
        ([], {}, "no records"),
        ([{"benchmark": "a", "correct": [T, T]}], {"group_by": "benchmark"}, "group_by"),
    ],
)
def test_summarize_rejects_bad_records(records, kwargs, match):
    with pytest.raises(ValueError, match=match):
        summarize(records, 2, **kwargs)


# --- ViLP ------------------------------------------------------------------------------------------


def test_vilp_scores_split_conflict_and_prior():
    records = [
        # vilp-f: conflicting items avg@1 = 1/3, agreeing items 1.0
        {"benchmark": "vilp-f", "correct": [T], "conflict": True},
        {"benchmark": "vilp-f", "correct": [F], "conflict": True},
        {"benchmark": "vilp-f", "correct": [F], "conflict": True},
        {"benchmark": "vilp-f", "correct": [T], "conflict": False},
        # vilp-p: only conflicting items
        {"benchmark": "vilp-p", "correct": [F], "conflict": True},
        # not a ViLP record: ignored
        {"benchmark": "mmmu", "correct": [T]},
    ]
    scores = vilp_scores(records, 1, n_resamples=300)
    assert sorted(scores) == ["vilp-f", "vilp-p"]
    assert scores["vilp-f"]["score"]["n"] == 3
    assert scores["vilp-f"]["score"]["avg@1"]["mean"] == pytest.approx(1 / 3)
    assert scores["vilp-f"]["score"]["pass@1"]["mean"] == pytest.approx(1 / 3)
    assert scores["vilp-f"]["prior"]["avg@1"] == {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 1}
    assert scores["vilp-p"]["score"]["pass@1"]["mean"] == 0.0
    assert scores["vilp-p"]["prior"] is None
    low, high = scores["vilp-f"]["score"]["avg@1"]["low"], scores["vilp-f"]["score"]["avg@1"]["high"]
    assert low <= 1 / 3 <= high and high > low


def test_vilp_scores_pass_at_k_with_several_samples():
    records = [
        {"benchmark": "vilp-p", "correct": [F, F, T], "conflict": True},
        {"benchmark": "vilp-p", "correct": [F, F, F], "conflict": True},
    ]
    score = vilp_scores(records, 3)["vilp-p"]["score"]
    assert score["pass@3"]["mean"] == pytest.approx(0.5)
    assert score["avg@3"]["mean"] == pytest.approx(1 / 6)


def test_vilp_scores_needs_conflict_labels():
    with pytest.raises(ValueError, match="conflict"):
        vilp_scores([{"benchmark": "mmmu", "correct": [T]}], 1)


def test_cvbench_score_averages_the_2d_sources_then_2d_with_3d():
    from vigos.eval.metrics import cvbench_score

    def block(avg: float, passed: float) -> dict:
        return {"avg@2": {"mean": avg}, "pass@2": {"mean": passed}}

    by_split = {"ADE20K": block(0.2, 0.5), "COCO": block(0.6, 0.7), "Omni3D": block(1.0, 0.9)}
    score = cvbench_score({"by_split": by_split}, 2)
    assert score == pytest.approx({"avg@2": (0.4 + 1.0) / 2, "pass@2": (0.6 + 0.9) / 2})
    del by_split["COCO"]
    assert cvbench_score({"by_split": by_split}, 2) is None
