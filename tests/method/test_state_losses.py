"""Tests for vigos.method.state_losses: the loss on logits as the composition of divergence, clip and mean,
the hidden-state entry point's checks, and top-k teachers (coarse bins, hand values, bounds, checks)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from loss_cases import MASK, N_TOKENS, VOCAB, assert_same_term, clip_for, hidden_case, random_logits
from vigos.method.losses import clip_token_values, forward_kl, get_divergence
from vigos.method.state_losses import (
    coarse_log_probs,
    divergence_from_hidden,
    divergence_from_logits,
    divergence_from_top_k,
    top_k_teacher,
)

LN2 = math.log(2.0)


def test_divergence_from_logits_is_the_composition() -> None:
    student, teacher = random_logits(5, 7, seed=8)
    mask = torch.tensor([True, True, False, True, False])
    clip = torch.tensor([0.5, math.inf, 0.5, 0.1, math.inf], dtype=torch.float64)
    values = clip_token_values(forward_kl(student, teacher), clip)
    expected = values[mask].sum() / 6
    torch.testing.assert_close(divergence_from_logits(student, teacher, forward_kl, mask, clip, 6), expected)


def test_hidden_path_rejects_bad_shapes_and_chunk_size() -> None:
    student_hidden, teacher_hidden, student_head, teacher_head = hidden_case(torch.float32)
    with pytest.raises(ValueError, match="chunk_size"):
        divergence_from_hidden(
            student_hidden, teacher_hidden, student_head, teacher_head, forward_kl, MASK, chunk_size=0
        )
    with pytest.raises(ValueError, match=r"teacher_head must be \[V, H_teacher\] = \[11, 5\]"):
        divergence_from_hidden(student_hidden, teacher_hidden, student_head, teacher_head[:, :3], forward_kl, MASK)
    with pytest.raises(ValueError, match="student_head must be"):
        divergence_from_hidden(student_hidden, teacher_hidden, student_head[:, :3], teacher_head, forward_kl, MASK)
    with pytest.raises(ValueError, match="student_hidden and teacher_hidden"):
        divergence_from_hidden(student_hidden, teacher_hidden[:3], student_head, teacher_head, forward_kl, MASK)
    with pytest.raises(ValueError, match="mask must have shape"):
        divergence_from_hidden(student_hidden, teacher_hidden, student_head, teacher_head, forward_kl, MASK[:3])
    with pytest.raises(ValueError, match="per-token clip"):
        divergence_from_hidden(
            student_hidden, teacher_hidden, student_head, teacher_head, forward_kl, MASK, torch.ones(3)
        )


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_a_teacher_of_another_hidden_size_gives_the_term_on_its_logits(name, chunk_size) -> None:
    """Another model as the teacher: its hidden size differs (3 vs 5), its vocabulary does not."""
    student_hidden, _, student_head, _ = hidden_case(torch.float64)
    generator = torch.Generator().manual_seed(9)
    teacher_hidden = torch.randn(N_TOKENS, 3, generator=generator, dtype=torch.float64)
    teacher_head = torch.randn(VOCAB, 3, generator=generator, dtype=torch.float64)
    divergence = get_divergence(name, beta=0.3, temperature=1.4)
    expected = divergence_from_logits(
        student_hidden @ student_head.T, teacher_hidden @ teacher_head.T, divergence, MASK, None, 9
    )
    got = divergence_from_hidden(
        student_hidden, teacher_hidden, student_head, teacher_head, divergence, MASK, None, 9, chunk_size
    )
    assert_same_term(got, expected, (student_hidden, student_head), rtol=1e-7, atol=1e-8)


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
    student_hidden, teacher_hidden, student_head, teacher_head = hidden_case(torch.float64)
    divergence = get_divergence(name, beta=0.4, temperature=1.3)
    student_logits = student_hidden @ student_head.T
    values = divergence(student_logits, teacher_hidden @ teacher_head.T)
    clip = clip_for("per_token", values)
    expected = divergence_from_logits(student_logits, teacher_hidden @ teacher_head.T, divergence, MASK, clip, 9)
    teacher = top_k_teacher(teacher_hidden, teacher_head, k=VOCAB, temperature=1.3, chunk_size=2)
    got = divergence_from_top_k(student_hidden, student_head, teacher, divergence, MASK, clip, 9, chunk_size)
    assert_same_term(got, expected, (student_hidden, student_head), rtol=1e-9, atol=1e-9)


def test_top_k_teacher_from_hidden_chunks_equals_one_pass() -> None:
    _, teacher_hidden, _, teacher_head = hidden_case(torch.float64, seed=5)
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
    student_hidden, teacher_hidden, student_head, teacher_head = hidden_case(torch.float64)
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
