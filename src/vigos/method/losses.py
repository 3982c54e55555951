"""Distillation divergences, sampled-token losses, per-token clipping and masked global means.

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
for backward and no logits are recomputed. (Both live in
`vigos.method.state_losses`.)

A sampled-token loss (`sampled_token_kl`) takes the place of the divergence where
a teacher gives only its log-probability of each sampled token.

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
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

DivergenceFn = Callable[[Tensor, Tensor], Tensor]
"""Any ``f(student_logits [N, V], teacher_logits [N, V]) -> [N]``; a `Divergence` is one."""

__all__ = [
    "DIVERGENCES",
    "Divergence",
    "DivergenceFn",
    "LOSS_NAMES",
    "SAMPLED_TOKEN_LOSSES",
    "SampledTokenLoss",
    "aggregate",
    "clip_token_values",
    "forward_kl",
    "generalized_jsd",
    "get_divergence",
    "get_loss",
    "policy_gradient",
    "reverse_kl",
    "sampled_token_kl",
    "values_with_finite_gradient",
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


@dataclass(frozen=True)
class Divergence:
    """A registered divergence and its options, as one value passed down to the losses.

    Calling it gives ``[N]`` per-token values from ``student_logits`` and
    ``teacher_logits`` ``[N, V]``. Being a plain value (not a closure), the
    chunked losses can read which divergence it is: `kl_direction` selects
    the closed-form KL gradient, and `at_temperature` re-binds it for
    log-probabilities that are already tempered (a top-k teacher's).

    Args:
        name: one of ``DIVERGENCES`` ("forward_kl", "reverse_kl", "jsd").
        beta: interpolation weight of "jsd" in [0, 1]; the KLs ignore it.
        temperature: distillation temperature, > 0.

    Raises:
        ValueError: unknown name (the message lists the valid ones), beta
            outside [0, 1], or temperature not > 0.
    """

    name: str
    beta: float = 0.5
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in DIVERGENCES:
            valid = ", ".join(repr(known) for known in DIVERGENCES)
            raise ValueError(f"unknown divergence {self.name!r}; valid names are: {valid}")
        _check_temperature(self.temperature)
        _check_beta(self.beta)

    def __call__(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        if self.name == "jsd":
            return generalized_jsd(student_logits, teacher_logits, beta=self.beta, temperature=self.temperature)
        return DIVERGENCES[self.name](student_logits, teacher_logits, temperature=self.temperature)

    @property
    def kl_direction(self) -> str | None:
        """ "forward_kl" or "reverse_kl" when this is that KL (the JSD at beta 0 or 1 included), else None."""
        if self.name != "jsd":
            return self.name
        return {0.0: "forward_kl", 1.0: "reverse_kl"}.get(float(self.beta))

    def at_temperature(self, temperature: float) -> Divergence:
        """The same divergence at another temperature."""
        return replace(self, temperature=temperature)


SAMPLED_TOKEN_ESTIMATORS = ("k1", "k3")


def sampled_token_kl(student_log_probs: Tensor, teacher_log_probs: Tensor, estimator: str = "k1") -> Tensor:
    """The sampled-token loss per token: reverse KL(student || teacher) estimated at the student's own
    sampled token, with the policy gradient as its gradient.

    With ``s = log p_S(y)`` and ``t = log p_T(y)`` at the sampled token ``y`` (the student's rollout
    drew it, so ``y ~ p_S``), the estimate is ``k1 = s - t`` or ``k3 = r - 1 - log r`` with
    ``r = exp(t - s)`` (never negative, lower variance). Its gradient is that of ``-A * s`` with the
    detached advantage ``A = -k``: the student's log-probability of its token weighted by how much
    more (``A > 0``) or less the teacher likes it. With ``k1``, ``A = t - s``, the reverse-KL
    gradient OPSD and Tinker use. The value is the estimate itself (the surrogate adds
    ``A * (s - s.detach())``, which is 0), so a logged term reads as a KL.

    Args:
        student_log_probs: ``[N]`` the student's log-probability of each sampled token (may require grad).
        teacher_log_probs: ``[N]`` the teacher's log-probability of the same tokens (no gradient taken).
        estimator: "k1" or "k3".

    Returns:
        ``[N]`` per-token values in at least float32.
    """
    if estimator not in SAMPLED_TOKEN_ESTIMATORS:
        raise ValueError(f"estimator must be one of {SAMPLED_TOKEN_ESTIMATORS}, got {estimator!r}")
    if student_log_probs.shape != teacher_log_probs.shape:
        raise ValueError(
            "student_log_probs and teacher_log_probs must have the same shape [N], got "
            f"{tuple(student_log_probs.shape)} and {tuple(teacher_log_probs.shape)}"
        )
    dtype = torch.promote_types(student_log_probs.dtype, torch.float32)
    student = student_log_probs.to(dtype)
    log_ratio = teacher_log_probs.detach().to(dtype) - student.detach()
    estimate = -log_ratio if estimator == "k1" else torch.expm1(log_ratio) - log_ratio
    return estimate + estimate * (student - student.detach())


def policy_gradient(student_log_probs: Tensor, advantages: Tensor) -> Tensor:
    """The outcome-reward (REINFORCE / GRPO-style, on-policy) loss per token: ``-A * log p_S(y)``.

    Args:
        student_log_probs: ``[N]`` the student's log-probability of each sampled token (may require grad).
        advantages: ``[N]`` each token's advantage, its rollout's reward minus the mean reward of the
            rollouts of the same prompt (detached).

    Returns:
        ``[N]`` values in at least float32; the gradient wrt ``student_log_probs`` is ``-A``.
    """
    if student_log_probs.shape != advantages.shape:
        raise ValueError(
            "student_log_probs and advantages must have the same shape [N], got "
            f"{tuple(student_log_probs.shape)} and {tuple(advantages.shape)}"
        )
    dtype = torch.promote_types(student_log_probs.dtype, torch.float32)
    return -advantages.detach().to(dtype) * student_log_probs.to(dtype)


SAMPLED_TOKEN_LOSSES: dict[str, str] = {"sampled_k1": "k1", "sampled_k3": "k3"}
"""Sampled-token losses by name, each `sampled_token_kl` with its estimator. They need only each side's
log-probability of the sampled token, so any teacher that returns one number per token can teach."""

LOSS_NAMES = (*DIVERGENCES, *SAMPLED_TOKEN_LOSSES)
"""Every name a loss term may use: the divergences over the vocabulary, then the sampled-token losses."""


@dataclass(frozen=True)
class SampledTokenLoss:
    """A registered sampled-token loss and its temperature, as one value passed down to the losses.

    Calling it gives ``[N]`` per-token values (`sampled_token_kl`) from the student's and the teacher's
    log-probabilities ``[N]`` of the sampled tokens, already tempered by ``temperature``.
    """

    name: str
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in SAMPLED_TOKEN_LOSSES:
            valid = ", ".join(repr(known) for known in LOSS_NAMES)
            raise ValueError(f"unknown loss {self.name!r}; valid names are: {valid}")
        _check_temperature(self.temperature)

    def __call__(self, student_log_probs: Tensor, teacher_log_probs: Tensor) -> Tensor:
        return sampled_token_kl(student_log_probs, teacher_log_probs, SAMPLED_TOKEN_LOSSES[self.name])


def get_loss(name: str, *, beta: float = 0.5, temperature: float = 1.0) -> Divergence | SampledTokenLoss:
    """The loss called ``name`` (one of ``LOSS_NAMES``) with its options bound; the error lists the names."""
    if name in SAMPLED_TOKEN_LOSSES:
        return SampledTokenLoss(name, temperature)
    if name not in DIVERGENCES:
        valid = ", ".join(repr(known) for known in LOSS_NAMES)
        raise ValueError(f"unknown loss {name!r}; valid names are: {valid}")
    return Divergence(name, beta, temperature)


def get_divergence(name: str, *, beta: float = 0.5, temperature: float = 1.0) -> Divergence:
    """The divergence called ``name`` with its options bound: ``Divergence(name, beta, temperature)``."""
    return Divergence(name, beta, temperature)


def values_with_finite_gradient(divergence: DivergenceFn, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """``divergence(student_logits, teacher_logits)`` [N], with every token whose value is +inf (the teacher
    gives probability 0 where the student has mass) cut from the autograd graph.

    Such a token's value stays +inf (a clip bounds it to a constant), but its backward would multiply a
    zero gradient by an infinite log-ratio and spread NaN over every parameter; detached, it contributes
    exactly no gradient, as the clamp says it should. The common all-finite case costs nothing extra.
    """
    values = divergence(student_logits, teacher_logits)
    if not values.requires_grad:
        return values
    infinite = torch.isposinf(values.detach())
    if not bool(infinite.any()):
        return values
    return divergence(torch.where(infinite[:, None], student_logits.detach(), student_logits), teacher_logits)


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
                f"a per-token clip must have the shape of the values {tuple(values.shape)}, got {tuple(clip.shape)}"
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


# --- Teachers kept as their top-k tokens and tail mass -------------------------------------------
