"""What one scoring call reports besides its loss: the step's rates, means and terms over all processes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from vigos.data.rows import Example
from vigos.grading.answers import extract_answer, is_correct
from vigos.method.spans import CompletionSpans


def rollout_rewards(
    tokenizer: Any, examples: Sequence[Example], completion_ids: list[list[int]], spans: list[CompletionSpans]
) -> list[float]:
    """Each rollout's outcome reward: 1.0 when its answer (the boxed one of a valid rollout, else the one
    `extract_answer` finds in its text) is correct for its example's reference answer, else 0.0."""
    rewards = []
    for example, ids, s in zip(examples, completion_ids, spans):
        prediction = s.answer if s.valid else None
        if prediction is None:
            prediction = extract_answer(tokenizer.decode(ids, skip_special_tokens=True))
        rewards.append(float(bool(is_correct(prediction, example.answer))))
    return rewards


def group_advantages(examples: Sequence[Example], rewards: Sequence[float]) -> list[float]:
    """Each rollout's reward minus the mean reward of the rollouts of the same prompt (the same example
    object: the trainer repeats each prompt's example for its ``num_generations`` rollouts)."""
    groups: dict[int, list[float]] = {}
    for example, reward in zip(examples, rewards):
        groups.setdefault(id(example), []).append(reward)
    return [reward - sum(groups[id(e)]) / len(groups[id(e)]) for e, reward in zip(examples, rewards)]


def step_metrics(
    tokenizer: Any,
    examples: Sequence[Example],
    completion_ids: list[list[int]],
    spans: list[CompletionSpans],
    local_totals: torch.Tensor,
    terms: dict[str, torch.Tensor],
    loss: torch.Tensor,
    step_rollouts: float,
    reduce_sum: Callable[[torch.Tensor], torch.Tensor],
) -> dict[str, float]:
    """This call's share of the step's metrics over all processes: sums across
    processes, divided by the step's rollouts (``loss_*`` are already shares)."""
    correct = sum(rollout_rewards(tokenizer, examples, completion_ids, spans))
    names = list(terms)
    local = torch.tensor(
        [
            sum(s.valid for s in spans),
            sum(s.tagless for s in spans),
            sum(s.length for s in spans),
            correct,
            float(loss.detach()),
        ]
        + [float(terms[name].detach()) for name in names],
        dtype=torch.float32,
    )
    summed = reduce_sum(torch.cat([local_totals.cpu(), local]).to(loss.device)).tolist()
    rollouts, counts = summed[0], summed[1 : 1 + len(names)]
    valid, tagless, length, correct, total_loss, *values = summed[1 + len(names) :]
    n = max(step_rollouts, 1.0)
    metrics = {
        "loss": total_loss,
        "valid_rate": valid / n,
        "fallback_rate": (rollouts - valid) / n,
        "tagless_rate": tagless / n,
        "completion_length": length / n,
        "answer_accuracy": correct / n,
    }
    for name, value, count in zip(names, values, counts):
        metrics[f"loss_{name}"] = value
        metrics[f"tokens_{name}"] = count / n
    return metrics
