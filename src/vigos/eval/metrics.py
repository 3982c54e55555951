"""Pass@k, Avg@k and bootstrap confidence intervals over evaluation records.

The evaluation protocol (METHOD.md) draws k samples per item: Pass@k counts
an item as solved if any sample is right, Avg@k is the mean correctness of
the samples. When n > k samples are drawn, Pass@k is the unbiased estimator
``1 - C(n - c, k) / C(n, k)`` (c correct of n), which equals ``any(correct)``
when n == k.

A *record* is one item's outcome::

    {"benchmark": "mathvista", "correct": [True, False, ...],   # n >= k samples
     "category": "...", "split": "...", "conflict": True}       # all optional

A record graded with partial credit (MM-Vet's 0-1 judge score) also holds
``"scores": [0.5, 1.0, ...]``, which then count instead of ``correct``: Avg@k
is their mean and Pass@k the expected best score of k samples drawn from the
n (:func:`best_of_k`), which is the unbiased Pass@k when the scores are 0 or 1.

Metric names carry the real k (``"pass@5"``, ``"avg@5"``). Every figure comes
with a percentile-bootstrap confidence interval over items, as a
:class:`MetricSummary`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "MetricSummary",
    "avg_at_k",
    "best_of_k",
    "bootstrap_ci",
    "item_scores",
    "metric_names",
    "pass_at_k",
    "summarize",
    "vilp_scores",
]

# Bootstrap draws are made in blocks of at most this many indices, so that a
# large benchmark does not allocate n_resamples x n_items integers at once.
_MAX_DRAWS_PER_BLOCK = 4_000_000


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k estimate from ``c`` correct answers among ``n`` samples.

    Computes ``1 - C(n - c, k) / C(n, k)`` as the product
    ``1 - prod_{i = n - c + 1}^{n} (1 - k / i)``, which stays exact in floating
    point where the binomials would overflow. Requires ``0 <= c <= n`` and
    ``1 <= k <= n``.
    """
    n, c, k = _check_int("n", n), _check_int("c", c), _check_int("k", k)
    if k < 1:
        raise ValueError(f"k must be at least 1, got k={k}")
    if n < k:
        raise ValueError(f"pass@{k} needs at least k={k} samples per item, got n={n}; draw more samples or lower k")
    if not 0 <= c <= n:
        raise ValueError(f"the number of correct samples must lie in [0, n={n}], got c={c}")
    if n - c < k:
        # Every k-subset contains a correct sample.
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _check_correct(correct: Sequence[Any], where: str = "correct") -> list[bool]:
    values = list(correct)
    if not values:
        raise ValueError(f"{where} holds no samples; each item needs at least one graded sample")
    for position, value in enumerate(values):
        if not isinstance(value, (bool, np.bool_)) and value not in (0, 1):
            raise ValueError(f"{where}[{position}] is {value!r}; correctness must be a bool (or 0/1)")
    return [bool(value) for value in values]


def avg_at_k(correct: Sequence[bool]) -> float:
    """Mean correctness of one item's samples (Avg@k)."""
    values = _check_correct(correct)
    return sum(values) / len(values)


def best_of_k(scores: Sequence[float], k: int) -> float:
    """The expected highest score among ``k`` of the ``n`` scores drawn without replacement.

    With the scores sorted ascending, the i-th (1-based) is the best of a k-subset in ``C(i - 1, k - 1)`` of
    the ``C(n, k)`` subsets. For scores of 0 and 1 this is :func:`pass_at_k`.
    """
    ordered = sorted(float(score) for score in scores)
    n, k = len(ordered), _check_int("k", k)
    if not 1 <= k <= n:
        raise ValueError(f"best of {k} needs 1 <= k <= n={n} scores")
    total = math.comb(n, k)
    return sum(ordered[i - 1] * math.comb(i - 1, k - 1) for i in range(k, n + 1)) / total


def _check_scores(scores: Sequence[Any], where: str) -> list[float]:
    values = list(scores)
    if not values:
        raise ValueError(f"{where} holds no samples; each item needs at least one graded sample")
    for position, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{where}[{position}] is {value!r}; a partial-credit score must be a number in [0, 1]")
    return [float(value) for value in values]


def metric_names(k: int) -> tuple[str, str]:
    """The names under which Pass@k and Avg@k are reported, e.g. ``("pass@5", "avg@5")``."""
    return f"pass@{k}", f"avg@{k}"


def item_scores(correct: Sequence[bool], k: int) -> dict[str, float]:
    """Pass@k and Avg@k of one item, keyed by :func:`metric_names` (``{"pass@5": .., "avg@5": ..}``).

    With exactly k samples Pass@k is ``any(correct)``; with more it is the
    unbiased estimate of :func:`pass_at_k`.
    """
    values = _check_correct(correct)
    pass_name, avg_name = metric_names(k)
    return {pass_name: pass_at_k(len(values), sum(values), k), avg_name: sum(values) / len(values)}


def _resampled_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_resamples`` resamples (with replacement) of ``values``; shape ``(n_resamples,)``."""
    means = np.empty(n_resamples)
    rows_per_block = max(1, _MAX_DRAWS_PER_BLOCK // len(values))
    for start in range(0, n_resamples, rows_per_block):
        stop = min(n_resamples, start + rows_per_block)
        draws = rng.integers(0, len(values), size=(stop - start, len(values)))
        means[start:stop] = values[draws].mean(axis=1)
    return means


def _check_bootstrap(n_resamples: int, confidence: float) -> None:
    if _check_int("n_resamples", n_resamples) < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def _percentiles(means: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def _grouped_ci(groups: Sequence[np.ndarray], n_resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """CI of the unweighted mean of the group means, resampling items within each group."""
    rng = np.random.default_rng(seed)
    total = np.zeros(n_resamples)
    for values in groups:
        total += _resampled_means(values, n_resamples, rng)
    return _percentiles(total / len(groups), confidence)


def bootstrap_ci(
    values: Sequence[float], *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval ``(low, high)`` for the mean of ``values``.

    Items are resampled with replacement ``n_resamples`` times; the same seed
    gives the same interval.
    """
    _check_bootstrap(n_resamples, confidence)
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError("bootstrap_ci needs a non-empty flat sequence of numbers")
    return _grouped_ci([array], n_resamples, confidence, seed)


@dataclass
class MetricSummary:
    """A mean with its bootstrap confidence interval; ``n`` is the number of items behind it."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict for JSON reports."""
        return asdict(self)


@dataclass
class _Item:
    scores: dict[str, float]
    record: Mapping[str, Any]


def _summary(values: Sequence[float], n_resamples: int, confidence: float, seed: int) -> MetricSummary:
    low, high = bootstrap_ci(values, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return MetricSummary(mean=float(np.mean(values)), low=low, high=high, n=len(values))


def _block(items: Sequence[_Item], k: int, n_resamples: int, confidence: float, seed: int) -> dict[str, Any]:
    """``{"n": .., "pass@k": MetricSummary dict, "avg@k": MetricSummary dict}`` over ``items``."""
    block: dict[str, Any] = {"n": len(items)}
    for name in metric_names(k):
        values = [item.scores[name] for item in items]
        block[name] = _summary(values, n_resamples, confidence, seed).to_dict()
    return block


def _scored_items(records: Iterable[Mapping[str, Any]], k: int) -> list[_Item]:
    items = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise TypeError(f"record {index} is a {type(record).__name__}; each record must be a dict")
        if "correct" not in record:
            raise ValueError(f"record {index} has no 'correct' field (the list of per-sample correctness)")
        label = f"record {index} ({record.get('benchmark', '?')}, id {record.get('id', '?')})"
        correct = _check_correct(record["correct"], where=f"{label} 'correct'")
        if len(correct) < k:
            raise ValueError(f"{label} has {len(correct)} samples, fewer than k={k}; draw at least k samples per item")
        if record.get("scores") is None:
            items.append(_Item(item_scores(correct, k), record))
            continue
        scores = _check_scores(record["scores"], where=f"{label} 'scores'")
        if len(scores) != len(correct):
            raise ValueError(f"{label} has {len(scores)} scores for {len(correct)} samples")
        pass_name, avg_name = metric_names(k)
        items.append(_Item({pass_name: best_of_k(scores, k), avg_name: sum(scores) / len(scores)}, record))
    if not items:
        raise ValueError("no records to summarize")
    return items


def _group_name(record: Mapping[str, Any], index: int, group_by: Sequence[str]) -> str:
    parts = []
    for field in group_by:
        if record.get(field) is None:
            raise ValueError(f"record {index} has no {field!r} field, which group_by={tuple(group_by)} needs")
        parts.append(str(record[field]))
    return "/".join(parts)


def _breakdown(
    items: Sequence[_Item], field: str, k: int, n_resamples: int, confidence: float, seed: int
) -> dict[str, Any]:
    """Per-value blocks for ``field``; items whose record lacks it are left out."""
    by_value: dict[str, list[_Item]] = {}
    for item in items:
        value = item.record.get(field)
        if value is not None:
            by_value.setdefault(str(value), []).append(item)
    return {value: _block(by_value[value], k, n_resamples, confidence, seed) for value in sorted(by_value)}


def summarize(
    records: Iterable[Mapping[str, Any]],
    k: int,
    *,
    group_by: Sequence[str] = ("benchmark",),
    seed: int = 0,
    n_resamples: int = 2000,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Pass@k and Avg@k per benchmark, per category and split, and the mean over benchmarks.

    Records are grouped by the values of the ``group_by`` fields (joined with
    ``/`` when there are several), in order of first appearance. Returns::

        {"benchmarks": {name: {"n": items, "pass@k": summary, "avg@k": summary,
                               "by_category": {category: block}, "by_split": {split: block}}},
         "mean": {"n_benchmarks": B, "pass@k": summary, "avg@k": summary}}

    where each summary is a :class:`MetricSummary` dict and each block is
    ``{"n", "pass@k", "avg@k"}``; items without a category (split) are not in
    ``by_category`` (``by_split``). ``mean`` is the unweighted mean over
    benchmarks; its interval resamples items within each benchmark, and its
    ``n`` counts all items.
    """
    k = _check_int("k", k)
    _check_bootstrap(n_resamples, confidence)
    if isinstance(group_by, str) or not group_by:
        raise ValueError(f"group_by must be a non-empty sequence of field names, got {group_by!r}")
    items = _scored_items(records, k)
    groups: dict[str, list[_Item]] = {}
    for index, item in enumerate(items):
        groups.setdefault(_group_name(item.record, index, group_by), []).append(item)

    benchmarks = {}
    for name, members in groups.items():
        block = _block(members, k, n_resamples, confidence, seed)
        block["by_category"] = _breakdown(members, "category", k, n_resamples, confidence, seed)
        block["by_split"] = _breakdown(members, "split", k, n_resamples, confidence, seed)
        benchmarks[name] = block

    mean: dict[str, Any] = {"n_benchmarks": len(groups)}
    for metric in metric_names(k):
        per_group = [np.array([item.scores[metric] for item in members]) for members in groups.values()]
        low, high = _grouped_ci(per_group, n_resamples, confidence, seed)
        centre = float(np.mean([values.mean() for values in per_group]))
        mean[metric] = MetricSummary(mean=centre, low=low, high=high, n=len(items)).to_dict()
    return {"benchmarks": benchmarks, "mean": mean}


def vilp_scores(
    records: Iterable[Mapping[str, Any]], k: int, seed: int = 0, *, n_resamples: int = 2000, confidence: float = 0.95
) -> dict[str, dict[str, Any]]:
    """ViLP "Score" and "Prior" per benchmark (e.g. ``vilp-f``, ``vilp-p``).

    "Score" is Pass@k and Avg@k on the items whose image conflicts with the
    text prior (``conflict=True``), "Prior" on those whose image agrees
    (``conflict=False``). Records without a ``conflict`` value are ignored.
    Returns ``{benchmark: {"score": block, "prior": block}}`` with blocks as
    in :func:`summarize`; a side with no items is ``None``.
    """
    k = _check_int("k", k)
    _check_bootstrap(n_resamples, confidence)
    items = [item for item in _scored_items(records, k) if item.record.get("conflict") is not None]
    if not items:
        raise ValueError("no record has a 'conflict' value; ViLP scores need ViLP records (conflict=True/False)")
    by_benchmark: dict[str, dict[str, list[_Item]]] = {}
    for item in items:
        name = str(item.record.get("benchmark", "vilp"))
        side = "score" if bool(item.record["conflict"]) else "prior"
        by_benchmark.setdefault(name, {"score": [], "prior": []})[side].append(item)
    return {
        name: {
            side: _block(members, k, n_resamples, confidence, seed) if members else None
            for side, members in sides.items()
        }
        for name, sides in by_benchmark.items()
    }


# CV-Bench's own overall score: the 2D sources averaged, then averaged with the 3D one.
CVBENCH_2D_SOURCES = ("ADE20K", "COCO")
CVBENCH_3D_SOURCE = "Omni3D"


def cvbench_score(block: Mapping[str, Any], k: int) -> dict[str, float] | None:
    """CV-Bench's overall score from a benchmark's summary ``block`` (`summarize`'s, items split by source):
    ``(mean(ADE20K, COCO) + Omni3D) / 2`` for Avg@k and Pass@k, or None when a source is missing."""
    by_source = block.get("by_split", {})
    if not all(source in by_source for source in (*CVBENCH_2D_SOURCES, CVBENCH_3D_SOURCE)):
        return None
    score = {}
    for estimate in (f"avg@{k}", f"pass@{k}"):
        two_d = sum(by_source[source][estimate]["mean"] for source in CVBENCH_2D_SOURCES) / len(CVBENCH_2D_SOURCES)
        score[estimate] = (two_d + by_source[CVBENCH_3D_SOURCE][estimate]["mean"]) / 2
    return score
