"""The public release's way of scoring, kept as the reference the fast path is tested and benchmarked against.

Every pass returns full-vocabulary logits ``[B, L, V]``, every teacher pass's logits stay alive until the
loss, and each term is `divergence_from_logits` on them; every context encodes its own image. Selected with
``naive_loss: true``; slow and memory-hungry at a real vocabulary, which is what ``make bench`` measures.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from vigos.method.losses import DivergenceFn, SampledTokenLoss, policy_gradient
from vigos.method.sampled_losses import sampled_log_probs, sampled_loss_from_logits
from vigos.method.score_types import ScoreOutput
from vigos.method.scoring import Scorer
from vigos.method.state_losses import divergence_from_logits
from vigos.models.modeling import output_head_shape


@dataclass(frozen=True)
class LogitsTeacher:
    """A teacher's full logits ``[N, V]`` at the N tokens its term supervises, and the student's sampled
    token ids there ``[N]`` for a sampled-token loss."""

    logits: torch.Tensor
    ids: torch.Tensor | None = None

    def loss_term(
        self,
        student_logits: torch.Tensor,
        student_head: None,
        teacher_head: None,
        divergence: DivergenceFn | SampledTokenLoss,
        *,
        clip: torch.Tensor | float | None = None,
        global_count: torch.Tensor | float | int | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """The term against the student's logits ``[N, V]`` at the same tokens (heads and chunks unused)."""
        mask = torch.ones(student_logits.shape[0], dtype=torch.bool, device=student_logits.device)
        if isinstance(divergence, SampledTokenLoss):
            if self.ids is None:
                raise ValueError("a sampled-token loss needs the sampled token ids; build the teacher with ids")
            return sampled_loss_from_logits(student_logits, self.logits, self.ids, divergence, mask, clip, global_count)
        return divergence_from_logits(student_logits, self.logits, divergence, mask, clip, global_count)


class FullLogitsScorer(Scorer):
    """`Scorer` on full logits, as the release computes the loss (``teacher_top_k`` is not supported)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.options.teacher_top_k is not None:
            raise ValueError("teacher_top_k needs the hidden-state scorer (naive_loss: false)")
        self._passes: list[torch.Tensor] = []

    def __call__(
        self,
        model: torch.nn.Module,
        examples: Sequence[Any],
        completions: Sequence[Any],
        *,
        step_totals: torch.Tensor | None = None,
    ) -> ScoreOutput:
        # Every teacher pass's whole output is held until the loss is computed, as in the release.
        self._passes = []
        try:
            return super().__call__(model, examples, completions, step_totals=step_totals)
        finally:
            self._passes = []

    def _shares_image_features(self, model: torch.nn.Module) -> bool:
        return False

    def _forward(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return model(**batch, use_cache=False).logits

    def _teacher_forward(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        # A separate teacher's head may be padded to more rows than the student's: read up to the student's.
        logits = self._forward(model, batch)[..., : self._output_width(model)]
        self._passes.append(logits)
        return logits

    def _output_width(self, model: torch.nn.Module) -> int:
        separate = next((t for t in self.separate.values() if t.model is model), None)
        return separate.vocab_rows if separate else output_head_shape(model)[0]

    def _read_teachers(
        self, model: torch.nn.Module, states: dict[str, torch.Tensor], sampled_ids: dict[str, torch.Tensor]
    ) -> dict[str, LogitsTeacher]:
        return {
            name: LogitsTeacher(rows, sampled_ids[name].to(rows.device) if name in sampled_ids else None)
            for name, rows in states.items()
        }

    def _reward_term(
        self, rows: torch.Tensor, head: None, ids: torch.Tensor, advantages: torch.Tensor, count: torch.Tensor
    ) -> torch.Tensor:
        log_probs = sampled_log_probs(rows, ids.view(-1, 1))[:, 0]
        return policy_gradient(log_probs, advantages).sum() / count.clamp(min=1)

    @contextmanager
    def _heads(self, model: torch.nn.Module) -> Iterator[tuple[None, None]]:
        yield None, None
