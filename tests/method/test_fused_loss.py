"""Tests for vigos.method.fused_loss: the chunked loss (reached through ``divergence_from_hidden`` and
``divergence_from_top_k`` with a ``chunk_size``) against the plain one on full logits, in value and gradient;
non-finite teacher logits (``values_with_finite_gradient``), bfloat16, no-grad, and memory."""

from __future__ import annotations

import math

import pytest
import torch

from loss_cases import MASK, N_TOKENS, PER_TOKEN_CLIP, VOCAB, clip_for, hidden_case
from vigos.method.losses import clip_token_values, forward_kl, get_divergence
from vigos.method.state_losses import (
    coarse_log_probs,
    divergence_from_hidden,
    divergence_from_logits,
    divergence_from_top_k,
    top_k_teacher,
)


@pytest.mark.parametrize("chunk_size", [1, 3, N_TOKENS, N_TOKENS + 4, None])
@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-6), (torch.float32, 1e-5)])
@pytest.mark.parametrize("clip_kind", ["per_token", "scalar", "none"])
def test_hidden_path_equals_logits_path(chunk_size, name, dtype, tol, clip_kind) -> None:
    student_hidden, teacher_hidden, student_head, teacher_head = hidden_case(dtype)
    divergence = get_divergence(name, beta=0.4, temperature=1.3)
    student_logits = student_hidden @ student_head.T
    teacher_logits = teacher_hidden @ teacher_head.T
    values = divergence(student_logits, teacher_logits)
    clip = clip_for(clip_kind, values)
    if clip is not None:
        clipped = clip_token_values(values, clip)[MASK] < values[MASK]
        assert clipped.any() and not clipped.all()

    expected = divergence_from_logits(student_logits, teacher_logits, divergence, MASK, clip, 9)
    expected_grads = torch.autograd.grad(expected, (student_hidden, student_head))
    got = divergence_from_hidden(
        student_hidden, teacher_hidden, student_head, teacher_head, divergence, MASK, clip, 9, chunk_size
    )
    got_grads = torch.autograd.grad(got, (student_hidden, student_head))

    assert expected.item() > 0
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)
    for got_grad, expected_grad in zip(got_grads, expected_grads, strict=True):
        assert expected_grad.abs().max() > 0
        torch.testing.assert_close(got_grad, expected_grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_jsd_endpoints_and_any_callable_give_the_kls_value_and_gradient(beta) -> None:
    """The JSD at beta 0 or 1 takes the KL's closed-form chunk; a plain callable (no closed form) takes
    autograd per chunk; all three agree with the KL in value and gradient."""
    student_hidden, teacher_hidden, student_head, teacher_head = hidden_case(torch.float64)
    kl = get_divergence("forward_kl" if beta == 0.0 else "reverse_kl", temperature=1.3)
    endpoint = get_divergence("jsd", beta=beta, temperature=1.3)
    assert endpoint.kl_direction == kl.name

    def as_callable(student, teacher):
        return kl(student, teacher)

    results = []
    for divergence in (kl, endpoint, as_callable):
        value = divergence_from_hidden(
            student_hidden, teacher_hidden, student_head, teacher_head, divergence, MASK, PER_TOKEN_CLIP, 9, 3
        )
        results.append((value, torch.autograd.grad(value, (student_hidden, student_head))))
    for value, grads in results[1:]:
        torch.testing.assert_close(value, results[0][0], rtol=1e-6, atol=1e-9)
        for got, expected in zip(grads, results[0][1], strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("chunk_size", [1, 3, None])
def test_hidden_path_with_teacher_sharing_the_student_head(chunk_size) -> None:
    student_hidden, teacher_hidden, head, _ = hidden_case(torch.float64, seed=1)
    divergence = get_divergence("forward_kl")
    # The teacher side is a constant: no gradient flows into the head through it.
    expected = divergence_from_logits(
        student_hidden @ head.T, (teacher_hidden @ head.T).detach(), divergence, MASK, PER_TOKEN_CLIP.double()
    )
    expected_grads = torch.autograd.grad(expected, (student_hidden, head))
    got = divergence_from_hidden(
        student_hidden, teacher_hidden, head, head, divergence, MASK, PER_TOKEN_CLIP.double(), None, chunk_size
    )
    got_grads = torch.autograd.grad(got, (student_hidden, head))
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    for got_grad, expected_grad in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [2, None])
def test_hidden_path_with_empty_mask_is_exact_zero(chunk_size) -> None:
    student_hidden, teacher_hidden, student_head, teacher_head = hidden_case(torch.float32, seed=2)
    teacher_hidden[0] = float("nan")
    loss = divergence_from_hidden(
        student_hidden,
        teacher_hidden,
        student_head,
        teacher_head,
        forward_kl,
        torch.zeros(N_TOKENS, dtype=torch.bool),
        global_count=5,
        chunk_size=chunk_size,
    )
    assert loss.item() == 0.0
    hidden_grad, head_grad = torch.autograd.grad(loss, (student_hidden, student_head))
    assert torch.equal(hidden_grad, torch.zeros_like(hidden_grad))
    assert torch.equal(head_grad, torch.zeros_like(head_grad))


def _largest_saved_tensor(chunk_size: int | None) -> int:
    student_hidden, teacher_hidden, student_head, teacher_head = hidden_case(torch.float32, seed=3)
    sizes: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = divergence_from_hidden(
            student_hidden,
            teacher_hidden,
            student_head,
            teacher_head,
            get_divergence("jsd"),
            torch.ones(N_TOKENS, dtype=torch.bool),
            chunk_size=chunk_size,
        )
        loss.backward()
    return max(sizes)


def test_chunked_path_saves_no_full_logits() -> None:
    full = VOCAB * N_TOKENS
    # The check can see full logits: the plain path saves [N, V] tensors.
    assert _largest_saved_tensor(None) >= full
    for chunk_size in (1, 3):
        assert _largest_saved_tensor(chunk_size) < full


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_chunked_top_k_path_equals_the_plain_one(name, dtype, tol) -> None:
    student_hidden, teacher_hidden, student_head, teacher_head = hidden_case(dtype, seed=3)
    divergence = get_divergence(name, beta=0.4, temperature=0.8)
    teacher = top_k_teacher(teacher_hidden, teacher_head, k=4, temperature=0.8)
    assert teacher.log_probs.shape == (N_TOKENS, 5)
    coarse = coarse_log_probs(student_hidden @ student_head.T, teacher.ids, 0.8)
    clip = clip_for("per_token", get_divergence(name, beta=0.4)(coarse, teacher.log_probs))
    plain = divergence_from_top_k(student_hidden, student_head, teacher, divergence, MASK, clip, 9, None)
    plain_grads = torch.autograd.grad(plain, (student_hidden, student_head))
    for chunk_size in (1, 3, N_TOKENS + 2):
        got = divergence_from_top_k(student_hidden, student_head, teacher, divergence, MASK, clip, 9, chunk_size)
        got_grads = torch.autograd.grad(got, (student_hidden, student_head))
        assert plain.item() > 0
        torch.testing.assert_close(got, plain, rtol=tol, atol=tol)
        for got_grad, plain_grad in zip(got_grads, plain_grads, strict=True):
            assert plain_grad.abs().max() > 0
            torch.testing.assert_close(got_grad, plain_grad, rtol=tol, atol=tol)


def _non_finite_case(kind: str):
    """Teacher logits with a -inf entry (probability 0): KL(t || s) is finite, KL(s || t) infinite."""
    generator = torch.Generator().manual_seed(4)
    student_hidden = torch.randn(6, 4, generator=generator, dtype=torch.float64).requires_grad_(True)
    teacher_hidden = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    teacher_hidden[:, 0] = teacher_hidden[:, 0].abs() + 1.0
    head = torch.randn(9, 4, generator=generator, dtype=torch.float64)
    teacher_head = head.clone()
    teacher_head[2] = torch.tensor([-math.inf, 0.0, 0.0, 0.0], dtype=torch.float64)
    divergence = get_divergence(kind, temperature=1.5)
    return student_hidden, teacher_hidden, head.requires_grad_(True), teacher_head, divergence


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl"])
def test_chunked_loss_matches_naive_when_teacher_logits_are_minus_infinity(kind):
    student_hidden, teacher_hidden, head, teacher_head, divergence = _non_finite_case(kind)
    mask = torch.tensor([True, True, False, True, True, True])
    clip = 0.5
    teacher_logits = teacher_hidden @ teacher_head.T
    assert torch.isinf(teacher_logits[:, 2]).all()
    expected = divergence_from_logits(student_hidden @ head.T, teacher_logits, divergence, mask, clip)
    got = divergence_from_hidden(
        student_hidden, teacher_hidden, head, teacher_head, divergence, mask, clip, chunk_size=2
    )
    assert torch.isfinite(expected)
    torch.testing.assert_close(got, expected)
    if kind == "reverse_kl":
        # Every token is infinite and clipped to 0.5: a constant, so no gradient on either path (not 0 * inf = NaN).
        assert got.item() == pytest.approx(clip)
    expected_grads = torch.autograd.grad(expected, (student_hidden, head))
    got_grads = torch.autograd.grad(got, (student_hidden, head))
    for got_grad, expected_grad in zip(got_grads, expected_grads, strict=True):
        assert torch.isfinite(got_grad).all()
        torch.testing.assert_close(got_grad, expected_grad)
        if kind == "reverse_kl":
            assert not got_grad.any()


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl"])
def test_chunked_loss_in_bfloat16_matches_naive(kind):
    generator = torch.Generator().manual_seed(5)
    student_hidden = torch.randn(12, 16, generator=generator).bfloat16().requires_grad_(True)
    teacher_hidden = (student_hidden.detach().float() + 0.3 * torch.randn(12, 16, generator=generator)).bfloat16()
    head = (torch.randn(40, 16, generator=generator) * 0.5).bfloat16()
    divergence = get_divergence(kind)
    mask = torch.ones(12, dtype=torch.bool)
    expected = divergence_from_logits(student_hidden @ head.T, teacher_hidden @ head.T, divergence, mask)
    (expected_grad,) = torch.autograd.grad(expected, student_hidden)
    got = divergence_from_hidden(student_hidden, teacher_hidden, head, head, divergence, mask, chunk_size=5)
    (got_grad,) = torch.autograd.grad(got, student_hidden)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad.float(), expected_grad.float(), rtol=2e-2, atol=1e-4)


def test_chunked_loss_without_grad_computes_values_only():
    generator = torch.Generator().manual_seed(6)
    student_hidden = torch.randn(7, 8, generator=generator).requires_grad_(True)
    teacher_hidden = torch.randn(7, 8, generator=generator)
    head = torch.randn(30, 8, generator=generator)
    mask = torch.ones(7, dtype=torch.bool)
    divergence = get_divergence("forward_kl")
    with torch.no_grad():
        value = divergence_from_hidden(student_hidden, teacher_hidden, head, head, divergence, mask, chunk_size=3)
    assert not value.requires_grad
    expected = divergence_from_logits(student_hidden @ head.T, teacher_hidden @ head.T, divergence, mask)
    torch.testing.assert_close(value, expected.detach())
