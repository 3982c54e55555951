"""Tests for vigos.method.losses: divergences, clipping and masked global means (the losses built on them are
in test_state_losses.py, their chunked path in test_fused_loss.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from loss_cases import random_logits
from vigos.method.losses import (
    DIVERGENCES,
    Divergence,
    aggregate,
    clip_token_values,
    forward_kl,
    generalized_jsd,
    get_divergence,
    reverse_kl,
)

LN2 = math.log(2.0)


def _hand_logits() -> tuple[torch.Tensor, torch.Tensor]:
    """Two tokens, three words.

    token 0: student logits [0, 2 ln 2, 0] -> p_S = [1, 4, 1] / 6
             teacher logits [2 ln 2, 0, 0] -> p_T = [4, 1, 1] / 6
    token 1: student logits [0, 0, 0]      -> p_S = [1, 1, 1] / 3
             teacher logits [ln 2, 0, 0]   -> p_T = [2, 1, 1] / 4
    """
    student = torch.tensor([[0.0, 2 * LN2, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[2 * LN2, 0.0, 0.0], [LN2, 0.0, 0.0]], dtype=torch.float64)
    return student, teacher


# ---------------------------------------------------------------- hand-computed values


def test_hand_computed_values_at_temperature_one() -> None:
    student, teacher = _hand_logits()
    # KL(T || S) = sum p_T log(p_T / p_S)
    expected_forward = [
        4 / 6 * math.log(4) + 1 / 6 * math.log(1 / 4) + 1 / 6 * math.log(1),
        1 / 2 * math.log((1 / 2) / (1 / 3)) + 2 * (1 / 4) * math.log((1 / 4) / (1 / 3)),
    ]
    # KL(S || T) = sum p_S log(p_S / p_T)
    expected_reverse = [
        1 / 6 * math.log(1 / 4) + 4 / 6 * math.log(4) + 1 / 6 * math.log(1),
        1 / 3 * math.log((1 / 3) / (1 / 2)) + 2 * (1 / 3) * math.log((1 / 3) / (1 / 4)),
    ]
    # beta = 0.5: M = (p_T + p_S) / 2; token 0 M = [5, 5, 2] / 12, token 1 M = [10, 7, 7] / 24
    expected_jsd = [
        0.5 * (4 / 6 * math.log((4 / 6) / (5 / 12)) + 1 / 6 * math.log((1 / 6) / (5 / 12)) + 0.0)
        + 0.5 * (1 / 6 * math.log((1 / 6) / (5 / 12)) + 4 / 6 * math.log((4 / 6) / (5 / 12)) + 0.0),
        0.5 * (1 / 2 * math.log((1 / 2) / (10 / 24)) + 2 * (1 / 4) * math.log((1 / 4) / (7 / 24)))
        + 0.5 * (1 / 3 * math.log((1 / 3) / (10 / 24)) + 2 * (1 / 3) * math.log((1 / 3) / (7 / 24))),
    ]
    assert expected_forward[0] == pytest.approx(LN2)
    torch.testing.assert_close(forward_kl(student, teacher), torch.tensor(expected_forward, dtype=torch.float64))
    torch.testing.assert_close(reverse_kl(student, teacher), torch.tensor(expected_reverse, dtype=torch.float64))
    torch.testing.assert_close(
        generalized_jsd(student, teacher, beta=0.5), torch.tensor(expected_jsd, dtype=torch.float64)
    )


def test_temperature_two_changes_values_as_hand_computed() -> None:
    student, teacher = _hand_logits()
    # Logits / 2: token 0 p_S = [1, 2, 1] / 4, p_T = [2, 1, 1] / 4;
    # token 1 p_S = [1, 1, 1] / 3, p_T = [sqrt 2, 1, 1] / (2 + sqrt 2).
    a = math.sqrt(2) / (2 + math.sqrt(2))
    b = 1 / (2 + math.sqrt(2))
    expected_forward = [
        1 / 2 * math.log((1 / 2) / (1 / 4)) + 1 / 4 * math.log((1 / 4) / (1 / 2)) + 0.0,
        a * math.log(a / (1 / 3)) + 2 * b * math.log(b / (1 / 3)),
    ]
    expected_reverse = [
        1 / 4 * math.log((1 / 4) / (1 / 2)) + 1 / 2 * math.log((1 / 2) / (1 / 4)) + 0.0,
        1 / 3 * math.log((1 / 3) / a) + 2 * (1 / 3) * math.log((1 / 3) / b),
    ]
    assert expected_forward[0] == pytest.approx(0.25 * LN2)
    got_forward = forward_kl(student, teacher, temperature=2.0)
    torch.testing.assert_close(got_forward, torch.tensor(expected_forward, dtype=torch.float64))
    torch.testing.assert_close(
        reverse_kl(student, teacher, temperature=2.0), torch.tensor(expected_reverse, dtype=torch.float64)
    )
    assert not torch.allclose(got_forward, forward_kl(student, teacher))


# ---------------------------------------------------------------- properties of the divergences


@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.0])
def test_kl_matches_torch_kl_div(temperature: float) -> None:
    student, teacher = random_logits(5, 17)
    log_s = F.log_softmax(student / temperature, dim=-1)
    log_t = F.log_softmax(teacher / temperature, dim=-1)
    # F.kl_div(input, target) is KL(target || input).
    expected_forward = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1)
    expected_reverse = F.kl_div(log_t, log_s, reduction="none", log_target=True).sum(-1)
    torch.testing.assert_close(forward_kl(student, teacher, temperature), expected_forward)
    torch.testing.assert_close(reverse_kl(student, teacher, temperature), expected_reverse)


def test_jsd_endpoints_are_exactly_the_kls() -> None:
    student, teacher = random_logits(4, 9)
    assert torch.equal(generalized_jsd(student, teacher, beta=0.0), forward_kl(student, teacher))
    assert torch.equal(generalized_jsd(student, teacher, beta=1.0), reverse_kl(student, teacher))
    assert torch.equal(generalized_jsd(student, teacher, 0.0, 1.5), forward_kl(student, teacher, 1.5))


def test_jsd_is_not_continuous_at_the_endpoints_but_normalized_limits_are_the_kls() -> None:
    student, teacher = random_logits(4, 9)
    eps = 1e-7
    near_zero = generalized_jsd(student, teacher, beta=eps)
    near_one = generalized_jsd(student, teacher, beta=1 - eps)
    # The documented behaviour: JSD itself tends to 0 at both ends ...
    assert (near_zero < 1e-5).all() and (near_one < 1e-5).all()
    assert (forward_kl(student, teacher) > 1e-2).all()
    # ... and JSD / beta, JSD / (1 - beta) tend to the special-cased endpoints.
    torch.testing.assert_close(near_zero / eps, forward_kl(student, teacher), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(near_one / eps, reverse_kl(student, teacher), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_jsd_interior_matches_direct_formula(beta: float) -> None:
    student, teacher = random_logits(6, 11, seed=3)
    p_s = student.softmax(-1)
    p_t = teacher.softmax(-1)
    m = beta * p_t + (1 - beta) * p_s
    expected = beta * (p_t * (p_t / m).log()).sum(-1) + (1 - beta) * (p_s * (p_s / m).log()).sum(-1)
    torch.testing.assert_close(generalized_jsd(student, teacher, beta=beta), expected)
    # Swapping student and teacher is the same as beta -> 1 - beta.
    torch.testing.assert_close(
        generalized_jsd(teacher, student, beta=1 - beta), generalized_jsd(student, teacher, beta=beta)
    )


def test_jsd_half_is_symmetric_and_bounded_by_ln2() -> None:
    student, teacher = random_logits(6, 11, seed=4, scale=10.0)
    jsd = generalized_jsd(student, teacher, beta=0.5)
    torch.testing.assert_close(jsd, generalized_jsd(teacher, student, beta=0.5))
    assert (jsd <= LN2 + 1e-12).all()


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_nonnegative_and_zero_when_student_equals_teacher(name: str) -> None:
    divergence = get_divergence(name, beta=0.3)
    student, teacher = random_logits(8, 13, seed=5)
    assert (divergence(student, teacher) >= 0).all()
    assert (divergence(student, teacher) > 0).all()
    zeros = torch.zeros(8, dtype=torch.float64)
    torch.testing.assert_close(divergence(student, student.clone()), zeros, rtol=0, atol=1e-15)
    # A constant shift of the logits is the same distribution.
    torch.testing.assert_close(divergence(student, student + 7.0), zeros, rtol=0, atol=1e-12)


def test_no_nan_when_teacher_gives_probability_zero() -> None:
    student = torch.tensor([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5]], requires_grad=True)
    teacher = torch.tensor([[0.0, float("-inf"), 2.0], [float("-inf"), float("-inf"), 0.0]])
    values = forward_kl(student, teacher)
    assert torch.isfinite(values).all()
    # Token 0 by hand: p_T = [1, 0, e^2] / (1 + e^2); the zero-probability word adds nothing.
    p_t = [1 / (1 + math.e**2), 0.0, math.e**2 / (1 + math.e**2)]
    log_z_s = math.log(1 + math.e + math.e**2)
    by_hand = p_t[0] * (math.log(p_t[0]) - (0 - log_z_s)) + p_t[2] * (math.log(p_t[2]) - (2 - log_z_s))
    assert values[0].item() == pytest.approx(by_hand, rel=1e-5)
    values.sum().backward()
    assert torch.isfinite(student.grad).all()
    for beta in (0.25, 0.5, 0.75):
        assert torch.isfinite(generalized_jsd(student, teacher, beta=beta)).all()


def test_reverse_kl_with_shared_zero_probability_is_finite_and_mismatch_is_inf_not_nan() -> None:
    student = torch.tensor([[0.0, float("-inf"), 1.0]], requires_grad=True)
    teacher = torch.tensor([[0.5, float("-inf"), 0.0]])
    values = reverse_kl(student, teacher)
    assert torch.isfinite(values).all()
    values.sum().backward()
    assert torch.isfinite(student.grad).all()
    # The student puts mass where the teacher has none: the true KL is +inf.
    mismatch = reverse_kl(torch.tensor([[0.0, 0.0, 1.0]]), teacher)
    assert torch.isinf(mismatch).all() and not torch.isnan(mismatch).any()


@pytest.mark.parametrize("scale", [1e4, 1e30])
def test_no_nan_with_huge_logits(scale: float) -> None:
    student, teacher = random_logits(4, 7, dtype=torch.float32, seed=6, scale=1.0)
    student = (student * scale).requires_grad_(True)
    teacher = teacher * scale
    for name in DIVERGENCES:
        values = get_divergence(name)(student, teacher)
        assert torch.isfinite(values).all(), name
        assert (values >= 0).all(), name
        (grad,) = torch.autograd.grad(values.sum(), student)
        assert torch.isfinite(grad).all(), name


def test_half_precision_logits_are_computed_in_float32() -> None:
    student, teacher = random_logits(3, 5, dtype=torch.float32)
    for name in DIVERGENCES:
        divergence = get_divergence(name)
        got = divergence(student.bfloat16(), teacher.bfloat16())
        assert got.dtype == torch.float32
        expected = divergence(student.bfloat16().float(), teacher.bfloat16().float())
        torch.testing.assert_close(got, expected)


def test_shape_mismatch_and_bad_options_raise() -> None:
    with pytest.raises(ValueError, match="same shape"):
        forward_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        forward_kl(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0.0)
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(torch.zeros(2, 3), torch.zeros(2, 3), beta=1.5)


# ---------------------------------------------------------------- get_divergence


def test_get_divergence_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as error:
        get_divergence("kl")
    message = str(error.value)
    assert "'kl'" in message
    for name in ("forward_kl", "reverse_kl", "jsd"):
        assert name in message
    assert set(DIVERGENCES) == {"forward_kl", "reverse_kl", "jsd"}


def test_get_divergence_binds_options() -> None:
    student, teacher = random_logits(3, 6)
    assert torch.equal(
        get_divergence("forward_kl", temperature=2.0)(student, teacher), forward_kl(student, teacher, 2.0)
    )
    assert torch.equal(get_divergence("reverse_kl", beta=0.9)(student, teacher), reverse_kl(student, teacher))
    assert torch.equal(
        get_divergence("jsd", beta=0.2, temperature=0.5)(student, teacher), generalized_jsd(student, teacher, 0.2, 0.5)
    )
    with pytest.raises(ValueError, match="beta"):
        get_divergence("jsd", beta=-0.1)
    with pytest.raises(ValueError, match="temperature"):
        get_divergence("forward_kl", temperature=-1.0)


def test_a_divergence_is_a_frozen_value_that_says_what_it_is() -> None:
    divergence = get_divergence("jsd", beta=0.25, temperature=2.0)
    assert divergence == Divergence("jsd", 0.25, 2.0)
    assert hash(divergence) == hash(Divergence("jsd", 0.25, 2.0))
    with pytest.raises(AttributeError):
        divergence.temperature = 1.0  # type: ignore[misc]
    assert divergence.at_temperature(1.0) == Divergence("jsd", 0.25, 1.0)
    assert divergence.kl_direction is None
    assert Divergence("forward_kl", beta=0.9).kl_direction == "forward_kl"
    assert Divergence("reverse_kl").kl_direction == "reverse_kl"
    # The JSD's endpoints are the KLs exactly, so they share the KLs' closed-form gradient.
    assert Divergence("jsd", beta=0.0).kl_direction == "forward_kl"
    assert Divergence("jsd", beta=1.0).kl_direction == "reverse_kl"
    with pytest.raises(ValueError, match="'forward_kl', 'reverse_kl', 'jsd'"):
        Divergence("kl")


# ---------------------------------------------------------------- clip_token_values


def test_clip_scalar_and_none() -> None:
    values = torch.tensor([0.01, 0.05, 0.2, 3.0])
    torch.testing.assert_close(clip_token_values(values, 0.05), torch.tensor([0.01, 0.05, 0.05, 0.05]))
    assert clip_token_values(values, None) is values
    with pytest.raises(ValueError, match="token clip"):
        clip_token_values(values, -0.1)


def test_clip_per_token_tensor_with_inf_means_no_clip() -> None:
    values = torch.tensor([0.3, 0.3, 0.3, 5.0], dtype=torch.float64)
    clip = torch.tensor([0.1, math.inf, 0.3, math.inf], dtype=torch.float64)
    torch.testing.assert_close(clip_token_values(values, clip), torch.tensor([0.1, 0.3, 0.3, 5.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="per-token clip"):
        clip_token_values(values, torch.ones(3, dtype=torch.float64))


def test_clipped_tokens_carry_no_gradient() -> None:
    values = torch.tensor([0.01, 0.2, 3.0, 0.5], requires_grad=True)
    clip = torch.tensor([0.05, 0.05, math.inf, 0.1])
    clip_token_values(values, clip).sum().backward()
    assert values.grad.tolist() == [1.0, 0.0, 1.0, 0.0]
    values.grad = None
    clip_token_values(values, 0.05).sum().backward()
    assert values.grad.tolist() == [1.0, 0.0, 0.0, 0.0]


# ---------------------------------------------------------------- aggregate


def test_aggregate_hand_values() -> None:
    values = torch.tensor([1.0, 2.0, 4.0, 8.0])
    mask = torch.tensor([True, False, True, False])
    assert aggregate(values, mask).item() == pytest.approx((1.0 + 4.0) / 2)
    assert aggregate(values, torch.tensor([1, 1, 1, 1])).item() == pytest.approx(15.0 / 4)


def test_aggregate_divides_by_global_count() -> None:
    values = torch.tensor([1.0, 2.0, 4.0, 8.0])
    mask = torch.tensor([True, False, True, False])
    assert aggregate(values, mask, global_count=10).item() == pytest.approx(5.0 / 10)
    assert aggregate(values, mask, global_count=torch.tensor(20)).item() == pytest.approx(5.0 / 20)


def test_aggregate_count_is_clamped_to_one() -> None:
    values = torch.tensor([0.5, 0.25])
    mask = torch.tensor([True, True])
    assert aggregate(values, mask, global_count=0).item() == pytest.approx(0.75)
    assert aggregate(values, mask, global_count=torch.tensor(0.25)).item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="global_count"):
        aggregate(values, mask, global_count=-3)


def test_aggregate_empty_mask_is_exact_zero_with_zero_grad_despite_nan() -> None:
    values = torch.tensor([float("nan"), float("inf"), 1.0], requires_grad=True)
    mask = torch.zeros(3, dtype=torch.bool)
    for global_count in (None, 0, 12, torch.tensor(12)):
        loss = aggregate(values, mask, global_count)
        assert loss.item() == 0.0
        assert loss.requires_grad
        (grad,) = torch.autograd.grad(loss, values)
        assert torch.equal(grad, torch.zeros(3))


def test_aggregate_ignores_nan_in_masked_out_values() -> None:
    values = torch.tensor([float("nan"), 2.0, float("inf")], requires_grad=True)
    loss = aggregate(values, torch.tensor([False, True, False]), global_count=4)
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    assert values.grad.tolist() == [0.0, 0.25, 0.0]


def test_aggregate_mask_shape_must_match() -> None:
    with pytest.raises(ValueError, match="mask must have shape"):
        aggregate(torch.zeros(4), torch.ones(3, dtype=torch.bool))


# ---------------------------------------------------------------- property-based


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 6), v=st.integers(1, 12), data=st.data(), temperature=st.sampled_from([0.5, 1.0, 2.0]))
def test_forward_kl_is_nonnegative_and_finite_for_any_logits(n, v, data, temperature) -> None:
    numbers = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)
    student = torch.tensor(data.draw(st.lists(numbers, min_size=n * v, max_size=n * v))).reshape(n, v)
    teacher = torch.tensor(data.draw(st.lists(numbers, min_size=n * v, max_size=n * v))).reshape(n, v)
    values = forward_kl(student, teacher, temperature)
    assert values.shape == (n,)
    assert torch.isfinite(values).all()
    assert (values >= -1e-6).all()
    for beta in (0.5, 1.0):
        assert torch.isfinite(generalized_jsd(student, teacher, beta, temperature)).all()
