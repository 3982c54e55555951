"""What scoring takes and gives: its options, its output, and one teacher sequence."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from vigos.method.spans import CompletionSpans
from vigos.models.modeling import Context


@dataclass
class ScoringOptions:
    """Loss settings. These defaults are the only ones: ``ViGOSConfig`` takes its loss options' defaults
    from here, and `from_settings` reads a config's values back by the same names."""

    distill_temperature: float = 1.0
    jsd_beta: float = 0.5
    token_loss_clip: float | None = 0.05
    description_end_clip: float | None = 0.05
    reasoning_start_clip: float | None = 0.05
    loss_chunk_size: int | None = 128
    teacher_batch_size: int = 8
    # Teachers kept as their top-k tokens and tail mass (state_losses.TopKTeacher) instead of hidden states.
    teacher_top_k: int | None = None
    # One vision encode per image per call under the teacher's weights, shared
    # by every teacher pass, and by the student pass too when the vision tower
    # is frozen; a trained tower (LoRA on its blocks) encodes the student's
    # image inside the student's pass, with gradient. The full-logits scorer
    # encodes the image once per context, as the release does.
    reuse_image_features: bool = True
    # Weight of the outcome-reward term (0: off): every completion token's policy gradient, with the
    # rollout's graded answer minus the mean over the rollouts of the same prompt as its advantage.
    reward_weight: float = 0.0

    @classmethod
    def from_settings(cls, settings: Any) -> ScoringOptions:
        """The options ``settings`` holds under the same names (a ``ViGOSConfig``, say)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


@dataclass
class ScoreOutput:
    """What scoring returns.

    ``loss`` is the weighted sum of the terms; ``terms`` holds each term's
    unweighted value: this process's share of the term's mean over the global
    batch (its tokens' divergences summed, divided by the global token count),
    so that the shares of all processes add up to the term (with one process,
    the share is the term). ``metrics`` are plain floats, the same on every
    process: this call's share of the optimizer step's rates, means and terms
    over all processes (with no gradient accumulation, the step's values).
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    metrics: dict[str, float]
    spans: list[CompletionSpans]
    completion_ids: list[list[int]]
    supervised: dict[str, list[tuple[int, int] | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class TeacherJob:
    """One teacher sequence: ``context`` (the teacher's prompt, then the student's own ids from where
    the teacher reads), the position that predicts the row's first supervised token, and how many
    supervised tokens follow it."""

    row: int
    context: Context
    first: int
    count: int
