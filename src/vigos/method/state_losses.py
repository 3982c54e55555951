"""Per-token divergences from model states.

Full logits (the plain path), final hidden states through the output head in chunks (the fused
path), and a teacher's top-k. A teacher's side of a loss term comes in one of three representations,
chosen once per scoring call: `HiddenTeacher` (its final hidden states, the exact loss), `TopKTeacher`
(its k most likely tokens and the mass of the rest) or `vigos.method.sampled_losses.SampledTeacher`
(its log-probability of the student's sampled token, for a sampled-token loss); each gives the term
through ``loss_term``, so the scorer never branches on which it holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from vigos.method.fused_loss import chunked_divergence_sum, chunked_top_k_divergence_sum
from vigos.method.losses import (
    DIVERGENCES,
    Divergence,
    DivergenceFn,
    _check_mask,
    _check_scalar_clip,
    _check_temperature,
    _token_count,
    aggregate,
    clip_token_values,
    values_with_finite_gradient,
)


def divergence_from_logits(
    student_logits: Tensor,
    teacher_logits: Tensor,
    divergence: DivergenceFn,
    mask: Tensor,
    clip: Tensor | float | None = None,
    global_count: Tensor | float | int | None = None,
) -> Tensor:
    """One loss term from full logits: divergence, clip, masked global mean.

    The naive reference path (all ``[N, V]`` logits alive at once).

    Args:
        student_logits: ``[N, V]``.
        teacher_logits: ``[N, V]``.
        divergence: ``f(student_logits, teacher_logits) -> [N]``, e.g. from
            `get_divergence`.
        mask: ``[N]`` bool, the supervised tokens.
        clip: per-token clip, as in `clip_token_values`.
        global_count: denominator, as in `aggregate`.

    Returns:
        Scalar loss term.
    """
    values = clip_token_values(values_with_finite_gradient(divergence, student_logits, teacher_logits), clip)
    return aggregate(values, mask, global_count)


def _plain_term(
    student_rows: Tensor,
    teacher_rows: Tensor,
    student_head: Tensor,
    teacher_head: Tensor,
    clip: Tensor | float | None,
    divergence: DivergenceFn,
) -> Tensor:
    """Sum of clipped divergences over all rows at once, through autograd (the unchunked path)."""
    student_logits = F.linear(student_rows, student_head)
    with torch.no_grad():
        teacher_logits = F.linear(teacher_rows, teacher_head)
    return clip_token_values(values_with_finite_gradient(divergence, student_logits, teacher_logits), clip).sum()


def divergence_from_hidden(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    student_head: Tensor,
    teacher_head: Tensor,
    divergence: DivergenceFn,
    mask: Tensor,
    clip: Tensor | float | None = None,
    global_count: Tensor | float | int | None = None,
    chunk_size: int | None = 1024,
) -> Tensor:
    """One loss term from final hidden states, chunked over tokens.

    Equals ``divergence_from_logits(student_hidden @ student_head.T,
    teacher_hidden @ teacher_head.T, divergence, mask, clip, global_count)``
    in value and gradient, without materializing ``[N, V]`` logits:

    - only the supervised rows (``mask``) are projected at all;
    - they are processed ``chunk_size`` rows at a time; each chunk's logits
      are computed once, and the gradient wrt the student rows and head is
      accumulated right there (closed form for forward and reverse KL,
      autograd on the chunk for other divergences), so the forward keeps no
      ``[chunk, V]`` tensor and the backward only scales the accumulated
      gradients. Peak memory is a few ``[chunk, V]`` buffers plus ``[N, H]``
      (and ``[V, H]`` when the head is trained);
    - the teacher side is detached and computed without grad, so passing the
      student's own ``lm_head`` weight as ``teacher_head`` (LoRA: the teacher
      shares it) is fine and adds no gradient through the teacher.

    The masked sum is divided once by the global count (as in `aggregate`).

    Args:
        student_hidden: ``[N, H]`` student final hidden states (requires grad).
        teacher_hidden: ``[N, H_teacher]`` teacher final hidden states (no grad).
        student_head: ``[V, H]`` output projection weight of the student.
        teacher_head: ``[V, H_teacher]`` output projection weight of the teacher.
        divergence: ``f(student_logits, teacher_logits) -> [N]``.
        mask: ``[N]`` bool, the supervised tokens.
        clip: None, a scalar, or an ``[N]`` per-token clip (``inf`` = none).
        global_count: denominator, as in `aggregate`.
        chunk_size: rows per chunk; None means one chunk through plain
            autograd (the unchunked reference path).

    Returns:
        Scalar loss term; exactly 0 (with a graph to the student inputs) when
        no token is supervised.
    """
    if student_hidden.dim() != 2 or teacher_hidden.dim() != 2 or teacher_hidden.shape[0] != student_hidden.shape[0]:
        raise ValueError(
            "student_hidden and teacher_hidden must be [N, H] and [N, H_teacher] with the same N, got "
            f"{tuple(student_hidden.shape)} and {tuple(teacher_hidden.shape)}"
        )
    student_shape = (student_head.shape[0], student_hidden.shape[1])
    if student_head.dim() != 2 or tuple(student_head.shape) != student_shape:
        raise ValueError(f"student_head must be [V, H] with H = {student_shape[1]}, got {tuple(student_head.shape)}")
    if tuple(teacher_head.shape) != (student_shape[0], teacher_hidden.shape[1]):
        raise ValueError(
            f"teacher_head must be [V, H_teacher] = {[student_shape[0], teacher_hidden.shape[1]]} (the student's "
            f"vocabulary, the teacher's hidden size), got {tuple(teacher_head.shape)}"
        )
    rows, student_rows, row_clips = supervised_rows(student_hidden, mask, clip, chunk_size)
    teacher_rows = teacher_hidden.detach().index_select(0, rows)
    teacher_head = teacher_head.detach()
    if chunk_size is None:
        total = _plain_term(student_rows, teacher_rows, student_head, teacher_head, row_clips, divergence)
    else:
        total = chunked_divergence_sum(
            student_rows, student_head, teacher_rows, teacher_head, row_clips, divergence, chunk_size
        )
    return total / _token_count(mask, global_count, total)


def supervised_rows(
    student_hidden: Tensor, mask: Tensor, clip: Tensor | float | None, chunk_size: int | None
) -> tuple[Tensor, Tensor, Tensor]:
    """The supervised row indices [n], the student's rows there [n, H] and their clips [n] (``inf``: none),
    after checking the mask, clip and chunk size.

    Only supervised rows are projected at all: each loss term supervises one span, so this skips the
    vocabulary projection for every other token.
    """
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    mask = _check_mask(mask, student_hidden.shape[:1], "the rows of student_hidden")
    rows = mask.nonzero().squeeze(-1)
    student_rows = student_hidden.index_select(0, rows)
    dtype = torch.promote_types(student_rows.dtype, torch.float32)
    row_clips = torch.full((rows.shape[0],), math.inf, dtype=dtype, device=student_rows.device)
    if isinstance(clip, Tensor):
        if clip.dim() == 1 and clip.shape != mask.shape:
            raise ValueError(f"a per-token clip must have shape {list(mask.shape)}, got {list(clip.shape)}")
        if clip.dim() not in (0, 1):
            raise ValueError(f"clip must be a scalar or an [N] tensor, got shape {tuple(clip.shape)}")
        clip = clip.detach().to(device=student_rows.device, dtype=dtype)
        row_clips.copy_((clip.index_select(0, rows) if clip.dim() == 1 else clip).expand_as(row_clips))
    elif clip is not None:
        row_clips.fill_(_check_scalar_clip(clip))
    return rows, student_rows, row_clips


@dataclass(frozen=True)
class HiddenTeacher:
    """A teacher's final hidden states ``[N, H]`` at the N tokens its term supervises (no grad), and its
    own output head ``[V, H]`` when it is another model than the student (None: the head the scorer
    passes, the policy's)."""

    hidden: Tensor
    head: Tensor | None = None

    def loss_term(
        self,
        student_hidden: Tensor,
        student_head: Tensor,
        teacher_head: Tensor,
        divergence: DivergenceFn,
        *,
        clip: Tensor | float | None = None,
        global_count: Tensor | float | int | None = None,
        chunk_size: int | None = 1024,
    ) -> Tensor:
        """The term against the student's rows ``[N, H]``: `divergence_from_hidden` with every row supervised,
        the teacher's rows projected through its own head, else ``teacher_head`` ``[V, H]``."""
        mask = torch.ones(student_hidden.shape[0], dtype=torch.bool, device=student_hidden.device)
        head = teacher_head if self.head is None else self.head
        return divergence_from_hidden(
            student_hidden,
            self.hidden.to(head.dtype),
            student_head,
            head,
            divergence,
            mask=mask,
            clip=clip,
            global_count=global_count,
            chunk_size=chunk_size,
        )


@dataclass(frozen=True)
class TopKTeacher:
    """A teacher's distribution at N tokens, kept as its k most likely tokens plus the mass of the rest.

    ``log_probs`` ``[N, k + 1]``: tempered log-probabilities of the k tokens
    in ``ids`` ``[N, k]``, then of everything else (the tail; no tail column
    when k is the whole vocabulary). A divergence against it is the divergence
    between the two distributions coarsened to those k + 1 bins: the student's
    side is its probability of each of the same k tokens and of the rest (see
    `coarse_log_probs`). That equals the full divergence when the tail is
    empty and, for the KLs, is at most the full one otherwise (coarsening only
    merges outcomes); it is what a teacher that returns top-k log-probabilities
    (a vLLM server, say) supports, at k + 1 numbers per token instead of H.
    """

    log_probs: Tensor
    ids: Tensor
    temperature: float

    def index_select(self, rows: Tensor) -> TopKTeacher:
        """The teacher at the given rows only."""
        return TopKTeacher(self.log_probs.index_select(0, rows), self.ids.index_select(0, rows), self.temperature)

    def loss_term(
        self,
        student_hidden: Tensor,
        student_head: Tensor,
        teacher_head: Tensor | None,
        divergence: Divergence,
        *,
        clip: Tensor | float | None = None,
        global_count: Tensor | float | int | None = None,
        chunk_size: int | None = 1024,
    ) -> Tensor:
        """The term against the student's rows ``[N, H]``: `divergence_from_top_k` with every row supervised
        (``teacher_head`` is not needed: the teacher is already projected)."""
        mask = torch.ones(student_hidden.shape[0], dtype=torch.bool, device=student_hidden.device)
        return divergence_from_top_k(
            student_hidden,
            student_head,
            self,
            divergence,
            mask=mask,
            clip=clip,
            global_count=global_count,
            chunk_size=chunk_size,
        )


def coarse_log_probs(logits: Tensor, ids: Tensor, temperature: float = 1.0) -> Tensor:
    """Tempered log-probabilities ``[N, k + 1]`` of the tokens ``ids`` ``[N, k]`` and of all others
    (the last column; left out when k is the vocabulary size), from ``logits`` ``[N, V]``, in float32 or
    wider; differentiable wrt ``logits``."""
    _check_temperature(temperature)
    if ids.dim() != 2 or ids.shape[0] != logits.shape[0] or not 1 <= ids.shape[1] <= logits.shape[-1]:
        raise ValueError(
            f"ids must be [N, k] with N = {logits.shape[0]} and 1 <= k <= V = {logits.shape[-1]}, "
            f"got {tuple(ids.shape)}"
        )
    log_probs = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature, dim=-1)
    kept = log_probs.gather(-1, ids)
    if ids.shape[1] == logits.shape[-1]:
        return kept
    # The tail from the other entries themselves (not log(1 - sum kept), which cancels catastrophically
    # when the kept tokens hold nearly all the mass).
    tail = torch.logsumexp(log_probs.scatter(-1, ids, -math.inf), dim=-1, keepdim=True)
    return torch.cat([kept, tail], dim=-1)


def top_k_teacher(
    teacher_hidden: Tensor, teacher_head: Tensor, k: int, temperature: float = 1.0, chunk_size: int | None = 1024
) -> TopKTeacher:
    """The teacher's top-k tokens and tail mass at each of N rows, from its final hidden states
    ``[N, H]`` and output projection ``[V, H]``, projected ``chunk_size`` rows at a time (no ``[N, V]``
    logits; None: all rows at once)."""
    vocab = teacher_head.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab:
        raise ValueError(f"k must be an int in [1, V = {vocab}], got {k!r}")
    rows = teacher_hidden.shape[0]
    step = chunk_size or max(rows, 1)
    log_probs, ids = [], []
    with torch.no_grad():
        # At least one (possibly empty) chunk, so that no rows still give [0, k + 1] and [0, k].
        for start in range(0, max(rows, 1), step):
            logits = F.linear(teacher_hidden[start : start + step], teacher_head.detach())
            top = logits.topk(k, dim=-1).indices
            log_probs.append(coarse_log_probs(logits, top, temperature))
            ids.append(top)
    return TopKTeacher(torch.cat(log_probs), torch.cat(ids), float(temperature))


def divergence_from_top_k(
    student_hidden: Tensor,
    student_head: Tensor,
    teacher: TopKTeacher,
    divergence: Divergence,
    mask: Tensor,
    clip: Tensor | float | None = None,
    global_count: Tensor | float | int | None = None,
    chunk_size: int | None = 1024,
) -> Tensor:
    """One loss term against a `TopKTeacher`: divergence on the k + 1 bins, clip, masked global mean.

    As `divergence_from_hidden`, with the teacher's ``[N, k + 1]`` log-probabilities in place of its
    hidden states and head: the student's rows ``[N, H]`` are projected through ``student_head``
    ``[V, H]`` a chunk at a time (autograd per chunk, nothing vocabulary-sized kept for backward;
    None: all rows through plain autograd, the reference). ``divergence`` must come from
    `get_divergence` with the teacher's temperature.
    """
    if student_hidden.dim() != 2 or teacher.log_probs.shape[0] != student_hidden.shape[0]:
        raise ValueError(
            f"student_hidden must be [N, H] with N = the teacher's {teacher.log_probs.shape[0]} rows, "
            f"got {tuple(student_hidden.shape)}"
        )
    if not isinstance(divergence, Divergence):
        valid = ", ".join(repr(known) for known in DIVERGENCES)
        raise ValueError(f"a top-k teacher needs a Divergence value, named one of {valid}; got {divergence!r}")
    if divergence.temperature != teacher.temperature:
        raise ValueError(
            f"the divergence's temperature {divergence.temperature} differs from the top-k teacher's "
            f"{teacher.temperature}; build both with the same distillation temperature"
        )
    # The teacher's log-probabilities are already tempered, and so are the student's coarsened ones.
    coarse_divergence = divergence.at_temperature(1.0)
    rows, student_rows, row_clips = supervised_rows(student_hidden, mask, clip, chunk_size)
    teacher = teacher.index_select(rows)
    coarsen = partial(coarse_log_probs, temperature=teacher.temperature)
    if chunk_size is None:
        values = values_with_finite_gradient(
            lambda logits, coarse: coarse_divergence(coarsen(logits, teacher.ids), coarse),
            F.linear(student_rows, student_head),
            teacher.log_probs,
        )
        total = torch.clamp(values, max=row_clips).sum()
    else:
        total = chunked_top_k_divergence_sum(
            student_rows,
            student_head,
            teacher.log_probs,
            teacher.ids,
            row_clips,
            coarse_divergence,
            coarsen,
            chunk_size,
        )
    return total / _token_count(mask, global_count, total)
