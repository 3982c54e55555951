"""Tiny real-architecture checkpoints: build, load back offline, run, generate."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from vigos.tiny import ARCHS, build_model, build_tokenizer, make_tiny


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.mark.parametrize("arch", ARCHS)
def test_build_load_forward_generate(tmp_path_factory, arch):
    out = make_tiny(arch, tmp_path_factory.mktemp(arch) / "m")
    processor = AutoProcessor.from_pretrained(out)
    model = AutoModelForImageTextToText.from_pretrained(out)
    assert type(model).__name__.lower().replace("_", "").startswith(arch.replace("_", ""))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n") and "<|vision_start|><|image_pad|><|vision_end|>" in text
    images = [Image.new("RGB", (112, 112), (200, 0, 0)), Image.new("RGB", (96, 112), (0, 0, 200))]
    processor.tokenizer.padding_side = "left"
    enc = processor(text=[text, text], images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape[-1] == len(processor.tokenizer) and torch.isfinite(logits).all()
    out_ids = model.generate(**enc, max_new_tokens=8, do_sample=True, top_k=20)
    assert out_ids.shape[0] == 2 and out_ids.shape[1] > enc["input_ids"].shape[1]


def test_tokenizer_round_trip_and_offsets(tokenizer):
    for text in ["héllo wörld — 数学 🙂", " A red leaf. </description>\n<think> x </think>\n\\boxed{\\frac{1}{2}}"]:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        assert tokenizer.decode(enc["input_ids"]) == text
        assert enc["offset_mapping"][0][0] == 0 and enc["offset_mapping"][-1][1] == len(text)
    for tag in ["</description>", "<think>", "</think>", "\\boxed{"]:
        # The byte-level pre-tokenizer splits punctuation from letters: "</", "description", ">" at best.
        assert len(tokenizer(tag, add_special_tokens=False)["input_ids"]) <= 4, tag
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") != tokenizer.unk_token_id


def test_rebuild_is_a_noop_and_seed_matters(tmp_path, tokenizer):
    out = make_tiny("qwen2_5_vl", tmp_path / "a")
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert make_tiny("qwen2_5_vl", tmp_path / "a") == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    a = build_model("qwen2_5_vl", tokenizer, seed=0).lm_head.weight
    b = build_model("qwen2_5_vl", tokenizer, seed=1).lm_head.weight
    assert not torch.equal(a, b)


def test_bad_arch_and_size(tmp_path):
    with pytest.raises(ValueError, match="qwen2_vl, qwen2_5_vl, qwen3_vl"):
        make_tiny("llava", tmp_path)
    with pytest.raises(ValueError, match="tiny, mini, small"):
        make_tiny("qwen2_vl", tmp_path, size="huge")


def test_small_preset_is_about_five_million(tokenizer):
    n = sum(p.numel() for p in build_model("qwen2_5_vl", tokenizer, size="small").parameters())
    assert 4e6 <= n <= 6e6, n
