"""Sampled-token losses: values and policy gradients by hand, the registry, and the chunked path from
hidden states against the plain one on full logits, gradients included."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from loss_cases import MASK, N_TOKENS, VOCAB, assert_same_term, clip_for, hidden_case
from vigos.method.losses import LOSS_NAMES, Divergence, SampledTokenLoss, get_loss, sampled_token_kl
from vigos.method.sampled_losses import (
    sampled_log_probs,
    sampled_loss_from_hidden,
    sampled_loss_from_logits,
    sampled_teacher,
)

IDS = torch.tensor([3, 0, 10, 7, 7, 1, 5])


def test_k1_and_k3_values_and_their_policy_gradients_by_hand() -> None:
    student = torch.tensor([-0.5, -2.0, -0.1], dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor([-1.0, -0.5, -0.1], dtype=torch.float64)
    k1 = sampled_token_kl(student, teacher, "k1")
    torch.testing.assert_close(k1, torch.tensor([0.5, -1.5, 0.0], dtype=torch.float64))
    # The gradient of -A * log p_S with A = log p_T - log p_S detached: the estimate itself.
    (grad,) = torch.autograd.grad(k1.sum(), student)
    torch.testing.assert_close(grad, torch.tensor([0.5, -1.5, 0.0], dtype=torch.float64))
    k3 = sampled_token_kl(student, teacher, "k3")
    expected = [math.exp(-0.5) - 1 + 0.5, math.exp(1.5) - 1 - 1.5, 0.0]
    torch.testing.assert_close(k3, torch.tensor(expected, dtype=torch.float64))
    (grad,) = torch.autograd.grad(k3.sum(), student)
    torch.testing.assert_close(grad, torch.tensor(expected, dtype=torch.float64))


def test_no_gradient_reaches_the_teacher_and_bad_input_is_refused() -> None:
    student = torch.tensor([-0.5, -2.0], requires_grad=True)
    teacher = torch.tensor([-1.0, -0.5], requires_grad=True)
    sampled_token_kl(student, teacher).sum().backward()
    assert teacher.grad is None
    with pytest.raises(ValueError, match="estimator must be one of"):
        sampled_token_kl(student, teacher, "k2")
    with pytest.raises(ValueError, match="same shape"):
        sampled_token_kl(student, teacher[:1])


@settings(max_examples=100, deadline=None)
@given(student=st.floats(-30.0, 0.0), teacher=st.floats(-30.0, 0.0))
def test_k3_is_never_negative_and_k1_is_the_log_ratio(student, teacher) -> None:
    s, t = torch.tensor([student], dtype=torch.float64), torch.tensor([teacher], dtype=torch.float64)
    assert sampled_token_kl(s, t, "k3").item() >= 0.0
    assert sampled_token_kl(s, t, "k1").item() == pytest.approx(student - teacher, abs=1e-12)


def test_the_registry_names_every_loss_and_binds_options() -> None:
    assert LOSS_NAMES == ("forward_kl", "reverse_kl", "jsd", "sampled_k1", "sampled_k3")
    assert get_loss("sampled_k3", temperature=2.0) == SampledTokenLoss("sampled_k3", 2.0)
    assert get_loss("jsd", beta=0.2) == Divergence("jsd", 0.2)
    for bad in (lambda: get_loss("sampled_k2"), lambda: SampledTokenLoss("forward_kl")):
        with pytest.raises(ValueError, match="valid names are: 'forward_kl', 'reverse_kl', 'jsd', 'sampled_k1'"):
            bad()
    with pytest.raises(ValueError, match="temperature"):
        SampledTokenLoss("sampled_k1", temperature=0.0)


def test_the_term_from_logits_by_hand() -> None:
    """Value sum(k)/count; gradient wrt the student's logits k * (onehot(y) - softmax(z / T)) / T / count."""
    generator = torch.Generator().manual_seed(3)
    student = torch.randn(4, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(4, 6, generator=generator, dtype=torch.float64)
    ids = torch.tensor([1, 5, 0, 2])
    mask = torch.tensor([True, True, False, True])
    loss = SampledTokenLoss("sampled_k1", temperature=1.5)
    term = sampled_loss_from_logits(student, teacher, ids, loss, mask, global_count=5)
    s = F.log_softmax(student.detach() / 1.5, -1).gather(-1, ids[:, None])[:, 0]
    t = F.log_softmax(teacher / 1.5, -1).gather(-1, ids[:, None])[:, 0]
    k = s - t
    torch.testing.assert_close(term, k[mask].sum() / 5)
    (grad,) = torch.autograd.grad(term, student)
    expected = k[:, None] * (F.one_hot(ids, 6) - F.softmax(student.detach() / 1.5, -1)) / 1.5 / 5
    torch.testing.assert_close(grad, expected * mask[:, None])


def test_a_sampled_teacher_is_its_log_probability_of_each_token_whole_or_chunked() -> None:
    _, teacher_hidden, _, teacher_head = hidden_case(torch.float64, seed=2)
    whole = sampled_teacher(teacher_hidden, teacher_head, IDS, temperature=0.7, chunk_size=None)
    chunked = sampled_teacher(teacher_hidden, teacher_head, IDS, temperature=0.7, chunk_size=3)
    expected = F.log_softmax(teacher_hidden @ teacher_head.T / 0.7, -1).gather(-1, IDS[:, None])[:, 0]
    torch.testing.assert_close(whole.log_probs, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked.log_probs, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(whole.ids, IDS) and whole.temperature == 0.7
    with pytest.raises(ValueError, match="ids must be"):
        sampled_teacher(teacher_hidden, teacher_head, IDS[:3])


@pytest.mark.parametrize(
    "name,clip_kind", [("sampled_k1", None), ("sampled_k3", "per_token"), ("sampled_k3", "scalar")]
)
@pytest.mark.parametrize("chunk_size", [None, 1, 3, 64])
def test_the_chunked_term_from_hidden_states_is_the_plain_one(name, clip_kind, chunk_size) -> None:
    student_hidden, teacher_hidden, student_head, teacher_head = hidden_case(torch.float64, seed=4)
    loss = SampledTokenLoss(name, temperature=1.2)
    student_logits, teacher_logits = student_hidden @ student_head.T, teacher_hidden @ teacher_head.T
    plain_values = loss(
        sampled_log_probs(student_logits, IDS[:, None], 1.2)[:, 0],
        sampled_log_probs(teacher_logits, IDS[:, None], 1.2)[:, 0],
    )
    clip = None if clip_kind is None else clip_for(clip_kind, plain_values)
    expected = sampled_loss_from_logits(student_logits, teacher_logits, IDS, loss, MASK, clip, 9)
    teacher = sampled_teacher(teacher_hidden, teacher_head, IDS, temperature=1.2, chunk_size=2)
    got = sampled_loss_from_hidden(student_hidden, student_head, teacher, loss, MASK, clip, 9, chunk_size)
    assert_same_term(got, expected, (student_hidden, student_head), rtol=1e-9, atol=1e-9)
    # Through the teacher's own entry point: every row supervised.
    every = torch.ones(N_TOKENS, dtype=torch.bool)
    torch.testing.assert_close(
        teacher.loss_term(student_hidden, student_head, None, loss, clip=clip, global_count=9, chunk_size=chunk_size),
        sampled_loss_from_logits(student_logits, teacher_logits, IDS, loss, every, clip, 9),
    )


def test_the_term_from_hidden_states_checks_its_inputs() -> None:
    student_hidden, teacher_hidden, student_head, teacher_head = hidden_case(torch.float64)
    teacher = sampled_teacher(teacher_hidden, teacher_head, IDS, temperature=1.0)
    with pytest.raises(ValueError, match="temperature 2.0 differs"):
        sampled_loss_from_hidden(student_hidden, student_head, teacher, SampledTokenLoss("sampled_k1", 2.0), MASK)
    with pytest.raises(ValueError, match="needs a SampledTokenLoss"):
        sampled_loss_from_hidden(student_hidden, student_head, teacher, Divergence("forward_kl"), MASK)
    with pytest.raises(ValueError, match="student_hidden must be"):
        sampled_loss_from_hidden(student_hidden[:3], student_head, teacher, SampledTokenLoss("sampled_k1"), MASK)
    assert VOCAB > int(IDS.max())
