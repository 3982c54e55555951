"""Our context encoding equals the processor's, and hidden states match the model's logits."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from vigos.models.modeling import (
    Context,
    collate_contexts,
    encode_image,
    final_hidden_states,
    gathered_output_head,
    output_head,
    output_head_shape,
    tokenize_prompt,
)
from vigos.prompts import render_prompt


@pytest.mark.parametrize("fixture_name", ["tiny_model_dir", "tiny_qwen3_dir"])
def test_encoding_matches_processor_and_hidden_states_give_logits(request, fixture_name):
    path = request.getfixturevalue(fixture_name)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    image = Image.new("RGB", (100, 80), (10, 200, 30))
    text = render_prompt(processor, "What is shown?", "<description>")
    ours = tokenize_prompt(processor, text, encode_image(processor, image))
    enc = processor(text=[text], images=[image], return_tensors="pt", return_mm_token_type_ids=True)
    assert ours == enc["input_ids"][0].tolist()
    appended = processor.tokenizer(" a green box", add_special_tokens=False)["input_ids"]
    contexts = [
        Context(ours, appended, encode_image(processor, image)),
        Context(ours, [], encode_image(processor, image)),
    ]
    batch = collate_contexts(contexts, pad_token_id=processor.tokenizer.pad_token_id)
    assert torch.equal(batch["pixel_values"], torch.cat([enc["pixel_values"]] * 2))
    with torch.no_grad():
        hidden = final_hidden_states(model, batch)
        logits = model(**batch).logits
    assert torch.allclose(hidden @ output_head(model).T, logits, atol=1e-5)


def test_output_head_is_gathered_only_under_zero3(tiny_model_dir, monkeypatch):
    """DeepSpeed is not installed here: a stand-in records how GatheredParameters is entered."""
    entered = []

    class GatheredParameters:
        def __init__(self, params, modifier_rank=None, fwd_module=None, enabled=True):
            entered.append((params, modifier_rank))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    deepspeed = types.ModuleType("deepspeed")
    deepspeed.__spec__ = importlib.machinery.ModuleSpec("deepspeed", None)  # what find_spec checks elsewhere
    deepspeed.zero = types.SimpleNamespace(GatheredParameters=GatheredParameters)
    monkeypatch.setitem(sys.modules, "deepspeed", deepspeed)
    weight = output_head(model)
    with gathered_output_head(model) as head:
        assert head is weight
    assert not entered, "no ZeRO-3 marks: the weight is used as it is"

    weight.requires_grad_(False)  # LoRA: the head is frozen
    monkeypatch.setattr(weight, "ds_id", 0, raising=False)
    monkeypatch.setattr(weight, "ds_shape", torch.Size([7, 3]), raising=False)
    with gathered_output_head(model) as head:
        assert head is weight
    assert entered == [([weight], None)]
    assert output_head_shape(model) == (7, 3)
    with pytest.raises(ValueError, match="ZeRO-3 cannot run this loss: loss_chunk_size is None"):
        with gathered_output_head(model, needed_in_backward=True):
            pass
    weight.requires_grad_(True)
    with pytest.raises(ValueError, match="the output head is trained.*LoRA"):
        with gathered_output_head(model):
            pass


def test_every_path_ends_completions_on_the_same_ids(tiny_model_dir, tmp_path):
    from vigos.method.spans import SpanParser
    from vigos.models.modeling import end_token_ids
    from vigos.rollout.hf import HFGenerateRollout, SamplingParams
    from vigos.rollout.vllm_server import VLLMServerRollout

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    tokenizer = processor.tokenizer
    ends = end_token_ids(tokenizer)
    assert ends == sorted({tokenizer.eos_token_id, tokenizer.pad_token_id}) and len(ends) == 2
    params = SamplingParams(1.0, 1.0, 0, 4, 1)
    assert HFGenerateRollout(processor, params).eos_token_ids == ends
    assert VLLMServerRollout(processor, params, url="http://127.0.0.1:1", sync_dir=tmp_path).stop_ids == ends
    assert SpanParser(tokenizer).eos_token_ids == frozenset(ends)
