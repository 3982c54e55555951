"""The engine of `vigos.method.state_losses.divergence_from_hidden` (and `divergence_from_top_k`): projection,
divergence and gradient fused per chunk.

Rows of final hidden states are projected to the vocabulary a chunk at a
time; each chunk's divergence values and their gradient wrt its logits are
computed as soon as its logits exist, and turned into gradients wrt the
hidden rows (and the output head, if trained) before the next chunk, in the
style of fused linear + loss kernels. Nothing vocabulary-sized is saved for
backward and no logits are recomputed; peak memory is three ``[chunk, V]``
workspaces, reused by every chunk.

Forward and reverse KL against a teacher's hidden states have closed-form
logit gradients (below); any other divergence, and any divergence against a
top-k teacher, gets its per-chunk gradient from autograd. Both kinds run
through one chunk loop (`_ChunkedDivergence`), each supplying its `ChunkStep`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from vigos.method.losses import Divergence, DivergenceFn, values_with_finite_gradient

__all__ = ["chunked_divergence_sum", "chunked_top_k_divergence_sum"]


def _row_dot(a: Tensor, b: Tensor) -> Tensor:
    """``(a * b).sum(-1)`` for ``[n, V]`` inputs without an ``[n, V]`` temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _project(rows: Tensor, head: Tensor, out: Tensor) -> None:
    """``out = rows @ head.T``, computed in the rows' dtype and stored in ``out``'s."""
    if rows.dtype == out.dtype:
        torch.mm(rows, head.T, out=out)
    else:
        out.copy_(F.linear(rows, head))


def _softmax_and_logsumexp(logits: Tensor, peak: Tensor, at: Tensor, out: Tensor) -> Tensor:
    """Writes ``softmax(logits)`` ``[n, V]`` into ``out`` and returns ``logsumexp(logits)`` ``[n]``.

    One exponential per entry: the log-normalizer is read off the softmax at
    the row's maximum (``peak``, at index ``at``), where the probability is at
    least ``1 / V``, so its logarithm loses nothing.
    """
    torch.softmax(logits, dim=-1, out=out)
    return peak - out.gather(1, at.unsqueeze(1)).squeeze(1).log()


def _kl_chunk(
    student_rows: Tensor,
    teacher_rows: Tensor,
    student_head: Tensor,
    teacher_head: Tensor,
    kind: str,
    temperature: float,
    logits: Tensor,
    probs: Tensor,
) -> tuple[Tensor, Tensor]:
    """Unclipped KL values ``[n]`` of one chunk and their gradient wrt the tempered student logits ``[n, V]``.

    With tempered logits ``s`` (student) and ``t`` (teacher) and their
    log-normalizers ``A_s`` and ``A_t``::

        KL(t || s) = sum p_t (t - s) - A_t + A_s     gradient p_s - p_t
        KL(s || t) = sum p_s (s - t) - A_s + A_t     gradient p_s (s - t - sum p_s (s - t))

    Two exponentials per vocabulary entry. Every ``[n, V]`` intermediate
    lives in the caller's workspaces ``logits`` (``[2n, V]`` rows used) and
    ``probs`` (``[n, V]``), updated in place: on a CPU a fresh
    vocabulary-sized allocation costs more than the arithmetic on it, since
    every page of it faults in. The gradient returned is a view of ``logits``.
    """
    n = student_rows.shape[0]
    both = logits[: 2 * n]
    if student_head is teacher_head:
        # One GEMM for both sides reads the head once.
        _project(torch.cat([student_rows, teacher_rows]), student_head, both)
    else:
        _project(student_rows, student_head, both[:n])
        _project(teacher_rows, teacher_head, both[n:])
    if temperature != 1.0:
        both.div_(temperature)
    peaks, at = both.max(dim=-1)
    student, teacher = both[:n], both[n:]
    if kind == "forward_kl":
        teacher_norm = _softmax_and_logsumexp(teacher, peaks[n:], at[n:], probs[:n])
        values = _row_dot(probs[:n], teacher.sub_(student)) - teacher_norm
        # The teacher's rows are free again: they take the student's probabilities.
        values += _softmax_and_logsumexp(student, peaks[:n], at[:n], teacher)
        return values, teacher.sub_(probs[:n])
    teacher_norm = _softmax_and_logsumexp(teacher, peaks[n:], at[n:], probs[:n])
    student_norm = _softmax_and_logsumexp(student, peaks[:n], at[:n], probs[:n])
    gap = torch.sub(student, teacher, out=teacher)
    expected_gap = _row_dot(probs[:n], gap)
    values = expected_gap - student_norm + teacher_norm
    return values, gap.sub_(expected_gap.unsqueeze(1)).mul_(probs[:n])


def _autograd_chunk(
    student_rows: Tensor,
    teacher_rows: Tensor,
    student_head: Tensor,
    teacher_head: Tensor,
    clip: Tensor,
    divergence: DivergenceFn,
) -> tuple[Tensor, Tensor]:
    """Clipped values ``[n]`` of one chunk and their gradient wrt the student logits, from autograd (any divergence)."""
    with torch.no_grad():
        student_logits = F.linear(student_rows, student_head)
        teacher_logits = F.linear(teacher_rows, teacher_head)
    with torch.enable_grad():
        student_logits.requires_grad_(True)
        values = torch.clamp(values_with_finite_gradient(divergence, student_logits, teacher_logits), max=clip)
        (grad,) = torch.autograd.grad(values.sum(), student_logits)
    return values.detach(), grad


def _accumulate(
    grad: Tensor,
    row_scale: Tensor,
    rows: Tensor,
    head: Tensor,
    chunk: slice,
    rows_grad: Tensor | None,
    head_grad: Tensor | None,
    spare: Tensor | None,
) -> None:
    """Turns one chunk's logit gradient ``[n, V]`` (rows scaled by ``row_scale`` ``[n]``) into
    ``rows_grad[chunk]`` ``[n, H]`` and adds its share to ``head_grad`` ``[V, H]``.

    The scale is applied to the small ``[n, H]`` side, and rows with scale 0
    (clipped tokens: no gradient) are left out of the GEMMs, gathered into
    ``spare`` (a free ``[>= n, V]`` workspace) when there is one.
    """
    kept = row_scale.nonzero().squeeze(1)
    if spare is not None and kept.numel() < row_scale.numel():
        grad = torch.index_select(grad, 0, kept, out=spare[: kept.numel()])
        rows, row_scale = rows.index_select(0, kept), row_scale.index_select(0, kept)
        targets = kept + chunk.start
    else:
        targets = None
    grad = grad.to(rows.dtype)
    scale = row_scale.to(rows.dtype).unsqueeze(1)
    if rows_grad is not None and grad.shape[0]:
        if targets is None:
            torch.mm(grad, head, out=rows_grad[chunk]).mul_(scale)
        else:
            rows_grad.index_copy_(0, targets, (grad @ head).mul_(scale))
    if head_grad is not None and grad.shape[0]:
        head_grad.addmm_(grad.T, rows * scale)


# One chunk's work: (chunk, its student rows [n, H]) -> (clipped values [n], their gradient wrt the
# chunk's student logits [n, V] before row scaling, the row scale [n], a free [>= n, V] workspace or None).
ChunkStep = Callable[[slice, Tensor], tuple[Tensor, Tensor, Tensor, Tensor | None]]


class _ChunkedDivergence(torch.autograd.Function):
    """Sum of clipped divergences over ``[N, H]`` rows, chunk by chunk, the gradient computed in forward.

    Each chunk is projected to ``[chunk, V]`` logits once (by ``step``); its
    values and the gradient wrt its logits are computed there and turned into
    gradients wrt the student rows ``[N, H]`` (and head ``[V, H]`` if it is
    trained) before the next chunk. Backward only scales those: no logits are
    saved or recomputed.
    """

    @staticmethod
    def forward(ctx, student_rows, student_head, step, dtype, chunk_size, needs):
        rows_grad_needed, head_grad_needed = needs
        total = student_rows.new_zeros((), dtype=dtype)
        rows_grad = torch.zeros_like(student_rows) if rows_grad_needed else None
        head_grad = torch.zeros_like(student_head) if head_grad_needed else None
        for start in range(0, student_rows.shape[0], chunk_size):
            chunk = slice(start, start + chunk_size)
            values, grad, row_scale, spare = step(chunk, student_rows[chunk])
            total += values.sum()
            _accumulate(grad, row_scale, student_rows[chunk], student_head, chunk, rows_grad, head_grad, spare)
            del grad
        ctx.save_for_backward(rows_grad, head_grad)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        rows_grad, head_grad = ctx.saved_tensors
        return (
            rows_grad * grad_total.to(rows_grad.dtype) if rows_grad is not None else None,
            head_grad * grad_total.to(head_grad.dtype) if head_grad is not None else None,
            None,
            None,
            None,
            None,
        )


def _run(student_rows: Tensor, student_head: Tensor, step: ChunkStep, dtype: torch.dtype, chunk_size: int) -> Tensor:
    grad_enabled = torch.is_grad_enabled()
    needs = (grad_enabled and student_rows.requires_grad, grad_enabled and student_head.requires_grad)
    return _ChunkedDivergence.apply(student_rows, student_head, step, dtype, chunk_size, needs)


def chunked_divergence_sum(
    student_rows: Tensor,
    student_head: Tensor,
    teacher_rows: Tensor,
    teacher_head: Tensor,
    clip: Tensor,
    divergence: DivergenceFn,
    chunk_size: int,
) -> Tensor:
    """Sum over rows of ``min(divergence(student_rows @ student_head.T, teacher_rows @ teacher_head.T), clip)``.

    Differentiable wrt ``student_rows`` ``[N, H]`` and ``student_head``
    ``[V, H]`` (when they require grad; the teacher side is a constant), with
    torch.clamp's gradient rule for the clip.

    Args:
        student_rows: ``[N, H]``.
        student_head: ``[V, H]``.
        teacher_rows: ``[N, H]``.
        teacher_head: ``[V, H]``; may be the student's head (one GEMM then serves both).
        clip: ``[N]`` per-row clips in the loss dtype (float32 or wider; ``inf`` = none).
        divergence: ``f(student_logits, teacher_logits) -> [n]`` per row. A `Divergence` that is a
            forward or reverse KL gets its closed-form gradient; anything else, autograd per chunk.
        chunk_size: rows per chunk.

    Returns:
        Scalar in ``clip``'s dtype.
    """
    teacher_head = teacher_head.detach()
    kind = divergence.kl_direction if isinstance(divergence, Divergence) else None
    closed = (kind, divergence.temperature) if kind is not None else None
    width, vocab, dtype = min(chunk_size, student_rows.shape[0]), student_head.shape[0], clip.dtype
    if closed is not None and width:
        logits = student_rows.new_empty((2 * width, vocab), dtype=dtype)
        probs = student_rows.new_empty((width, vocab), dtype=dtype)
        if teacher_head.data_ptr() == student_head.data_ptr() and teacher_head.stride() == student_head.stride():
            teacher_head = student_head

    def step(chunk: slice, rows: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        args = (rows, teacher_rows[chunk], student_head, teacher_head)
        if closed is not None:
            values, grad = _kl_chunk(*args, *closed, logits, probs)
            # Non-finite logits fall back to autograd, which has the naive path's 0 * inf conventions.
            if bool(torch.isfinite(values).all()):
                # torch.clamp's rule: a token at or below its clip keeps its gradient, one above gets none.
                row_scale = torch.where(values <= clip[chunk], 1.0 / closed[1], 0.0).to(dtype)
                return torch.minimum(values, clip[chunk]), grad, row_scale, probs
        values, grad = _autograd_chunk(*args, clip[chunk], divergence)
        return values, grad, torch.ones_like(values), None

    return _run(student_rows, student_head, step, dtype, chunk_size)


def chunked_top_k_divergence_sum(
    student_rows: Tensor,
    student_head: Tensor,
    teacher_coarse: Tensor,
    teacher_ids: Tensor,
    clip: Tensor,
    coarse_divergence: DivergenceFn,
    coarsen: Callable[[Tensor, Tensor], Tensor],
    chunk_size: int,
) -> Tensor:
    """Sum over rows of ``min(coarse_divergence(coarsen(student_rows @ student_head.T, teacher_ids),
    teacher_coarse), clip)``: the divergence against a teacher kept as its top-k tokens and tail mass.

    Args:
        student_rows: ``[N, H]``.
        student_head: ``[V, H]``.
        teacher_coarse: ``[N, k + 1]`` the teacher's log-probabilities of its top-k tokens and of the rest.
        teacher_ids: ``[N, k]`` those tokens.
        clip: ``[N]`` per-row clips in the loss dtype (``inf`` = none).
        coarse_divergence: ``f(student [n, k + 1], teacher [n, k + 1]) -> [n]`` on log-probabilities.
        coarsen: ``f(student_logits [n, V], ids [n, k]) -> [n, k + 1]`` the student's log-probabilities
            of the same bins (differentiable).
        chunk_size: rows per chunk.

    Returns:
        Scalar in ``clip``'s dtype; differentiable wrt ``student_rows`` and ``student_head`` as in
        `chunked_divergence_sum`, with gradients from autograd on each chunk.
    """

    def step(chunk: slice, rows: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        with torch.no_grad():
            logits = F.linear(rows, student_head)
        with torch.enable_grad():
            logits.requires_grad_(True)
            ids = teacher_ids[chunk]
            values = values_with_finite_gradient(
                lambda student, teacher: coarse_divergence(coarsen(student, ids), teacher),
                logits,
                teacher_coarse[chunk],
            )
            values = torch.clamp(values, max=clip[chunk])
            (grad,) = torch.autograd.grad(values.sum(), logits)
        return values.detach(), grad, torch.ones_like(values), None

    return _run(student_rows, student_head, step, clip.dtype, chunk_size)
