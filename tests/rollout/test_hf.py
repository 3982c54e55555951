"""Tests for vigos.rollout.hf: the Hugging Face rollout (HFGenerateRollout, SamplingParams) and LoRA folded into
the weights while it samples (merged_lora). The lean sampler it calls is tested in test_sampler.py."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoProcessor

from vigos.rollout.hf import HFGenerateRollout, SamplingParams, merged_lora


def test_min_new_tokens_forces_the_completion_length(scoring_setup):
    model, processor, examples = scoring_setup
    params = SamplingParams(max_new_tokens=9, min_new_tokens=9, num_samples=2)
    torch.manual_seed(0)
    completions = HFGenerateRollout(processor, params)(model, examples)
    eos = {processor.tokenizer.eos_token_id, processor.tokenizer.pad_token_id}
    assert [len(c) for c in completions] == [9] * 4
    assert not any(token in eos for c in completions for token in c)


def test_rollout_with_merged_lora_samples_the_same_tokens_and_restores_the_weights(scoring_setup):
    model, processor, examples = scoring_setup
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


def test_merged_lora_computes_the_adapted_model(scoring_setup):
    model, processor, examples = scoring_setup
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


def test_unknown_sampler_is_rejected_with_the_valid_names(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="lean, generate"):
        HFGenerateRollout(processor, SamplingParams(), sampler="beam")
