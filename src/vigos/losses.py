"""Distillation divergences, per-token clipping and masked global means.

Everything here is a pure function of tensors: no models, no prompts. The
building blocks compose into one loss term of METHOD.md section 3:

    values = divergence(student_logits, teacher_logits)    # [N] per token
    values = clip_token_values(values, token_loss_clip)    # [N]
    term   = aggregate(values, span_mask, global_count)    # scalar

`divergence_from_logits` is exactly that composition. `divergence_from_hidden`
computes the same number from final hidden states and output projections,
chunk by chunk over tokens, so that only ``[chunk, V]`` logits are alive at any
moment: each chunk's gradient is computed as soon as its logits are (in the
style of fused linear + loss kernels), so nothing vocabulary-sized is saved
for backward and no logits are recomputed.

Conventions:

- Logits are ``[N, V]`` (any leading shape ``[..., V]`` works) and every
  divergence returns one value per token, summed over the vocabulary.
- The student is always the first argument and the teacher the second.
- Logits are divided by ``temperature`` before the softmax; no ``T**2``
  rescaling is applied.
- Divergences are computed in at least float32: half-precision logits are
  upcast, float64 logits stay float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from .fused_loss import chunked_divergence_sum, chunked_top_k_divergence_sum, values_with_finite_gradient

Divergence = Callable[[Tensor, Tensor], Tensor]

__all__ = [
    "DIVERGENCES",
    "Divergence",
    "TopKTeacher",
    "aggregate",
    "clip_token_values",
    "coarse_log_probs",
    "divergence_from_hidden",
    "divergence_from_logits",
    "divergence_from_top_k",
    "forward_kl",
    "generalized_jsd",
    "get_divergence",
    "reverse_kl",
    "top_k_teacher",
]


def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def _check_beta(beta: float) -> None:
    if not (isinstance(beta, (int, float)) and 0.0 <= beta <= 1.0):
        raise ValueError(f"beta must be a number in [0, 1] (0 = forward KL, 1 = reverse KL), got {beta!r}")


def _log_probs(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Tempered log-softmax of both sides, in float32 or wider."""
    _check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student_logits and teacher_logits must have the same shape [N, V], got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    student = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)
    return student, teacher


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) = sum_v p_v (log p_v - log q_v) over the last dim.

    Terms with p_v = 0 are exactly 0 (the 0 log 0 = 0 convention), also when
    log p_v = -inf. The log-ratio is masked *before* the product so that the
    backward pass never multiplies a zero gradient by an infinite log-ratio,
    which would give NaN.
    """
    p = log_p.exp()
    log_ratio = torch.where(p > 0, log_p - log_q, 0.0)
    return (p * log_ratio).sum(dim=-1)


def forward_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Forward KL(teacher || student) per token, the mass-covering direction.

    Args:
        student_logits: ``[N, V]`` student logits (may require grad).
        teacher_logits: ``[N, V]`` teacher logits.
        temperature: both sides are divided by it before the softmax.

    Returns:
        ``[N]`` float32 (float64 for float64 input) values ``>= 0``, summed
        over the vocabulary. A vocabulary entry the teacher gives probability 0
        (logit ``-inf``) contributes exactly 0.
    """
    student, teacher = _log_probs(student_logits, teacher_logits, temperature)
    return _kl(teacher, student)


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Reverse KL(student || teacher) per token, the mode-seeking direction.

    Shapes and dtype as in `forward_kl`. An entry the student gives
    probability 0 contributes exactly 0; an entry the student gives positive
    mass and the teacher probability 0 makes the value ``+inf`` (the true KL),
    which `clip_token_values` can bound.
    """
    student, teacher = _log_probs(student_logits, teacher_logits, temperature)
    return _kl(student, teacher)


def generalized_jsd(
    student_logits: Tensor, teacher_logits: Tensor, beta: float = 0.5, temperature: float = 1.0
) -> Tensor:
    """Generalized Jensen-Shannon divergence per token (the GKD / TRL convention).

    With p_T the teacher and p_S the student distribution, for 0 < beta < 1::

        M    = beta * p_T + (1 - beta) * p_S
        JSD  = beta * KL(p_T || M) + (1 - beta) * KL(p_S || M)

    This is Eq. (1) of the GKD paper (arXiv 2306.13649) with P = teacher and
    Q = student, and what TRL's ``generalized_jsd_loss`` computes. It is always
    finite, because M > 0 wherever p_T or p_S is. Swapping the roles is the
    same as replacing beta by 1 - beta; beta = 0.5 is the symmetric JSD.

    The endpoints are special-cased to be exact: beta = 0 returns
    `forward_kl` (teacher || student) and beta = 1 returns `reverse_kl`
    (student || teacher). The formula itself tends to 0 at both ends
    (JSD ~ beta * KL(p_T || p_S) as beta -> 0 and ~ (1 - beta) * KL(p_S || p_T)
    as beta -> 1), so the function of beta is NOT continuous at 0 and 1: the
    endpoints are the limits of JSD / beta and JSD / (1 - beta).

    Args:
        student_logits: ``[N, V]`` student logits (may require grad).
        teacher_logits: ``[N, V]`` teacher logits.
        beta: interpolation weight in [0, 1].
        temperature: both sides are divided by it before the softmax.

    Returns:
        ``[N]`` values ``>= 0``, summed over the vocabulary.
    """
    _check_beta(beta)
    if beta == 0.0:
        return forward_kl(student_logits, teacher_logits, temperature)
    if beta == 1.0:
        return reverse_kl(student_logits, teacher_logits, temperature)
    student, teacher = _log_probs(student_logits, teacher_logits, temperature)
    log_mixture = torch.logaddexp(teacher + math.log(beta), student + math.log1p(-beta))
    return beta * _kl(teacher, log_mixture) + (1.0 - beta) * _kl(student, log_mixture)


DIVERGENCES: dict[str, Callable[..., Tensor]] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": generalized_jsd,
}


def get_divergence(name: str, *, beta: float = 0.5, temperature: float = 1.0) -> Divergence:
    """The divergence called ``name`` with its options bound.

    Args:
        name: one of ``DIVERGENCES`` ("forward_kl", "reverse_kl", "jsd").
        beta: interpolation weight of "jsd"; the KL divergences ignore it.
        temperature: distillation temperature, > 0.

    Returns:
        ``f(student_logits [N, V], teacher_logits [N, V]) -> [N]``.

    Raises:
        ValueError: unknown name (the message lists the valid ones), beta
            outside [0, 1], or temperature not > 0.
    """
    if name not in DIVERGENCES:
        valid = ", ".join(repr(known) for known in DIVERGENCES)
        raise ValueError(f"unknown divergence {name!r}; valid names are: {valid}")
    _check_temperature(temperature)
    _check_beta(beta)
    if name == "jsd":
        return partial(generalized_jsd, beta=beta, temperature=temperature)
    return partial(DIVERGENCES[name], temperature=temperature)


def _check_scalar_clip(clip: float) -> float:
    if isinstance(clip, bool) or not (isinstance(clip, (int, float)) and clip >= 0):
        raise ValueError(f"token clip must be a number >= 0 (or None for no clip), got {clip!r}")
    return float(clip)


def clip_token_values(values: Tensor, clip: Tensor | float | None) -> Tensor:
    """Clip per-token divergence values from above: ``min(value, clip)``.

    Args:
        values: ``[N]`` per-token values (divergences, so ``>= 0``).
        clip: None (no clip), a scalar ``>= 0`` for every token, or an ``[N]``
            tensor of per-token clips where ``inf`` means "no clip" (boundary
            tokens get their own clip this way).

    Returns:
        ``[N]`` clipped values. This is a clamp: a token whose value exceeds
        its clip contributes the constant clip and therefore NO gradient; a
        token at or below its clip keeps its full gradient.
    """
    if clip is None:
        return values
    if isinstance(clip, Tensor):
        if clip.dim() != 0 and clip.shape != values.shape:
            raise ValueError(
                f"a per-token clip must have the shape of the values {tuple(values.shape)}, "
                f"got {tuple(clip.shape)}"
            )
        return torch.clamp(values, max=clip.detach().to(device=values.device, dtype=values.dtype))
    return torch.clamp(values, max=_check_scalar_clip(clip))


def _masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    """Sum of ``values`` where ``mask`` holds; exactly 0 when nothing is selected.

    ``torch.where`` rather than ``values * mask``: NaN or inf in masked-out
    positions (padding, invalid rollouts) must neither leak into the value
    (NaN * 0 = NaN) nor into the gradient, and the graph stays connected to
    ``values`` so backward works with an empty selection.
    """
    return torch.where(mask, values, 0.0).sum()


def _check_mask(mask: Tensor, shape: torch.Size, what: str) -> Tensor:
    if mask.shape != shape:
        raise ValueError(f"mask must have shape {list(shape)} matching {what}, got {list(mask.shape)}")
    return mask.bool()


def _token_count(mask: Tensor, global_count: Tensor | float | int | None, like: Tensor) -> Tensor | float:
    """The denominator of a masked mean: global_count (default: mask.sum()), at least 1."""
    if global_count is None:
        return mask.sum().to(device=like.device, dtype=like.dtype).clamp(min=1)
    if isinstance(global_count, Tensor):
        return global_count.detach().to(device=like.device, dtype=like.dtype).clamp(min=1)
    if not (isinstance(global_count, (int, float)) and global_count >= 0):
        raise ValueError(f"global_count must be a token count >= 0, got {global_count!r}")
    return max(float(global_count), 1.0)


def aggregate(values: Tensor, mask: Tensor, global_count: Tensor | float | int | None = None) -> Tensor:
    """Masked mean over the global batch: ``sum(values[mask]) / max(global_count, 1)``.

    Args:
        values: ``[N]`` per-token values.
        mask: ``[N]`` bool (or 0/1) tokens that this term supervises.
        global_count: number of supervised tokens over the whole global batch
            (all processes; the caller gathers it). Default: ``mask.sum()``,
            the local count.

    Returns:
        Scalar. Exactly 0.0 when no token is masked in, with a gradient of
        zeros, even when masked-out values are NaN or inf.
    """
    mask = _check_mask(mask, values.shape, "the values")
    return _masked_sum(values, mask) / _token_count(mask, global_count, values)


def divergence_from_logits(
    student_logits: Tensor,
    teacher_logits: Tensor,
    divergence: Divergence,
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
    divergence: Divergence,
) -> Tensor:
    """Sum of clipped divergences over all rows at once, through autograd (the unchunked path)."""
    student_logits = F.linear(student_rows, student_head)
    with torch.no_grad():
        teacher_logits = F.linear(teacher_rows, teacher_head)
    return clip_token_values(values_with_finite_gradient(divergence, student_logits, teacher_logits), clip).sum()


def _registered(divergence: Divergence) -> tuple[Callable[..., Tensor], dict] | None:
    """``(function, keywords)`` of a divergence from the registry (as `get_divergence` binds it), else None."""
    func, keywords = divergence, {}
    if isinstance(divergence, partial):
        if divergence.args:
            return None
        func, keywords = divergence.func, dict(divergence.keywords)
    return (func, keywords) if func in DIVERGENCES.values() else None


def _closed_form(divergence: Divergence) -> tuple[str, float] | None:
    """``(kind, temperature)`` when ``divergence`` is a KL whose logit gradient has a closed form.

    Recognizes `forward_kl` and `reverse_kl` as they come from
    `get_divergence` (also the JSD endpoints beta = 0 and 1); any other
    callable gets its per-chunk gradient from autograd instead.
    """
    registered = _registered(divergence)
    if registered is None:
        return None
    func, keywords = registered
    if func is generalized_jsd and keywords.get("beta") in (0.0, 1.0):
        func = forward_kl if keywords.pop("beta") == 0.0 else reverse_kl
    if func in (forward_kl, reverse_kl) and set(keywords) <= {"temperature"}:
        return func.__name__, float(keywords.get("temperature", 1.0))
    return None


def divergence_from_hidden(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    student_head: Tensor,
    teacher_head: Tensor,
    divergence: Divergence,
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
        teacher_hidden: ``[N, H]`` teacher final hidden states (no grad).
        student_head: ``[V, H]`` output projection weight of the student.
        teacher_head: ``[V, H]`` output projection weight of the teacher.
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
    if student_hidden.dim() != 2 or teacher_hidden.shape != student_hidden.shape:
        raise ValueError(
            "student_hidden and teacher_hidden must both be [N, H] with the same shape, got "
            f"{tuple(student_hidden.shape)} and {tuple(teacher_hidden.shape)}"
        )
    hidden_size = student_hidden.shape[1]
    if student_head.dim() != 2 or student_head.shape[1] != hidden_size or teacher_head.shape != student_head.shape:
        raise ValueError(
            f"student_head and teacher_head must both be [V, H] with H = {hidden_size}, got "
            f"{tuple(student_head.shape)} and {tuple(teacher_head.shape)}"
        )
    rows, student_rows, row_clips = _supervised_rows(student_hidden, mask, clip, chunk_size)
    teacher_rows = teacher_hidden.detach().index_select(0, rows)
    teacher_head = teacher_head.detach()
    if chunk_size is None:
        total = _plain_term(student_rows, teacher_rows, student_head, teacher_head, row_clips, divergence)
    else:
        total = chunked_divergence_sum(
            student_rows, student_head, teacher_rows, teacher_head, row_clips, divergence, _closed_form(divergence), chunk_size
        )
    return total / _token_count(mask, global_count, total)


def _supervised_rows(
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


# --- Teachers kept as their top-k tokens and tail mass -------------------------------------------


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

    def index_select(self, rows: Tensor) -> "TopKTeacher":
        """The teacher at the given rows only."""
        return TopKTeacher(self.log_probs.index_select(0, rows), self.ids.index_select(0, rows), self.temperature)


def coarse_log_probs(logits: Tensor, ids: Tensor, temperature: float = 1.0) -> Tensor:
    """Tempered log-probabilities ``[N, k + 1]`` of the tokens ``ids`` ``[N, k]`` and of all others
    (the last column; left out when k is the vocabulary size), from ``logits`` ``[N, V]``, in float32 or
    wider; differentiable wrt ``logits``."""
    _check_temperature(temperature)
    if ids.dim() != 2 or ids.shape[0] != logits.shape[0] or not 1 <= ids.shape[1] <= logits.shape[-1]:
        raise ValueError(f"ids must be [N, k] with N = {logits.shape[0]} and 1 <= k <= V = {logits.shape[-1]}, "
                         f"got {tuple(ids.shape)}")
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


def _coarse_divergence(divergence: Divergence, temperature: float) -> Divergence:
    """``divergence`` at temperature 1, for log-probabilities already tempered at ``temperature``."""
    registered = _registered(divergence)
    if registered is None:
        valid = ", ".join(repr(known) for known in DIVERGENCES)
        raise ValueError(f"a top-k teacher needs a divergence from get_divergence ({valid}), got {divergence!r}")
    func, keywords = registered
    if float(keywords.get("temperature", 1.0)) != temperature:
        raise ValueError(
            f"the divergence's temperature {keywords.get('temperature', 1.0)} differs from the top-k teacher's "
            f"{temperature}; build both with the same distillation temperature"
        )
    return partial(func, **{**keywords, "temperature": 1.0})


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
    coarse_divergence = _coarse_divergence(divergence, teacher.temperature)
    rows, student_rows, row_clips = _supervised_rows(student_hidden, mask, clip, chunk_size)
    teacher = teacher.index_select(rows)
    coarsen = partial(coarse_log_probs, temperature=teacher.temperature)
    if chunk_size is None:
        values = values_with_finite_gradient(
            lambda logits, coarse: coarse_divergence(coarsen(logits, teacher.ids), coarse),
            F.linear(student_rows, student_head), teacher.log_probs,
        )
        total = torch.clamp(values, max=row_clips).sum()
    else:
        total = chunked_top_k_divergence_sum(
            student_rows, student_head, teacher.log_probs, teacher.ids, row_clips, coarse_divergence, coarsen, chunk_size
        )
    return total / _token_count(mask, global_count, total)
