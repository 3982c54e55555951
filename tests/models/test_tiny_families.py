"""Tiny Gemma 3, LLaVA-OneVision and Idefics3 (SmolVLM layout) checkpoints: build, load back offline, chat,
generate, train a step; tokenizer layout and round trips; cached rebuilds."""

from __future__ import annotations

import json
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from vigos.models.tiny import SIZES, make_tiny
from vigos.models.tiny_families import (
    FAMILY_ARCHS,
    GEMMA_BYTES,
    GEMMA_SPECIAL_TOKENS,
    IDEFICS_ADDED_TOKENS,
    gemma_config,
    idefics_config,
    llava_config,
)

EXPECTED_CLASSES = {
    "gemma3": ("Gemma3ForConditionalGeneration", "Gemma3Processor", "Gemma3ImageProcessor", "GemmaTokenizer"),
    "llava_onevision": (
        "LlavaOnevisionForConditionalGeneration",
        "LlavaOnevisionProcessor",
        "LlavaOnevisionImageProcessor",
        "TokenizersBackend",
    ),
    "idefics3": (
        "Idefics3ForConditionalGeneration",
        "Idefics3Processor",
        "Idefics3ImageProcessor",
        "TokenizersBackend",
    ),
}
# What ends a prompt with the generation prompt, and the tokens a reply stops at (the turn's end first).
GENERATION_PROMPT = {
    "gemma3": "<start_of_turn>model\n",
    "llava_onevision": "<|im_start|>assistant\n",
    "idefics3": "Assistant:",
}
STOPS = {
    "gemma3": ("<end_of_turn>", "<eos>"),
    "llava_onevision": ("<|im_end|>", "<|endoftext|>"),
    "idefics3": ("<end_of_utterance>", "<|endoftext|>"),
}
# The placeholder the chat template writes per image, and the token the model input repeats for it.
PLACEHOLDER = {"gemma3": "<start_of_image>", "llava_onevision": "<image>", "idefics3": "<image>"}
IMAGE_TOKEN = {"gemma3": "<image_soft_token>", "llava_onevision": "<image>", "idefics3": "<image>"}
# Image tokens of one 64x64 and one 200x120 image as the only image of a prompt. Gemma 3: always 16 soft tokens;
# LLaVA-OneVision: 16 base + anyres tiles with a newline token per row; Idefics3: 4 per 32x32 tile plus the
# global view, after the image is resized to 96 pixels on its longest edge.
IMAGE_TOKENS = {"gemma3": (16, 16), "llava_onevision": (88, 120), "idefics3": (40, 28)}
CONFIGS = {"gemma3": gemma_config, "llava_onevision": llava_config, "idefics3": idefics_config}
TEXT = "héllo wörld — 数学 🙂 e\u0301  two  spaces\r\nand\ttabs 12345 <description> \\boxed{red}"


@pytest.fixture(scope="module", params=FAMILY_ARCHS)
def loaded(request, tmp_path_factory):
    """(arch, processor, model) of each family at size tiny, built and loaded back once."""
    arch = request.param
    path = make_tiny(arch, tmp_path_factory.mktemp(arch) / "model")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    return arch, AutoProcessor.from_pretrained(path), AutoModelForImageTextToText.from_pretrained(path)


def chat(*content: dict) -> list[dict]:
    return [{"role": "user", "content": list(content)}]


def image(size: tuple[int, int] = (64, 64), colour: tuple[int, int, int] = (200, 0, 0)) -> Image.Image:
    return Image.new("RGB", size, colour)


def encode(processor, texts: list[str], images: list) -> dict:
    # No special tokens added: the rendered chat already starts as the family wants (Gemma's with <bos>).
    return processor(text=texts, images=images, return_tensors="pt", padding=True, add_special_tokens=False)


def count(enc: dict, token_id: int) -> list[int]:
    return (enc["input_ids"] == token_id).sum(-1).tolist()


def test_loads_back_as_the_real_family_classes(loaded):
    arch, processor, model = loaded
    model_class, processor_class, image_class, tokenizer_class = EXPECTED_CLASSES[arch]
    tok = processor.tokenizer
    assert (type(model).__name__, type(processor).__name__) == (model_class, processor_class)
    assert (type(processor.image_processor).__name__, type(tok).__name__) == (image_class, tokenizer_class)
    assert model.config.text_config.vocab_size == len(tok) == model.get_input_embeddings().weight.shape[0]
    assert model.config.image_token_id == tok.convert_tokens_to_ids(IMAGE_TOKEN[arch])
    generation = model.generation_config
    assert generation.eos_token_id == [tok.convert_tokens_to_ids(t) for t in STOPS[arch]]
    assert generation.pad_token_id == tok.pad_token_id is not None
    assert generation.bos_token_id == model.config.text_config.bos_token_id is not None
    text = model.config.text_config
    assert (text.eos_token_id, text.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)


def test_special_tokens_are_single_and_named(loaded):
    arch, processor, model = loaded
    tok = processor.tokenizer
    special = {
        "gemma3": GEMMA_SPECIAL_TOKENS,
        "llava_onevision": ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"),
        "idefics3": ("<|endoftext|>", "<|im_start|>", "<|im_end|>", *IDEFICS_ADDED_TOKENS),
    }[arch]
    for token in special:
        ids = tok(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids) == [token], token
    if arch == "gemma3":
        # Gemma's ids 0-3 and the names its processor reads.
        assert [tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
        assert (tok.boi_token, tok.eoi_token, tok.image_token) == (
            "<start_of_image>",
            "<end_of_image>",
            "<image_soft_token>",
        )
        config = model.config
        assert (config.boi_token_id, config.eoi_token_id) == (tok.boi_token_id, tok.eoi_token_id)
        assert tok("a b", add_special_tokens=True)["input_ids"][0] == tok.bos_token_id
        assert all(len(tok.convert_tokens_to_ids([b])) == 1 for b in GEMMA_BYTES)
        assert tok.convert_ids_to_tokens(tok(" the", add_special_tokens=False)["input_ids"]) == ["▁the"]
    elif arch == "llava_onevision":
        assert (tok.image_token, tok.video_token) == ("<image>", "<video>")
        assert model.config.video_token_id == tok.video_token_id
    else:
        assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<end_of_utterance>", "<|im_end|>")
        # SmolLM2 splits numbers into single digits.
        assert len(tok("12345", add_special_tokens=False)["input_ids"]) == 5


def test_chat_template_layout(loaded):
    arch, processor, _ = loaded
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "A circle."},
        {"role": "user", "content": "And its colour?"},
    ]
    expected = {
        "gemma3": "<bos><start_of_turn>user\nBe brief.\n\n<start_of_image>What is it?<end_of_turn>\n"
        "<start_of_turn>model\nA circle.<end_of_turn>\n<start_of_turn>user\nAnd its colour?<end_of_turn>\n"
        "<start_of_turn>model\n",
        "llava_onevision": "<|im_start|>system \nBe brief.<|im_end|><|im_start|>user <image>\nWhat is it?<|im_end|>"
        "<|im_start|>assistant \nA circle.<|im_end|><|im_start|>user \nAnd its colour?<|im_end|>"
        "<|im_start|>assistant\n",
        "idefics3": "<|im_start|>System: Be brief.<end_of_utterance>\nUser:<image>What is it?<end_of_utterance>\n"
        "Assistant: A circle.<end_of_utterance>\nUser: And its colour?<end_of_utterance>\nAssistant:",
    }[arch]
    assert processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == expected
    no_prompt = processor.apply_chat_template(chat({"type": "text", "text": "Hi"}), tokenize=False)
    assert not no_prompt.endswith(GENERATION_PROMPT[arch])
    # The tokenizer alone carries the same template.
    assert processor.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == expected


def test_one_image_chat_generates_and_trains(loaded):
    arch, processor, model = loaded
    tok = processor.tokenizer
    rendered = processor.apply_chat_template(
        chat({"type": "image"}, {"type": "text", "text": "What colour is the circle?"}),
        add_generation_prompt=True,
        tokenize=False,
    )
    assert rendered.endswith(GENERATION_PROMPT[arch]) and rendered.count(PLACEHOLDER[arch]) == 1
    image_id = model.config.image_token_id
    for size, expected in zip(((64, 64), (200, 120)), IMAGE_TOKENS[arch]):
        assert count(encode(processor, [rendered], [image(size)]), image_id) == [expected], size
    enc = encode(processor, [rendered], [image()])
    if arch == "gemma3":
        assert count(enc, tok.boi_token_id) == count(enc, tok.eoi_token_id) == [1]
        assert count(enc, tok.bos_token_id) == [1]
        # The processor's default adds a second <bos> to a rendered chat, as the real Gemma 3's does.
        assert count(processor(text=[rendered], images=[image()], return_tensors="pt"), tok.bos_token_id) == [2]
    model.eval()
    prompt_len = enc["input_ids"].shape[1]
    out = model.generate(**enc, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert out.shape == (1, prompt_len + 5) and torch.equal(out[:, :prompt_len], enc["input_ids"])
    model.train()
    labels = enc["input_ids"].masked_fill(enc["input_ids"] == image_id, -100)
    loss = model(**enc, labels=labels).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.zero_grad()
    model.eval()


def test_two_images_in_one_prompt_and_a_batch(loaded):
    arch, processor, model = loaded
    two = processor.apply_chat_template(
        chat(
            {"type": "image"}, {"type": "text", "text": "Left."}, {"type": "image"}, {"type": "text", "text": "Same?"}
        ),
        add_generation_prompt=True,
        tokenize=False,
    )
    one = processor.apply_chat_template(
        chat({"type": "image"}, {"type": "text", "text": "What?"}), add_generation_prompt=True, tokenize=False
    )
    assert two.count(PLACEHOLDER[arch]) == 2
    processor.tokenizer.padding_side = "left"
    enc = encode(processor, [one, two], [[image()], [image(), image((200, 120), (0, 0, 200))]])
    alone = encode(processor, [two], [[image(), image((200, 120), (0, 0, 200))]])
    image_id = model.config.image_token_id
    # In a prompt of several images LLaVA-OneVision gives each its base tile (and a newline) only.
    per_image = {"gemma3": 16 + 16, "llava_onevision": 17 + 17, "idefics3": 40 + 28}[arch]
    assert count(alone, image_id) == [per_image]
    assert count(enc, image_id) == [IMAGE_TOKENS[arch][0], per_image]
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape[:2] == enc["input_ids"].shape and torch.isfinite(logits).all()
    out = model.generate(**enc, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (2, enc["input_ids"].shape[1] + 3)


@pytest.mark.parametrize("arch", FAMILY_ARCHS)
@settings(max_examples=100, deadline=None)
@given(text=st.text())
def test_tokenizer_round_trips_any_text(family_tokenizers, arch, text):
    tok = family_tokenizers[arch]
    if arch == "gemma3":
        # Gemma writes a space as "▁", so a literal "▁" reads back as a space, as in the real tokenizer.
        text = text.replace("▁", "_")
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


@pytest.fixture(scope="module")
def family_tokenizers(tmp_path_factory):
    """The tokenizer of each family's tiny checkpoint, loaded back."""
    return {
        arch: AutoProcessor.from_pretrained(make_tiny(arch, tmp_path_factory.mktemp(arch) / "model")).tokenizer
        for arch in FAMILY_ARCHS
    }


@pytest.mark.parametrize("arch", FAMILY_ARCHS)
def test_tokenizer_round_trips_mixed_text_in_few_tokens(family_tokenizers, arch):
    tok = family_tokenizers[arch]
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == TEXT
    # Trained on the built-in corpus: its common words are one token each.
    for word in (" the", " circle", " colour"):
        assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1, word


@pytest.mark.parametrize("arch", FAMILY_ARCHS)
def test_cached_rebuild_is_untouched_and_qwen_vocab_refused(tmp_path, arch):
    out = make_tiny(arch, tmp_path / "m")
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert make_tiny(arch, out) == out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    recipe = json.loads((out / "vigos_tiny.json").read_text())["recipe"]
    assert (recipe["arch"], recipe["size"], recipe["vocab"]) == (arch, "tiny", "trained")
    with pytest.raises(
        ValueError, match=f"vocab='qwen' is Qwen's real vocabulary.*arch '{arch}' takes vocab='trained'"
    ):
        make_tiny(arch, tmp_path / "q", vocab="qwen")
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("arch", FAMILY_ARCHS)
@pytest.mark.parametrize("size", list(SIZES))
def test_every_preset_is_a_consistent_config(family_tokenizers, arch, size):
    s = SIZES[size]
    config = CONFIGS[arch](family_tokenizers[arch], s)
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.intermediate_size) == (
        s["hidden"],
        s["layers"],
        s["intermediate"],
    )
    assert (vision.hidden_size, vision.num_hidden_layers) == (s["vision_hidden"], s["vision_depth"])
    if arch == "gemma3":
        assert text.layer_types[-1] == "full_attention" and text.query_pre_attn_scalar == text.head_dim
        # The projector pools the patch grid to sqrt(mm_tokens_per_image) per side.
        side = vision.image_size // vision.patch_size
        assert side % int(config.mm_tokens_per_image**0.5) == 0
