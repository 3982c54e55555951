"""Random logits and hidden-state cases shared by the tests of vigos.method's losses (plain, chunked, top-k)."""

from __future__ import annotations

import math

import torch

N_TOKENS, HIDDEN, VOCAB = 7, 5, 11


def random_logits(n: int, v: int, dtype: torch.dtype = torch.float64, seed: int = 0, scale: float = 3.0):
    """Student and teacher logits [n, v], normal with standard deviation ``scale``."""
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(n, v, generator=generator, dtype=dtype) * scale
    teacher = torch.randn(n, v, generator=generator, dtype=dtype) * scale
    return student, teacher


def hidden_case(dtype: torch.dtype, seed: int = 0):
    """Student and teacher hidden states [N_TOKENS, HIDDEN] and output heads [VOCAB, HIDDEN]; the student's
    hidden states and head require grad."""
    generator = torch.Generator().manual_seed(seed)
    student_hidden = torch.randn(N_TOKENS, HIDDEN, generator=generator, dtype=dtype).requires_grad_(True)
    teacher_hidden = torch.randn(N_TOKENS, HIDDEN, generator=generator, dtype=dtype)
    student_head = (torch.randn(VOCAB, HIDDEN, generator=generator, dtype=dtype) * 0.7).requires_grad_(True)
    teacher_head = torch.randn(VOCAB, HIDDEN, generator=generator, dtype=dtype) * 0.7
    return student_hidden, teacher_hidden, student_head, teacher_head


MASK = torch.tensor([True, False, True, True, True, False, True])
PER_TOKEN_CLIP = torch.tensor([0.3, 1.0, math.inf, 0.05, 2.0, 0.01, math.inf])


def clip_for(kind: str, values: torch.Tensor) -> torch.Tensor | float | None:
    """A clip that bounds some supervised tokens and leaves others free, for these values."""
    values = values.detach()
    if kind == "per_token":
        # Supervised tokens 0 and 3 are clipped, 4 is below its clip, 2 and 6 have none.
        factors = torch.tensor([0.5, 2.0, math.inf, 0.5, 2.0, 0.5, math.inf], dtype=values.dtype)
        return values * factors
    if kind == "scalar":
        # Halfway between two supervised values, so no token sits on the clip.
        ordered = values[MASK].sort().values
        return ((ordered[1] + ordered[2]) / 2).item()
    return None


def assert_same_term(got: torch.Tensor, expected: torch.Tensor, inputs: tuple, rtol: float, atol: float) -> None:
    """``got`` equals ``expected`` in value and in its (non-zero) gradient wrt each of ``inputs``."""
    torch.testing.assert_close(got, expected, rtol=rtol, atol=atol)
    got_grads = torch.autograd.grad(got, inputs, retain_graph=True)
    expected_grads = torch.autograd.grad(expected, inputs, retain_graph=True)
    for got_grad, expected_grad in zip(got_grads, expected_grads, strict=True):
        assert expected_grad.abs().max() > 0
        torch.testing.assert_close(got_grad, expected_grad, rtol=rtol, atol=atol)
