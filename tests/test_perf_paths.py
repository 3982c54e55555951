"""The fast paths against the naive ones they replace: same numbers, same gradients.

* scoring with ``naive_loss`` (full logits of the student and every teacher,
  then ``divergence_from_logits``) against the default chunked path from
  hidden states, on hand-made completions, terms and LoRA gradients;
* top-k teachers over the whole vocabulary against hidden states, and the
  stage timings in the metrics;
* one vision encode per image shared by every pass against separate encodes.

The chunked loss on its own (non-finite logits, bfloat16) is tested in
method/test_fused_loss.py; rollouts with the LoRA deltas folded into the
weights against unmerged ones, and forced completion lengths, in
rollout/test_hf.py.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from vigos.method.teachers import make_teacher_policy
from vigos.models.modeling import (
    Context,
    collate_contexts,
    encode_image,
    encode_image_features,
    final_hidden_states,
    image_features_reusable,
    tokenize_prompt,
    unwrap,
)
from vigos.prompts import render_prompt
from vigos.training.config import ViGOSConfig
from vigos.training.recipe import language_lora_targets, score_completions

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
        # Sampled-token losses beside a divergence, one of them clipped.
        dict(
            token_loss_clip=0.05,
            description_end_clip=None,
            reasoning_start_clip=None,
            perception_divergence="sampled_k1",
            reasoning_divergence="sampled_k3",
            distill_temperature=1.3,
        ),
        dict(method="opsd", token_loss_clip=None, opsd_divergence="sampled_k1"),
    ],
    ids=["vigos", "vigos-variants", "opsd-reverse", "vigos-clipped", "vigos-sampled", "opsd-sampled"],
)
def test_naive_and_chunked_scoring_give_the_same_terms_and_lora_gradients(scoring_setup, options):
    model, processor, examples = scoring_setup
    naive, naive_grads = _score(model, processor, examples, True, **options)
    fast, fast_grads = _score(model, processor, examples, False, **options)
    assert [s.valid for s in fast.spans] == [True, True, False, False]
    assert fast.supervised == naive.supervised
    assert list(fast.terms) == list(naive.terms)
    for name, value in naive.terms.items():
        torch.testing.assert_close(fast.terms[name], value, rtol=1e-5, atol=1e-6, msg=name)
        assert value.item() != 0, name
    torch.testing.assert_close(fast.loss, naive.loss, rtol=1e-5, atol=1e-6)
    assert any(g.abs().max() > 0 for g in naive_grads.values())
    for name, grad in naive_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_top_k_teachers_over_the_whole_vocabulary_score_as_hidden_states_and_fewer_tokens_score_no_more(scoring_setup):
    model, processor, examples = scoring_setup
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


def test_teacher_top_k_options_are_checked(scoring_setup):
    model, processor, examples = scoring_setup
    with pytest.raises(ValueError, match="teacher_top_k must be >= 1"):
        ViGOSConfig(output_dir="unused", report_to="none", teacher_top_k=0)
    with pytest.raises(ValueError, match="teacher_top_k needs naive_loss: false"):
        ViGOSConfig(output_dir="unused", report_to="none", teacher_top_k=4, naive_loss=True)
    with pytest.raises(ValueError, match="teacher_top_k 100000 exceeds the vocabulary size"):
        _score(model, processor, examples, False, teacher_top_k=100_000)


def test_scoring_reports_stage_times(scoring_setup):
    model, processor, examples = scoring_setup
    for naive in (True, False):
        out, _ = _score(model, processor, examples, naive)
        for stage in ("teachers", "student", "loss"):
            assert 0.0 < out.metrics[f"time_{stage}"] < 60.0, stage


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
    pad = processor.tokenizer.pad_token_id
    assert image_features_reusable(model)
    features = encode_image_features(model, [red, blue])
    with torch.no_grad():
        separate = final_hidden_states(model, collate_contexts(contexts, pad_token_id=pad))
        shared = final_hidden_states(model, collate_contexts(contexts, pad_token_id=pad, image_features=features))
    torch.testing.assert_close(shared, separate, rtol=1e-5, atol=1e-6)


def test_scoring_with_shared_image_features_matches_separate_encodes(scoring_setup):
    model, processor, examples = scoring_setup
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
