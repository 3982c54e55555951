"""The demo's numbers, from its own files: Score and Prior per seed, what descriptions state, paired differences.

Every number comes from the evaluation summaries and responses under ``eval/`` and the world's splits.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from vigos.data.synthetic import mentions_attribute, read_split, states_unshown_colour
from vigos.demo.study import PairedDifference, item_scores, paired_difference
from vigos.eval.run_folder import read_responses

# The benchmark every training run evaluates itself on as it trains (a few prior-agreeing and prior-conflicting
# held-out items; vigos.eval.during_training), and the curves its Score and Prior make in the report.
PROBE_BENCHMARK = "synthetic-vilp-probe"
PROBE_CURVES = (f"eval_{PROBE_BENCHMARK}_score_avg@1", f"eval_{PROBE_BENCHMARK}_prior_avg@1")

RESPONSES = "synthetic-vilp.jsonl"
EVAL_SPLITS = ("eval_agree", "eval_conflict", "eval_obscured")


def description(text: str) -> str | None:
    """The text between ``<description>`` and ``</description>``, or None."""
    start, end = text.find("<description>"), text.find("</description>")
    return text[start + len("<description>") : end] if 0 <= start < end else None


def world_truth(world: Path) -> dict[str, dict[str, str]]:
    """Per evaluation item id (as the benchmark names them): its prior answer and the colour drawn."""
    truth = {}
    for split in EVAL_SPLITS:
        path = world / split / "data.jsonl"
        if path.exists():
            for e in read_split(path):
                truth[f"{split}/{e.id}"] = {"prior": e.prior_answer, "shown": e.scene.colour}
    return truth


def grounding(responses: dict[str, dict[str, Any]], prior_of: dict[str, str]) -> dict[str, float]:
    """On conflict images: share of sampled descriptions stating the true attribute, and the prior one."""
    true = prior = total = 0
    for item_id, record in responses.items():
        if not record.get("conflict"):
            continue
        prior_answer = prior_of.get(item_id)
        for sample in record["samples"]:
            text = description(sample["text"])
            if text is None:
                continue
            total += 1
            true += mentions_attribute(text, record["answer"])
            prior += bool(prior_answer) and mentions_attribute(text, prior_answer)
    return {
        "states_true": true / total if total else 0.0,
        "states_prior": prior / total if total else 0.0,
        "descriptions": total,
    }


def ungrounded(responses: dict[str, dict[str, Any]], shown_of: dict[str, str]) -> dict[str, float]:
    """Share of sampled descriptions that state a colour the image does not show, on prior-conflicting
    items (``ungrounded_conflict``) and on obscured items, whose object is grey (``ungrounded_obscured``;
    absent when the world has none)."""
    counts = {"conflict": [0, 0], "obscured": [0, 0]}
    for item_id, record in responses.items():
        side = "obscured" if item_id.startswith("eval_obscured/") else "conflict" if record.get("conflict") else None
        if side is None or item_id not in shown_of:
            continue
        for sample in record["samples"]:
            text = description(sample["text"])
            if text is not None:
                counts[side][0] += states_unshown_colour(text, shown_of[item_id])
                counts[side][1] += 1
    return {f"ungrounded_{side}": hits / total for side, (hits, total) in counts.items() if total}


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _responses(out: Path, label: str, seed: int) -> dict[str, dict[str, Any]]:
    return read_responses(out / "eval" / f"{label}-s{seed}" / "responses" / RESPONSES)


def collect(out: Path, world: Path, summaries: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per evaluated model (``summaries``: label -> seed -> evaluation summary): Score and Prior (Avg@k and
    Pass@k) per seed, what its descriptions state, and mean ± sd over seeds of each."""
    results: dict[str, Any] = {}
    truth = world_truth(world)
    prior_of = {item: t["prior"] for item, t in truth.items()}
    shown_of = {item: t["shown"] for item, t in truth.items()}
    for label, by_seed in summaries.items():
        per_seed = []
        for seed, summary in sorted(by_seed.items()):
            k = summary["k"]
            vilp = next(iter(summary["vilp"].values()))
            responses = _responses(out, label, seed)
            per_seed.append(
                {
                    "seed": seed,
                    **{
                        f"{side}_{metric}": vilp[side][f"{metric}@{k}"]
                        for side in ("score", "prior")
                        for metric in ("avg", "pass")
                    },
                    **grounding(responses, prior_of),
                    **ungrounded(responses, shown_of),
                }
            )
        row: dict[str, Any] = {"per_seed": per_seed}
        for key in ("score_avg", "prior_avg", "score_pass", "prior_pass"):
            row[key] = spread([s[key]["mean"] for s in per_seed])
        for key in ("states_true", "states_prior", "ungrounded_conflict", "ungrounded_obscured"):
            if all(key in s for s in per_seed):
                row[key] = spread([s[key] for s in per_seed])
        results[label] = row
    return results


def paired(out: Path, vigos: str, opsd: str, seeds: list[int], k: int) -> dict[str, PairedDifference]:
    """ViGOS - OPSD on Score (prior-conflicting items) and Prior (agreeing items), per seed and item, with
    the bootstrap interval of :func:`vigos.demo.study.paired_difference`."""
    result = {}
    for name, conflict in (("score", True), ("prior", False)):
        scores = {
            label: {seed: item_scores(_responses(out, label, seed), k, conflict=conflict) for seed in seeds}
            for label in (vigos, opsd)
        }
        result[name] = paired_difference(scores[vigos], scores[opsd])
    return result
