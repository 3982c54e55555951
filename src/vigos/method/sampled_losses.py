"""Losses on the student's own sampled tokens, from model states: the sampled-token divergences
(`vigos.method.losses.sampled_token_kl`) against a teacher read as one log-probability per token
(`SampledTeacher`), and the outcome-reward policy gradient. Chunked over tokens like the divergences
of `vigos.method.state_losses`, through the same fused engine."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from vigos.method.fused_loss import chunked_top_k_divergence_sum
from vigos.method.losses import (
    SampledTokenLoss,
    _check_temperature,
    _token_count,
    aggregate,
    clip_token_values,
    policy_gradient,
    values_with_finite_gradient,
)
from vigos.method.state_losses import supervised_rows


def sampled_log_probs(logits: Tensor, ids: Tensor, temperature: float = 1.0) -> Tensor:
    """Tempered log-probabilities ``[N, 1]`` of the tokens ``ids`` ``[N, 1]`` from ``logits`` ``[N, V]``,
    in float32 or wider; differentiable wrt ``logits``."""
    _check_temperature(temperature)
    log_probs = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature, dim=-1)
    return log_probs.gather(-1, ids)


def sampled_loss_from_logits(
    student_logits: Tensor,
    teacher_logits: Tensor,
    ids: Tensor,
    loss: SampledTokenLoss,
    mask: Tensor,
    clip: Tensor | float | None = None,
    global_count: Tensor | float | int | None = None,
) -> Tensor:
    """One sampled-token loss term from full logits ``[N, V]`` at the sampled tokens ``ids`` ``[N]``:
    loss, clip, masked global mean. The naive reference path."""
    column = ids.view(-1, 1)

    def values_of(student: Tensor, teacher: Tensor) -> Tensor:
        read = partial(sampled_log_probs, ids=column, temperature=loss.temperature)
        return loss(read(student)[:, 0], read(teacher)[:, 0])

    values = values_with_finite_gradient(values_of, student_logits, teacher_logits.detach())
    return aggregate(clip_token_values(values, clip), mask, global_count)


@dataclass(frozen=True)
class SampledTeacher:
    """A teacher at N tokens, kept as its tempered log-probability ``log_probs`` ``[N]`` of the token the
    student sampled there, ``ids`` ``[N]``: all a sampled-token loss reads, one number per token."""

    log_probs: Tensor
    ids: Tensor
    temperature: float

    def loss_term(
        self,
        student_hidden: Tensor,
        student_head: Tensor,
        teacher_head: Tensor | None,
        loss: SampledTokenLoss,
        *,
        clip: Tensor | float | None = None,
        global_count: Tensor | float | int | None = None,
        chunk_size: int | None = 1024,
    ) -> Tensor:
        """The term against the student's rows ``[N, H]``: `sampled_loss_from_hidden` with every row
        supervised (``teacher_head`` is not needed: the teacher is already read)."""
        mask = torch.ones(student_hidden.shape[0], dtype=torch.bool, device=student_hidden.device)
        return sampled_loss_from_hidden(
            student_hidden,
            student_head,
            self,
            loss,
            mask=mask,
            clip=clip,
            global_count=global_count,
            chunk_size=chunk_size,
        )


def sampled_teacher(
    teacher_hidden: Tensor, teacher_head: Tensor, ids: Tensor, temperature: float = 1.0, chunk_size: int | None = 1024
) -> SampledTeacher:
    """The teacher's log-probability of each sampled token ``ids`` ``[N]``, from its final hidden states
    ``[N, H]`` and output projection ``[V, H]``, projected ``chunk_size`` rows at a time (None: at once)."""
    if ids.shape != teacher_hidden.shape[:1]:
        raise ValueError(f"ids must be [N] with N = {teacher_hidden.shape[0]} rows, got {tuple(ids.shape)}")
    step = chunk_size or max(teacher_hidden.shape[0], 1)
    columns = ids.view(-1, 1)
    with torch.no_grad():
        log_probs = [
            sampled_log_probs(
                F.linear(teacher_hidden[start : start + step], teacher_head.detach()),
                columns[start : start + step],
                temperature,
            )
            for start in range(0, max(teacher_hidden.shape[0], 1), step)
        ]
    return SampledTeacher(torch.cat(log_probs)[:, 0], ids, float(temperature))


def sampled_loss_from_hidden(
    student_hidden: Tensor,
    student_head: Tensor,
    teacher: SampledTeacher,
    loss: SampledTokenLoss,
    mask: Tensor,
    clip: Tensor | float | None = None,
    global_count: Tensor | float | int | None = None,
    chunk_size: int | None = 1024,
) -> Tensor:
    """One sampled-token loss term against a `SampledTeacher`: loss, clip, masked global mean.

    As `divergence_from_top_k`, with one bin per row (the sampled token): the student's rows ``[N, H]``
    are projected through ``student_head`` ``[V, H]`` a chunk at a time (autograd per chunk, nothing
    vocabulary-sized kept for backward; None: all rows through plain autograd, the reference).
    """
    if student_hidden.dim() != 2 or teacher.log_probs.shape[0] != student_hidden.shape[0]:
        raise ValueError(
            f"student_hidden must be [N, H] with N = the teacher's {teacher.log_probs.shape[0]} rows, "
            f"got {tuple(student_hidden.shape)}"
        )
    if not isinstance(loss, SampledTokenLoss):
        raise ValueError(f"a sampled-token teacher needs a SampledTokenLoss value; got {loss!r}")
    if loss.temperature != teacher.temperature:
        raise ValueError(
            f"the loss's temperature {loss.temperature} differs from the sampled teacher's {teacher.temperature}; "
            "build both with the same distillation temperature"
        )
    rows, student_rows, row_clips = supervised_rows(student_hidden, mask, clip, chunk_size)
    teacher_log_probs = teacher.log_probs.index_select(0, rows).view(-1, 1)
    ids = teacher.ids.index_select(0, rows).view(-1, 1)
    read = partial(sampled_log_probs, temperature=teacher.temperature)

    def per_row(student: Tensor, teacher_column: Tensor) -> Tensor:
        return loss(student[:, 0], teacher_column[:, 0])

    if chunk_size is None:
        values = values_with_finite_gradient(
            lambda logits, teacher_column: per_row(read(logits, ids), teacher_column),
            F.linear(student_rows, student_head),
            teacher_log_probs,
        )
        total = torch.clamp(values, max=row_clips).sum()
    else:
        total = chunked_top_k_divergence_sum(
            student_rows, student_head, teacher_log_probs, ids, row_clips, per_row, read, chunk_size
        )
    return total / _token_count(mask, global_count, total)


def policy_gradient_from_hidden(
    student_hidden: Tensor,
    student_head: Tensor,
    ids: Tensor,
    advantages: Tensor,
    *,
    temperature: float = 1.0,
    global_count: Tensor | float | int | None = None,
    chunk_size: int | None = 1024,
) -> Tensor:
    """The outcome-reward term: `policy_gradient` at every row ``[N, H]`` (the tokens ``ids`` ``[N]`` with
    their ``advantages`` ``[N]``), summed and divided once by ``global_count``, projected through
    ``student_head`` ``[V, H]`` a chunk at a time as in `sampled_loss_from_hidden` (None: at once)."""
    if student_hidden.dim() != 2 or ids.shape != student_hidden.shape[:1] or advantages.shape != ids.shape:
        raise ValueError(
            f"student_hidden must be [N, H] with ids and advantages [N]; got {tuple(student_hidden.shape)}, "
            f"{tuple(ids.shape)} and {tuple(advantages.shape)}"
        )
    mask = torch.ones(student_hidden.shape[0], dtype=torch.bool, device=student_hidden.device)
    _, student_rows, row_clips = supervised_rows(student_hidden, mask, None, chunk_size)
    columns = ids.view(-1, 1)
    advantage_column = advantages.detach().to(row_clips.dtype).view(-1, 1)
    read = partial(sampled_log_probs, temperature=temperature)

    def per_row(student: Tensor, advantage: Tensor) -> Tensor:
        return policy_gradient(student[:, 0], advantage[:, 0])

    if chunk_size is None:
        total = per_row(read(F.linear(student_rows, student_head), columns), advantage_column).sum()
    else:
        total = chunked_top_k_divergence_sum(
            student_rows, student_head, advantage_column, columns, row_clips, per_row, read, chunk_size
        )
    return total / _token_count(mask, global_count, total)
