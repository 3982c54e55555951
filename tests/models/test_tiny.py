"""Tiny real-architecture checkpoints: build, load back offline, run, generate; tokenizer and cache behaviour."""

from __future__ import annotations

import json
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

from vigos.models.qwen_vocab import PADDED_VOCAB_SIZE
from vigos.models.tiny import (
    DEFAULT_SIZE,
    ENDOFTEXT,
    IM_END,
    QWEN_ARCHS,
    SIZES,
    SPECIAL_TOKENS,
    build_config,
    build_model,
    build_processor,
    build_tokenizer,
    make_tiny,
    mrope_section,
)

EXPECTED_CLASSES = {
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", "Qwen2VLVideoProcessor"),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", "Qwen2VLVideoProcessor"),
    "qwen3_vl": ("Qwen3VLForConditionalGeneration", "Qwen3VLProcessor", "Qwen3VLVideoProcessor"),
}
TAGS = ("<description>", "</description>", "<think>", "</think>", "\\boxed{")
UNICODE = "héllo wörld — 数学 🙂 e\u0301 שלום"
OUTPUT = "<description> A red circle. </description>\n<think> The circle is red. </think>\n\\boxed{red}"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(
    scope="module",
    params=[(arch, vocab) for vocab in ("trained", "qwen") for arch in QWEN_ARCHS],
    ids=lambda param: "-".join(param),
)
def loaded(request, tmp_path_factory):
    """(arch, processor, model) of each arch and vocabulary, built once; the conftest's checkpoints are reused."""
    arch, vocab = request.param
    shared = {"qwen2_5_vl": "tiny_model_dir", "qwen3_vl": "tiny_qwen3_dir"}
    if vocab == "qwen":
        path = request.getfixturevalue("qwen_vocab_dirs")[arch]
    elif arch in shared:
        path = request.getfixturevalue(shared[arch])
    else:
        path = make_tiny(arch, tmp_path_factory.mktemp(arch) / "model")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    return arch, processor, model


def chat(question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def test_loads_back_as_the_real_family_classes(loaded):
    arch, processor, model = loaded
    model_class, processor_class, video_class = EXPECTED_CLASSES[arch]
    assert type(model).__name__ == model_class
    assert type(processor).__name__ == processor_class
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessor"
    assert type(processor.video_processor).__name__ == video_class
    tok, config = processor.tokenizer, model.config
    rows = model.get_output_embeddings().weight.shape[0]
    if len(tok) > 100_000:
        # The real vocabulary: padded embedding rows as in the real checkpoints, tied, the real ids.
        assert config.text_config.vocab_size == rows == PADDED_VOCAB_SIZE
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
        assert (config.image_token_id, tok.eos_token_id, tok.pad_token_id) == (151655, 151645, 151643)
    else:
        assert config.text_config.vocab_size == len(tok) == rows
    for name, token in (
        ("image_token_id", "<|image_pad|>"),
        ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"),
        ("vision_end_token_id", "<|vision_end|>"),
    ):
        assert getattr(config, name) == tok.convert_tokens_to_ids(token), name
    text = config.text_config
    assert (text.bos_token_id, text.eos_token_id, text.pad_token_id) == (
        tok.pad_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    generation = model.generation_config
    assert generation.eos_token_id == [tok.convert_tokens_to_ids(IM_END), tok.convert_tokens_to_ids(ENDOFTEXT)]
    assert generation.pad_token_id == tok.convert_tokens_to_ids(ENDOFTEXT)


def test_one_image_chat_forward(loaded):
    _, processor, model = loaded
    text = processor.apply_chat_template(chat("What colour is the circle?"), add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n") and "<|vision_start|><|image_pad|><|vision_end|>" in text
    enc = processor(text=[text], images=[Image.new("RGB", (112, 112), (200, 0, 0))], return_tensors="pt")
    # The small pixel budget: 112x112 is a 4x4 grid of merged patches in every family.
    assert (enc["input_ids"] == model.config.image_token_id).sum().item() == 16
    assert enc["image_grid_thw"].prod(-1).item() == 64
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (1, enc["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()


def test_batched_left_padded_generation(loaded):
    _, processor, model = loaded
    questions = ["What colour?", "How many circles are there in the image? Count them one by one."]
    texts = [processor.apply_chat_template(chat(q), add_generation_prompt=True, tokenize=False) for q in questions]
    images = [Image.new("RGB", (112, 112), (200, 0, 0)), Image.new("RGB", (112, 112), (0, 0, 200))]
    processor.tokenizer.padding_side = "left"
    enc = processor(text=texts, images=images, return_tensors="pt", padding=True)
    assert enc["attention_mask"][0, 0] == 0 and enc["attention_mask"][:, -1].all()
    with torch.no_grad():
        batched = model(**enc).logits[:, -1]
        # Left padding must not change what a row predicts next (mrope positions skip the padding).
        for row in range(2):
            alone = processor(text=[texts[row]], images=[images[row]], return_tensors="pt")
            torch.testing.assert_close(batched[row], model(**alone).logits[0, -1], atol=1e-4, rtol=1e-4)
    torch.manual_seed(0)
    prompt_len = enc["input_ids"].shape[1]
    out = model.generate(**enc, max_new_tokens=8, min_new_tokens=8, do_sample=True, top_k=20, temperature=1.0)
    assert out.shape == (2, prompt_len + 8)
    assert torch.equal(out[:, :prompt_len], enc["input_ids"])


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_tokenizer_round_trips_any_text(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


@pytest.mark.parametrize("text", [UNICODE, OUTPUT, "  two  spaces\r\nand\ttabs  "])
def test_tokenizer_round_trip_and_offsets(tokenizer, text):
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert tokenizer.decode(enc["input_ids"]) == text
    offsets = enc["offset_mapping"]
    assert offsets[0][0] == 0 and offsets[-1][1] == len(text)
    # Every character lies in some token's span (a character split over bytes lies in several).
    covered = set()
    for start, end in offsets:
        assert 0 <= start < end <= len(text)
        covered.update(range(start, end))
    assert covered == set(range(len(text)))
    if text.isascii():
        assert "".join(text[start:end] for start, end in offsets) == text


def test_tags_are_ordinary_text_and_few_tokens(tokenizer):
    special = set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab())
    for tag in TAGS:
        assert tag not in special
        assert len(tokenizer(tag, add_special_tokens=False)["input_ids"]) <= 4, tag
    for word in (" the", " image", " colour", " red", " circle", " answer"):
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1, word
    assert len(tokenizer(OUTPUT, add_special_tokens=False)["input_ids"]) <= 25


def test_special_tokens(tokenizer):
    added = {token.content: token for token in tokenizer.added_tokens_decoder.values()}
    for token in SPECIAL_TOKENS:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and added[token].special, token
    assert (tokenizer.pad_token, tokenizer.eos_token) == (ENDOFTEXT, IM_END)
    ids = tokenizer("<|im_start|>user\nhi<|image_pad|><|im_end|>", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user\nhi"


def test_tokenizer_is_deterministic_and_takes_extra_corpus(tokenizer):
    again = build_tokenizer()
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    word = " zanzibarquux"
    assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) > 1
    extended = build_tokenizer([f"The{word} is here." for _ in range(50)])
    assert len(extended(word, add_special_tokens=False)["input_ids"]) == 1


def test_vocab_size_bounds_the_vocabulary():
    assert len(build_tokenizer(vocab_size=400)) == 400
    with pytest.raises(ValueError, match="vocab_size 100 is too small"):
        build_tokenizer(vocab_size=100)


def test_chat_template(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "A circle."},
        {"role": "user", "content": "And its colour?"},
    ]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>\n"
        "<|im_start|>assistant\nA circle.<|im_end|>\n"
        "<|im_start|>user\nAnd its colour?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # No default system prompt, and no assistant header unless asked for.
    assert tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False) == (
        "<|im_start|>user\nHi<|im_end|>\n"
    )


def test_tokenizer_alone_loads_with_its_chat_template(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rendered = tok.apply_chat_template(chat("Hi"), tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_rebuild_with_same_args_is_a_noop(tmp_path):
    out = make_tiny("qwen2_5_vl", tmp_path / "m")
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert "model.safetensors" in stamps and "vigos_tiny.json" in stamps
    assert make_tiny("qwen2_5_vl", tmp_path / "m") == out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    recipe = json.loads((out / "vigos_tiny.json").read_text())["recipe"]
    assert (recipe["arch"], recipe["size"], recipe["seed"]) == ("qwen2_5_vl", "tiny", 0)


def test_other_seed_rebuilds_with_other_weights(tmp_path):
    out = make_tiny("qwen2_5_vl", tmp_path / "m", seed=0)
    before = load_file(out / "model.safetensors")
    make_tiny("qwen2_5_vl", out, seed=1)
    after = load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    assert not torch.equal(before["lm_head.weight"], after["lm_head.weight"])
    assert json.loads((out / "vigos_tiny.json").read_text())["recipe"]["seed"] == 1


def test_same_seed_same_weights(tokenizer):
    a = build_model("qwen2_vl", tokenizer, seed=3).state_dict()
    b = build_model("qwen2_vl", tokenizer, seed=3).state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_incomplete_checkpoint_is_rebuilt(tmp_path):
    out = make_tiny("qwen2_vl", tmp_path / "m")
    (out / "model.safetensors").unlink()
    make_tiny("qwen2_vl", out)
    assert (out / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.")], "staging directory left behind"


def test_refuses_a_directory_it_did_not_write(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="did not write"):
        make_tiny("qwen2_vl", tmp_path)
    assert (tmp_path / "config.json").read_text() == "{}"


def test_bad_arch_and_size_name_the_choices(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="unknown arch 'llava'; choose one of qwen2_vl, qwen2_5_vl, qwen3_vl"):
        make_tiny("llava", tmp_path)
    with pytest.raises(ValueError, match="qwen2_vl, qwen2_5_vl, qwen3_vl"):
        build_processor("qwen2", tokenizer)
    with pytest.raises(ValueError, match=f"unknown size 'huge'; choose one of {', '.join(SIZES)}"):
        make_tiny("qwen2_vl", tmp_path, size="huge")
    assert not any(tmp_path.iterdir())


def test_vocab_choice_is_in_the_recipe_and_rebuilds(tmp_path):
    out = make_tiny("qwen2_vl", tmp_path / "m")
    recipe = json.loads((out / "vigos_tiny.json").read_text())["recipe"]
    assert (recipe["vocab"], recipe["size"]) == ("trained", "tiny")
    make_tiny("qwen2_vl", out, vocab="qwen")
    recipe = json.loads((out / "vigos_tiny.json").read_text())["recipe"]
    assert (recipe["vocab"], recipe["size"]) == ("qwen", DEFAULT_SIZE["qwen"])
    config = json.loads((out / "config.json").read_text())
    assert config["text_config"]["vocab_size"] == PADDED_VOCAB_SIZE
    assert "lm_head.weight" not in load_file(out / "model.safetensors"), "tied: one embedding matrix stored"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.")], "staging directory left behind"


def test_qwen_vocab_takes_no_trained_vocabulary_options(tmp_path):
    with pytest.raises(ValueError, match="unknown vocab 'gpt2'; choose one of trained, qwen"):
        make_tiny("qwen2_vl", tmp_path, vocab="gpt2")
    for options in ({"extra_corpus": ["more text"]}, {"vocab_size": 4096}):
        with pytest.raises(ValueError, match="vocab='qwen' takes neither"):
            make_tiny("qwen2_vl", tmp_path, vocab="qwen", **options)
    assert not any(tmp_path.iterdir())


def test_qwen_vocab_checkpoints_stay_small(qwen_vocab_model_dir):
    sizes = {p.name: p.stat().st_size for p in qwen_vocab_model_dir.iterdir()}
    # 151,936 x 32 float32 embedding rows, stored once: about 19.5 MB of the weights.
    assert 19_000_000 < sizes["model.safetensors"] < 21_000_000, sizes


def test_config_vocab_size_pads_but_never_cuts(tokenizer):
    assert build_config("qwen2_vl", tokenizer, vocab_size=4096).text_config.vocab_size == 4096
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        build_config("qwen2_vl", tokenizer, vocab_size=len(tokenizer) - 1)


@pytest.mark.parametrize(("head_dim", "section"), [(16, [2, 3, 3]), (64, [8, 12, 12]), (128, [16, 24, 24])])
def test_mrope_section(head_dim, section):
    assert mrope_section(head_dim) == section


def test_preset_sizes(tokenizer):
    tiny = build_model("qwen2_5_vl", tokenizer, size="tiny")
    text = sum(p.numel() for name, p in tiny.named_parameters() if "visual" not in name)
    assert 100_000 <= text <= 300_000, text
    small = sum(p.numel() for p in build_model("qwen2_5_vl", tokenizer, size="small").parameters())
    assert 4_000_000 <= small <= 6_000_000, small
    small_config = build_config("qwen2_5_vl", tokenizer, "small")
    assert small_config.text_config.hidden_size == 256 and small_config.text_config.num_hidden_layers == 4
    assert small_config.vision_config.depth == 2


@pytest.mark.parametrize("arch", QWEN_ARCHS)
@pytest.mark.parametrize("size", list(SIZES))
def test_every_preset_is_a_consistent_config(tokenizer, arch, size):
    config = build_config(arch, tokenizer, size)
    text = config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    assert text.hidden_size == SIZES[size]["hidden"] and text.vocab_size == len(tokenizer)
    # The vision merger writes straight into the text embedding stream.
    merged = config.vision_config.hidden_size if arch == "qwen2_vl" else config.vision_config.out_hidden_size
    assert merged == text.hidden_size
