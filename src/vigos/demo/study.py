"""The demo's comparison as a paired study: ViGOS minus OPSD per seed and item, with a bootstrap interval.

Both methods train from the same warm start with the same seeds and data order and are evaluated on
the same items, so each (seed, item) cell holds a pair: the share of ViGOS's k samples that are
correct minus OPSD's. The headline is the mean of those differences; its 95% interval comes from a
two-level bootstrap that resamples seeds and, independently, items (the same items for every seed
drawn, which keeps the pairing), so the interval counts both the spread between training runs and
the finite evaluation set. The verdict is read off the interval and nothing else.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Item scores per seed: {seed: {item id: share of the k samples that are correct}}.
ItemScores = Mapping[int, Mapping[str, float]]

VERDICTS = ("ViGOS ahead", "OPSD ahead", "no difference resolved")


@dataclass(frozen=True)
class PairedDifference:
    """ViGOS - OPSD: the mean over seeds and items, its bootstrap interval, and what it resolves."""

    mean: float
    low: float
    high: float
    seeds: int
    items: int
    verdict: str

    def describe(self, name: str, scale: float = 100.0) -> str:
        """One line, e.g. ``Score: ViGOS - OPSD = +3.1 [-0.4, +6.5] (5 seeds x 100 items): no difference resolved``."""
        return (
            f"{name}: ViGOS - OPSD = {scale * self.mean:+.1f} [{scale * self.low:+.1f}, {scale * self.high:+.1f}] "
            f"(95% interval, {self.seeds} seeds x {self.items} items): {self.verdict}"
        )


def _paired_cells(vigos: ItemScores, opsd: ItemScores) -> tuple[list[int], list[str], dict[tuple[int, str], float]]:
    seeds = sorted(set(vigos) & set(opsd))
    if not seeds:
        raise ValueError("no seed was evaluated for both methods; a paired difference needs the same seeds")
    items = sorted(set.intersection(*(set(vigos[s]) & set(opsd[s]) for s in seeds)))
    if not items:
        raise ValueError("no item was evaluated for both methods under every seed")
    cells = {(s, i): vigos[s][i] - opsd[s][i] for s in seeds for i in items}
    return seeds, items, cells


def paired_difference(
    vigos: ItemScores, opsd: ItemScores, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> PairedDifference:
    """The mean paired difference ViGOS - OPSD over the seeds and items both hold, with a percentile
    interval from ``resamples`` two-level bootstrap draws (seeds, then items; ``seed`` fixes the draws).

    The verdict: "ViGOS ahead" when the whole interval is above 0, "OPSD ahead" when it is below,
    else "no difference resolved".
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples!r}")
    seeds, items, cells = _paired_cells(vigos, opsd)
    # Per seed, the item differences in a fixed order, so that a resample is two index lists.
    rows = [[cells[(s, i)] for i in items] for s in seeds]
    mean = sum(sum(row) for row in rows) / (len(seeds) * len(items))
    rng = random.Random(seed)
    draws = []
    for _ in range(resamples):
        seed_draw = [rows[rng.randrange(len(rows))] for _ in rows]
        item_draw = [rng.randrange(len(items)) for _ in items]
        draws.append(sum(row[i] for row in seed_draw for i in item_draw) / (len(seed_draw) * len(item_draw)))
    draws.sort()
    tail = (1.0 - confidence) / 2
    low = draws[min(int(tail * resamples), resamples - 1)]
    high = draws[min(int((1.0 - tail) * resamples), resamples - 1)]
    verdict = VERDICTS[0] if low > 0 else VERDICTS[1] if high < 0 else VERDICTS[2]
    return PairedDifference(mean, low, high, len(seeds), len(items), verdict)


def item_scores(records: Mapping[str, Mapping[str, object]], k: int, *, conflict: bool) -> dict[str, float]:
    """{item id: share of the first ``k`` samples that are correct} over the evaluation records
    (``read_responses``'s) of prior-conflicting (``conflict``) or prior-agreeing items."""
    scores = {}
    for item_id, record in records.items():
        # Items without a conflict value (the obscured ones) are neither side.
        if record.get("conflict") is None or bool(record["conflict"]) != conflict:
            continue
        correct: Sequence[bool] = record["correct"][:k]  # type: ignore[index, assignment]
        scores[item_id] = sum(bool(c) for c in correct) / max(len(correct), 1)
    return scores
