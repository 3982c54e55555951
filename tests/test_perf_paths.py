"""The fast paths against the naive ones they replace: same numbers, same gradients.

* scoring with ``naive_loss`` (full logits of the student and every teacher,
  then ``divergence_from_logits``) against the default chunked path from
  hidden states, on hand-made completions, terms and LoRA gradients;
* the chunked loss on inputs that defeat its closed form (non-finite
  logits) and in bfloat16;
* the stage timings in the metrics, and forced completion lengths in rollouts;
* rollouts with the LoRA deltas folded into the weights against unmerged ones;
* one vision encode per image shared by every pass against separate encodes.
"""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from vigos.data.rows import Example
from vigos.method.losses import get_divergence
from vigos.method.state_losses import divergence_from_hidden, divergence_from_logits
from vigos.method.teachers import make_teacher_policy
from vigos.models.modeling import (
    Context,
    collate_contexts,
    encode_image,
    encode_image_features,
    final_hidden_states,
    image_features_reusable,
    image_token_id,
    tokenize_prompt,
    unwrap,
)
from vigos.prompts import render_prompt
from vigos.rollout.hf import HFGenerateRollout, SamplingParams, merged_lora
from vigos.training.config import ViGOSConfig
from vigos.training.recipe import language_lora_targets, score_completions


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    # Random LoRA weights: the student differs from the adapter-off teacher.
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=language_lora_targets(["q_proj", "v_proj", "up_proj"]),
        init_lora_weights=False,
    )
    model = get_peft_model(model, lora)
    model.eval()
    red = Image.new("RGB", (112, 112), (200, 30, 30))
    blue = Image.new("RGB", (84, 112), (20, 40, 220))
    examples = [
        Example(question="What colour is the square?", answer="red", image=red, row=0, meta={}),
        Example(question="What colour is the sky?", answer="blue", image=blue, row=1, meta={}),
    ]
    return model, processor, examples


COMPLETIONS = [
    " A red square. </description>\n<think> It is red. </think>\n\\boxed{red}<|im_end|>",
    " A blue sky on the top. </description>\n<think> The sky is blue, so blue. </think>\n\\boxed{blue}<|im_end|>",
    " red red </description> no think \\boxed{red}<|im_end|>",
    "blue<|im_end|>",
]


def _score(model, processor, examples, naive: bool, **options):
    config = ViGOSConfig(
        output_dir="unused", report_to="none", naive_loss=naive, loss_chunk_size=5, teacher_batch_size=2, **options
    )
    rows = [examples[i % 2] for i in range(len(COMPLETIONS))]
    model.zero_grad()
    out = score_completions(
        model, processor, rows, COMPLETIONS, teacher=make_teacher_policy("fixed", model), config=config
    )
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    return out, grads


@pytest.mark.parametrize(
    "options",
    [
        dict(token_loss_clip=None, description_end_clip=None, reasoning_start_clip=None),
        dict(
            token_loss_clip=None,
            description_end_clip=None,
            reasoning_start_clip=None,
            reasoning_sees_description=True,
            distill_temperature=1.7,
            reference_divergence="jsd",
            jsd_beta=0.3,
        ),
        dict(
            method="opsd",
            token_loss_clip=None,
            description_end_clip=None,
            reasoning_start_clip=None,
            opsd_divergence="reverse_kl",
        ),
        # The release's clips: some tokens are clipped (no gradient), others not.
        dict(token_loss_clip=0.05, description_end_clip=0.01, reasoning_start_clip=0.02),
    ],
    ids=["vigos", "vigos-variants", "opsd-reverse", "vigos-clipped"],
)
def test_naive_and_chunked_scoring_give_the_same_terms_and_lora_gradients(setup, options):
    model, processor, examples = setup
    naive, naive_grads = _score(model, processor, examples, True, **options)
    fast, fast_grads = _score(model, processor, examples, False, **options)
    assert [s.valid for s in fast.spans] == [True, True, False, False]
    assert fast.supervised == naive.supervised
    assert list(fast.terms) == list(naive.terms)
    for name, value in naive.terms.items():
        torch.testing.assert_close(fast.terms[name], value, rtol=1e-5, atol=1e-6, msg=name)
        assert value.item() > 0, name
    torch.testing.assert_close(fast.loss, naive.loss, rtol=1e-5, atol=1e-6)
    assert any(g.abs().max() > 0 for g in naive_grads.values())
    for name, grad in naive_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_top_k_teachers_over_the_whole_vocabulary_score_as_hidden_states_and_fewer_tokens_score_no_more(setup):
    model, processor, examples = setup
    options = dict(token_loss_clip=None, description_end_clip=None, reasoning_start_clip=None, distill_temperature=1.3)
    exact, exact_grads = _score(model, processor, examples, False, **options)
    vocab = model.get_output_embeddings().weight.shape[0]
    whole, whole_grads = _score(model, processor, examples, False, teacher_top_k=vocab, **options)
    for name, value in exact.terms.items():
        assert value.item() > 0, name
        torch.testing.assert_close(whole.terms[name], value, rtol=1e-5, atol=1e-6, msg=name)
    for name, grad in exact_grads.items():
        torch.testing.assert_close(whole_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    few, few_grads = _score(model, processor, examples, False, teacher_top_k=8, **options)
    for name, value in exact.terms.items():
        # Every term here is a KL: merging the tail into one bin cannot raise it.
        assert 0 < few.terms[name].item() <= value.item() + 1e-6, name
    assert any(g.abs().max() > 0 for g in few_grads.values())


def test_teacher_top_k_options_are_checked(setup):
    model, processor, examples = setup
    with pytest.raises(ValueError, match="teacher_top_k must be >= 1"):
        ViGOSConfig(output_dir="unused", report_to="none", teacher_top_k=0)
    with pytest.raises(ValueError, match="teacher_top_k needs naive_loss: false"):
        ViGOSConfig(output_dir="unused", report_to="none", teacher_top_k=4, naive_loss=True)
    with pytest.raises(ValueError, match="teacher_top_k 100000 exceeds the vocabulary size"):
        _score(model, processor, examples, False, teacher_top_k=100_000)


def test_scoring_reports_stage_times(setup):
    model, processor, examples = setup
    for naive in (True, False):
        out, _ = _score(model, processor, examples, naive)
        for stage in ("teachers", "student", "loss"):
            assert 0.0 < out.metrics[f"time_{stage}"] < 60.0, stage


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


def test_min_new_tokens_forces_the_completion_length(setup):
    model, processor, examples = setup
    params = SamplingParams(max_new_tokens=9, min_new_tokens=9, num_samples=2)
    torch.manual_seed(0)
    completions = HFGenerateRollout(processor, params)(model, examples)
    eos = {processor.tokenizer.eos_token_id, processor.tokenizer.pad_token_id}
    assert [len(c) for c in completions] == [9] * 4
    assert not any(token in eos for c in completions for token in c)


def test_rollout_with_merged_lora_samples_the_same_tokens_and_restores_the_weights(setup):
    model, processor, examples = setup
    params = SamplingParams(max_new_tokens=12, num_samples=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sampled = {}
    for merge in (False, True):
        torch.manual_seed(3)
        sampled[merge] = HFGenerateRollout(processor, params, merge_lora=merge)(model, examples)
    assert sampled[True] == sampled[False]
    assert len(set(map(tuple, sampled[True]))) > 1
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name


def test_merged_lora_computes_the_adapted_model(setup):
    model, processor, examples = setup
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        with merged_lora(model) as merged:
            folded = model(input_ids=ids).logits
    assert merged
    assert not torch.allclose(adapted, base, atol=1e-4)
    torch.testing.assert_close(folded, adapted, rtol=1e-5, atol=1e-5)
    with merged_lora(model.get_base_model()) as merged:
        assert not merged


def _vision_model(model_dir):
    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=language_lora_targets(["q_proj", "v_proj"]), init_lora_weights=False
    )
    return get_peft_model(model, lora), processor


@pytest.mark.parametrize("fixture_name", ["tiny_model_dir", "tiny_qwen3_dir"])
def test_shared_image_features_give_the_hidden_states_of_separate_encodes(request, fixture_name):
    model, processor = _vision_model(request.getfixturevalue(fixture_name))
    model.eval()
    red, blue = (
        encode_image(processor, Image.new("RGB", size, colour))
        for size, colour in (((112, 112), (200, 30, 30)), ((84, 112), (20, 40, 220)))
    )
    prompt = tokenize_prompt(processor, render_prompt(processor, "What colour?", "<description>"), red)
    other = tokenize_prompt(processor, render_prompt(processor, "Which shape is it?", ""), blue)
    # The same image in two contexts of one batch, and another image: three encodes done separately, two shared.
    contexts = [
        Context(prompt, [100, 101, 102], red),
        Context(other, [103], blue),
        Context(prompt[:-1], [104, 104], red),
    ]
    pad, token = processor.tokenizer.pad_token_id, image_token_id(processor)
    assert image_features_reusable(model)
    features = encode_image_features(model, [red, blue])
    with torch.no_grad():
        separate = final_hidden_states(model, collate_contexts(contexts, pad_token_id=pad, image_token=token))
        shared = final_hidden_states(
            model, collate_contexts(contexts, pad_token_id=pad, image_token=token, image_features=features)
        )
    torch.testing.assert_close(shared, separate, rtol=1e-5, atol=1e-6)


def test_scoring_with_shared_image_features_matches_separate_encodes(setup):
    model, processor, examples = setup
    results = {}
    for reuse in (True, False):
        config = ViGOSConfig(
            output_dir="unused",
            report_to="none",
            token_loss_clip=None,
            description_end_clip=None,
            reasoning_start_clip=None,
        )
        scorer = config.build_scorer(processor, teacher=make_teacher_policy("fixed", model))
        scorer.options.reuse_image_features = reuse
        model.zero_grad()
        out = scorer(model, [examples[i % 2] for i in range(len(COMPLETIONS))], COMPLETIONS)
        out.loss.backward()
        results[reuse] = out, {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n}
    (shared, shared_grads), (separate, separate_grads) = results[True], results[False]
    assert "time_vision" in shared.metrics and "time_vision" not in separate.metrics
    for name, value in separate.terms.items():
        torch.testing.assert_close(shared.terms[name], value, rtol=1e-5, atol=1e-6)
    for name, grad in separate_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-5, atol=1e-6)


def test_image_features_are_not_shared_when_the_vision_tower_trains(tiny_model_dir):
    model, _ = _vision_model(tiny_model_dir)
    next(unwrap(model).model.visual.parameters()).requires_grad_(True)
    assert not image_features_reusable(model)
