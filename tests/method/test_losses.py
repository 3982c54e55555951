"""Tests for vigos.method.losses: divergences, clipping, masked global means, chunked path."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from vigos.method.losses import (
    DIVERGENCES,
    aggregate,
    clip_token_values,
    forward_kl,
    generalized_jsd,
    get_divergence,
    reverse_kl,
)
from vigos.method.state_losses import (
    coarse_log_probs,
    divergence_from_hidden,
    divergence_from_logits,
    divergence_from_top_k,
    top_k_teacher,
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


def _random_logits(n: int, v: int, dtype: torch.dtype = torch.float64, seed: int = 0, scale: float = 3.0):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(n, v, generator=generator, dtype=dtype) * scale
    teacher = torch.randn(n, v, generator=generator, dtype=dtype) * scale
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
    student, teacher = _random_logits(5, 17)
    log_s = F.log_softmax(student / temperature, dim=-1)
    log_t = F.log_softmax(teacher / temperature, dim=-1)
    # F.kl_div(input, target) is KL(target || input).
    expected_forward = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1)
    expected_reverse = F.kl_div(log_t, log_s, reduction="none", log_target=True).sum(-1)
    torch.testing.assert_close(forward_kl(student, teacher, temperature), expected_forward)
    torch.testing.assert_close(reverse_kl(student, teacher, temperature), expected_reverse)


def test_jsd_endpoints_are_exactly_the_kls() -> None:
    student, teacher = _random_logits(4, 9)
    assert torch.equal(generalized_jsd(student, teacher, beta=0.0), forward_kl(student, teacher))
    assert torch.equal(generalized_jsd(student, teacher, beta=1.0), reverse_kl(student, teacher))
    assert torch.equal(generalized_jsd(student, teacher, 0.0, 1.5), forward_kl(student, teacher, 1.5))


def test_jsd_is_not_continuous_at_the_endpoints_but_normalized_limits_are_the_kls() -> None:
    student, teacher = _random_logits(4, 9)
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
    student, teacher = _random_logits(6, 11, seed=3)
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
    student, teacher = _random_logits(6, 11, seed=4, scale=10.0)
    jsd = generalized_jsd(student, teacher, beta=0.5)
    torch.testing.assert_close(jsd, generalized_jsd(teacher, student, beta=0.5))
    assert (jsd <= LN2 + 1e-12).all()


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_nonnegative_and_zero_when_student_equals_teacher(name: str) -> None:
    divergence = get_divergence(name, beta=0.3)
    student, teacher = _random_logits(8, 13, seed=5)
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
    student, teacher = _random_logits(4, 7, dtype=torch.float32, seed=6, scale=1.0)
    student = (student * scale).requires_grad_(True)
    teacher = teacher * scale
    for name in DIVERGENCES:
        values = get_divergence(name)(student, teacher)
        assert torch.isfinite(values).all(), name
        assert (values >= 0).all(), name
        (grad,) = torch.autograd.grad(values.sum(), student)
        assert torch.isfinite(grad).all(), name


def test_half_precision_logits_are_computed_in_float32() -> None:
    student, teacher = _random_logits(3, 5, dtype=torch.float32)
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
    student, teacher = _random_logits(3, 6)
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


def test_divergence_from_logits_is_the_composition() -> None:
    student, teacher = _random_logits(5, 7, seed=8)
    mask = torch.tensor([True, True, False, True, False])
    clip = torch.tensor([0.5, math.inf, 0.5, 0.1, math.inf], dtype=torch.float64)
    values = clip_token_values(forward_kl(student, teacher), clip)
    expected = values[mask].sum() / 6
    torch.testing.assert_close(divergence_from_logits(student, teacher, forward_kl, mask, clip, 6), expected)


# ---------------------------------------------------------------- chunked path


N_TOKENS, HIDDEN, VOCAB = 7, 5, 11


def _hidden_case(dtype: torch.dtype, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    student_hidden = torch.randn(N_TOKENS, HIDDEN, generator=generator, dtype=dtype).requires_grad_(True)
    teacher_hidden = torch.randn(N_TOKENS, HIDDEN, generator=generator, dtype=dtype)
    student_head = (torch.randn(VOCAB, HIDDEN, generator=generator, dtype=dtype) * 0.7).requires_grad_(True)
    teacher_head = torch.randn(VOCAB, HIDDEN, generator=generator, dtype=dtype) * 0.7
    return student_hidden, teacher_hidden, student_head, teacher_head


MASK = torch.tensor([True, False, True, True, True, False, True])
PER_TOKEN_CLIP = torch.tensor([0.3, 1.0, math.inf, 0.05, 2.0, 0.01, math.inf])


def _clip_for(kind: str, values: torch.Tensor) -> torch.Tensor | float | None:
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


@pytest.mark.parametrize("chunk_size", [1, 3, N_TOKENS, N_TOKENS + 4, None])
@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-6), (torch.float32, 1e-5)])
@pytest.mark.parametrize("clip_kind", ["per_token", "scalar", "none"])
def test_hidden_path_equals_logits_path(chunk_size, name, dtype, tol, clip_kind) -> None:
    student_hidden, teacher_hidden, student_head, teacher_head = _hidden_case(dtype)
    divergence = get_divergence(name, beta=0.4, temperature=1.3)
    student_logits = student_hidden @ student_head.T
    teacher_logits = teacher_hidden @ teacher_head.T
    values = divergence(student_logits, teacher_logits)
    clip = _clip_for(clip_kind, values)
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


@pytest.mark.parametrize("chunk_size", [1, 3, None])
def test_hidden_path_with_teacher_sharing_the_student_head(chunk_size) -> None:
    student_hidden, teacher_hidden, head, _ = _hidden_case(torch.float64, seed=1)
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
    student_hidden, teacher_hidden, student_head, teacher_head = _hidden_case(torch.float32, seed=2)
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
    student_hidden, teacher_hidden, student_head, teacher_head = _hidden_case(torch.float32, seed=3)
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


def test_hidden_path_rejects_bad_shapes_and_chunk_size() -> None:
    student_hidden, teacher_hidden, student_head, teacher_head = _hidden_case(torch.float32)
    with pytest.raises(ValueError, match="chunk_size"):
        divergence_from_hidden(
            student_hidden, teacher_hidden, student_head, teacher_head, forward_kl, MASK, chunk_size=0
        )
    with pytest.raises(ValueError, match="student_head and teacher_head"):
        divergence_from_hidden(student_hidden, teacher_hidden, student_head, teacher_head[:, :3], forward_kl, MASK)
    with pytest.raises(ValueError, match="student_hidden and teacher_hidden"):
        divergence_from_hidden(student_hidden, teacher_hidden[:3], student_head, teacher_head, forward_kl, MASK)
    with pytest.raises(ValueError, match="mask must have shape"):
        divergence_from_hidden(student_hidden, teacher_hidden, student_head, teacher_head, forward_kl, MASK[:3])
    with pytest.raises(ValueError, match="per-token clip"):
        divergence_from_hidden(
            student_hidden, teacher_hidden, student_head, teacher_head, forward_kl, MASK, torch.ones(3)
        )


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


# ---------------------------------------------------------------- top-k teachers


def test_coarse_log_probs_hand_values() -> None:
    # p = [4, 2, 1, 1] / 8; ids [0, 2]: bins p_0 = 1/2, p_2 = 1/8, rest 3/8.
    logits = torch.tensor([[2 * LN2, LN2, 0.0, 0.0]], dtype=torch.float64)
    coarse = coarse_log_probs(logits, torch.tensor([[0, 2]]))
    torch.testing.assert_close(coarse.exp(), torch.tensor([[0.5, 0.125, 0.375]], dtype=torch.float64))
    # Every token kept: no tail column.
    whole = coarse_log_probs(logits, torch.tensor([[3, 2, 1, 0]]))
    torch.testing.assert_close(whole.exp(), torch.tensor([[0.125, 0.125, 0.25, 0.5]], dtype=torch.float64))


def test_top_k_forward_kl_hand_computed() -> None:
    # Teacher p_T = [4, 2, 1, 1] / 8 keeps its top 2 tokens {0, 1}: bins [1/2, 1/4, 1/4].
    # Student p_S = [1, 1, 1, 1] / 4 on the same bins: [1/4, 1/4, 1/2].
    # KL(T || S) = 1/2 ln 2 + 1/4 ln 1 + 1/4 ln(1/2) = ln 2 / 4.
    teacher_logits = torch.tensor([[2 * LN2, LN2, 0.0, 0.0]], dtype=torch.float64)
    eye = torch.eye(4, dtype=torch.float64)
    teacher = top_k_teacher(teacher_logits, eye, k=2)  # hidden = logits, head = identity
    assert teacher.ids.tolist() == [[0, 1]]
    student_hidden = torch.zeros(1, 4, dtype=torch.float64, requires_grad=True)
    value = divergence_from_top_k(student_hidden, eye, teacher, get_divergence("forward_kl"), torch.tensor([True]))
    torch.testing.assert_close(value, torch.tensor(LN2 / 4, dtype=torch.float64))


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("chunk_size", [1, 3, None])
def test_top_k_teacher_with_the_whole_vocabulary_is_the_full_divergence(name, chunk_size) -> None:
    student_hidden, teacher_hidden, student_head, teacher_head = _hidden_case(torch.float64)
    divergence = get_divergence(name, beta=0.4, temperature=1.3)
    student_logits = student_hidden @ student_head.T
    values = divergence(student_logits, teacher_hidden @ teacher_head.T)
    clip = _clip_for("per_token", values)
    expected = divergence_from_logits(student_logits, teacher_hidden @ teacher_head.T, divergence, MASK, clip, 9)
    expected_grads = torch.autograd.grad(expected, (student_hidden, student_head))
    teacher = top_k_teacher(teacher_hidden, teacher_head, k=VOCAB, temperature=1.3, chunk_size=2)
    got = divergence_from_top_k(student_hidden, student_head, teacher, divergence, MASK, clip, 9, chunk_size)
    got_grads = torch.autograd.grad(got, (student_hidden, student_head))
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    for got_grad, expected_grad in zip(got_grads, expected_grads, strict=True):
        assert expected_grad.abs().max() > 0
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_chunked_top_k_path_equals_the_plain_one(name, dtype, tol) -> None:
    student_hidden, teacher_hidden, student_head, teacher_head = _hidden_case(dtype, seed=3)
    divergence = get_divergence(name, beta=0.4, temperature=0.8)
    teacher = top_k_teacher(teacher_hidden, teacher_head, k=4, temperature=0.8)
    assert teacher.log_probs.shape == (N_TOKENS, 5)
    coarse = coarse_log_probs(student_hidden @ student_head.T, teacher.ids, 0.8)
    clip = _clip_for("per_token", get_divergence(name, beta=0.4)(coarse, teacher.log_probs))
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


def test_top_k_teacher_from_hidden_chunks_equals_one_pass() -> None:
    _, teacher_hidden, _, teacher_head = _hidden_case(torch.float64, seed=5)
    whole = top_k_teacher(teacher_hidden, teacher_head, k=3, chunk_size=None)
    chunked = top_k_teacher(teacher_hidden, teacher_head, k=3, chunk_size=2)
    assert torch.equal(whole.ids, chunked.ids)
    torch.testing.assert_close(whole.log_probs, chunked.log_probs, rtol=1e-12, atol=1e-12)
    # The bins are a distribution, the k tokens are the teacher's most likely ones.
    torch.testing.assert_close(whole.log_probs.exp().sum(-1), torch.ones(N_TOKENS, dtype=torch.float64))
    assert torch.equal(whole.ids, (teacher_hidden @ teacher_head.T).topk(3).indices)


@settings(max_examples=100, deadline=None)
@given(v=st.integers(2, 12), data=st.data(), temperature=st.sampled_from([0.5, 1.0, 2.0]))
def test_top_k_kl_is_at_most_the_full_kl(v, data, temperature) -> None:
    """Coarsening merges outcomes, so neither KL can grow (data processing inequality)."""
    k = data.draw(st.integers(1, v))
    entries = st.floats(-20, 20, allow_nan=False, allow_infinity=False)
    student = torch.tensor(data.draw(st.lists(entries, min_size=v, max_size=v)), dtype=torch.float64)[None]
    teacher_logits = torch.tensor(data.draw(st.lists(entries, min_size=v, max_size=v)), dtype=torch.float64)[None]
    eye = torch.eye(v, dtype=torch.float64)
    teacher = top_k_teacher(teacher_logits, eye, k=k, temperature=temperature)
    for name in ("forward_kl", "reverse_kl"):
        divergence = get_divergence(name, temperature=temperature)
        coarse = divergence_from_top_k(student, eye, teacher, divergence, torch.tensor([True]), chunk_size=None)
        full = divergence(student, teacher_logits)[0]
        assert math.isfinite(coarse.item()) and -1e-12 <= coarse.item() <= full.item() + 1e-9


def test_top_k_rejects_mismatched_or_unregistered_divergences_and_bad_k() -> None:
    student_hidden, teacher_hidden, student_head, teacher_head = _hidden_case(torch.float64)
    teacher = top_k_teacher(teacher_hidden, teacher_head, k=3, temperature=1.0)
    with pytest.raises(ValueError, match="temperature 2.0 differs"):
        divergence_from_top_k(
            student_hidden, student_head, teacher, get_divergence("forward_kl", temperature=2.0), MASK
        )
    with pytest.raises(ValueError, match="'forward_kl', 'reverse_kl', 'jsd'"):
        divergence_from_top_k(student_hidden, student_head, teacher, lambda s, t: (s - t).sum(-1), MASK)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, V = 11\]"):
        top_k_teacher(teacher_hidden, teacher_head, k=0)
    with pytest.raises(ValueError, match="N = the teacher's 7 rows"):
        divergence_from_top_k(student_hidden[:3], student_head, teacher, get_divergence("forward_kl"), MASK[:3])
