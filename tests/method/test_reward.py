"""The outcome-reward term: the policy gradient by hand, group-relative advantages, the chunked path
against the plain one, and the scorer's term against a plain computation with the model's logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from loss_cases import N_TOKENS, assert_same_term, hidden_case
from plain import plain_logits
from scoring_cases import unclipped_config
from vigos import prompts
from vigos.data.rows import Example
from vigos.method.losses import policy_gradient
from vigos.method.sampled_losses import policy_gradient_from_hidden, sampled_log_probs
from vigos.method.score_metrics import group_advantages
from vigos.training.recipe import score_completions

IDS = torch.tensor([3, 0, 10, 7, 7, 1, 5])


def test_the_policy_gradient_is_minus_the_advantage_per_token():
    student = torch.tensor([-0.5, -2.0, -0.1], dtype=torch.float64, requires_grad=True)
    advantages = torch.tensor([0.5, -0.5, 0.0], dtype=torch.float64)
    values = policy_gradient(student, advantages)
    torch.testing.assert_close(values, torch.tensor([0.25, -1.0, 0.0], dtype=torch.float64))
    (grad,) = torch.autograd.grad(values.sum(), student)
    torch.testing.assert_close(grad, -advantages)
    with pytest.raises(ValueError, match="same shape"):
        policy_gradient(student, advantages[:2])


def test_advantages_are_relative_to_the_rollouts_of_the_same_prompt():
    first, second = Example("q1", "red", None, 0), Example("q2", "blue", None, 1)
    examples = [first, first, first, second, second]
    assert group_advantages(examples, [1.0, 0.0, 0.0, 1.0, 1.0]) == pytest.approx([2 / 3, -1 / 3, -1 / 3, 0.0, 0.0])


@pytest.mark.parametrize("chunk_size", [None, 1, 3, 64])
def test_the_chunked_term_from_hidden_states_is_the_plain_one(chunk_size):
    student_hidden, _, student_head, _ = hidden_case(torch.float64, seed=6)
    advantages = torch.linspace(-0.6, 0.6, N_TOKENS, dtype=torch.float64)
    logits = student_hidden @ student_head.T
    expected = policy_gradient(sampled_log_probs(logits, IDS[:, None])[:, 0], advantages).sum() / 9
    got = policy_gradient_from_hidden(
        student_hidden, student_head, IDS, advantages, global_count=9, chunk_size=chunk_size
    )
    assert_same_term(got, expected, (student_hidden, student_head), rtol=1e-9, atol=1e-9)


REWARDED = [
    " A red square. </description>\n<think> It is red. </think>\n\\boxed{red}<|im_end|>",
    " A blue square. </description>\n<think> It is blue. </think>\n\\boxed{blue}<|im_end|>",
    " The sky. </description>\n<think> blue </think>\n\\boxed{blue}<|im_end|>",
    " The sky. </description>\n<think> red </think>\n\\boxed{red}<|im_end|>",
]


def _rows(examples):
    # Two rollouts of each prompt, one right and one wrong: advantages +-1/2.
    return [examples[0], examples[0], examples[1], examples[1]]


def test_the_reward_term_is_the_plain_policy_gradient_over_every_completion_token(scoring_setup):
    model, processor, examples = scoring_setup
    rows = _rows(examples)
    out = score_completions(model, processor, rows, REWARDED, config=unclipped_config(method="grpo", reward_weight=1.0))
    assert list(out.terms) == ["reward"]
    student_text = {
        id(e): prompts.render_template(unclipped_config().student_prompt, question=e.question) for e in rows
    }
    total, count = 0.0, 0
    for example, text, advantage in zip(rows, REWARDED, [0.5, -0.5, 0.5, -0.5]):
        ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = plain_logits(model, processor, example.image, student_text[id(example)], "<description>", ids)
        log_probs = F.log_softmax(logits, -1).gather(-1, torch.tensor(ids)[:, None])[:, 0]
        total += (-advantage * log_probs).sum().item()
        count += len(ids)
    assert out.terms["reward"].item() == pytest.approx(total / count, rel=1e-4)
    assert out.metrics["tokens_reward"] == pytest.approx(count / 4)
    assert out.metrics["answer_accuracy"] == pytest.approx(0.5)


@pytest.mark.parametrize("method", ["grpo", "vigos"])
def test_fused_and_full_logits_reward_terms_agree_with_gradients(scoring_setup, method):
    model, processor, examples = scoring_setup
    rows = _rows(examples)
    results = []
    for naive in (True, False):
        config = unclipped_config(method=method, reward_weight=0.7, naive_loss=naive, teacher_batch_size=2)
        model.zero_grad()
        out = score_completions(model, processor, rows, REWARDED, config=config)
        out.loss.backward()
        results.append((out, {n: p.grad.detach().clone() for n, p in model.named_parameters() if "lora_" in n}))
    (naive, naive_grads), (fast, fast_grads) = results
    assert list(fast.terms) == list(naive.terms) and "reward" in fast.terms
    for name, value in naive.terms.items():
        torch.testing.assert_close(fast.terms[name], value, rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(fast.loss, naive.loss, rtol=1e-5, atol=1e-6)
    assert any(g.abs().max() > 0 for g in naive_grads.values())
    for name, grad in naive_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(method="grpo"), "method 'grpo' trains on the outcome reward alone: set reward_weight above 0"),
        (dict(method="grpo", reward_weight=1.0, perception_teacher_model="x"), "its teachers: none"),
        (dict(reward_weight=-1.0), "reward_weight must be >= 0"),
    ],
)
def test_reward_options_are_checked(kw, message):
    with pytest.raises(ValueError, match=message):
        unclipped_config(**kw)
