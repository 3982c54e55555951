"""Tiny, randomly initialized checkpoints of the real Qwen-VL architectures, built offline.

``make_tiny`` writes a model of the real transformers class (Qwen2-VL,
Qwen2.5-VL or Qwen3-VL) with a byte-level BPE tokenizer trained locally, the
family's special tokens and chat template, and the real processor classes.
It loads back with ``AutoProcessor.from_pretrained`` and
``AutoModelForImageTextToText.from_pretrained`` without any network. Only the
sizes differ from a 7B checkpoint; every code path is the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import torch

ARCHS: tuple[str, ...] = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

SIZES: dict[str, dict[str, int]] = {
    # ~0.3M parameters: unit and end-to-end tests.
    "tiny": dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vision_hidden=32, vision_depth=2,
                 vision_heads=2, vision_intermediate=64),
    # ~5M parameters: the benchmark and demo model (text hidden 256, 4 layers; vision depth 2).
    "small": dict(hidden=256, layers=4, heads=4, kv_heads=2, intermediate=1024, vision_hidden=64, vision_depth=2,
                  vision_heads=2, vision_intermediate=128),
}

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_COLOURS = "red green blue yellow orange purple black pink white brown grey".split()
_THINGS = "leaf banana sky apple sign lemon grass carrot grape cherry sun wheel square circle shape object".split()
_POSITIONS = "left right top bottom center".split()


def _builtin_corpus() -> list[str]:
    """Sentences in the shape of prompts and model outputs, so common words and tags are few tokens."""
    lines = [
        "First describe what the image shows inside <description> </description>. "
        "Then think step by step inside <think> </think>. Finally put the final answer inside \\boxed{}.",
        "Describe what the image shows. The correct answer is red. Explain step by step how to reach it.",
        "What colour is the leaf in the image? How many wheels are there? Leaves are green. Bananas are yellow.",
        "The answer is \\frac{1}{2}. We have 3 + 4 = 7 and 12 - 5 = 7, so x = 2. \\boxed{42} \\sqrt{2} 0.5 100%",
    ]
    for i, colour in enumerate(_COLOURS):
        thing = _THINGS[i % len(_THINGS)]
        where = _POSITIONS[i % len(_POSITIONS)]
        lines.append(
            f"<description> A {colour} {thing} on the {where}. </description>\n"
            f"<think> The {thing} in the image is {colour}. </think>\n\\boxed{{{colour}}}"
        )
        lines.append(f"What colour is the {thing}? The {thing} is {colour}. There are {i} {thing}s.")
    lines.append(" ".join(str(n) for n in range(100)))
    return lines


def build_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 2048) -> Any:
    """A byte-level BPE tokenizer trained on ``corpus`` plus a built-in one, with the Qwen-VL special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # Untrimmed offsets: every byte of the text belongs to exactly one token's span.
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The format lines repeat so that BPE merges the tags into few tokens.
    tokenizer.train_from_iterator(_builtin_corpus() * 8 + list(corpus or []), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        clean_up_tokenization_spaces=False,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def _image_processor(arch: str) -> Any:
    from transformers import Qwen2VLImageProcessor

    if arch == "qwen3_vl":
        # Patch 16, merge 2: a 112x112 image becomes a 7x7 grid → 12 tokens after merging at 96x96.
        return Qwen2VLImageProcessor(patch_size=16, temporal_patch_size=2, merge_size=2,
                                     min_pixels=64 * 64, max_pixels=128 * 128,
                                     image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return Qwen2VLImageProcessor(patch_size=14, temporal_patch_size=2, merge_size=2,
                                 min_pixels=56 * 56, max_pixels=112 * 112)


def build_processor(arch: str, tokenizer: Any) -> Any:
    """The real processor class of ``arch``'s family around ``tokenizer``."""
    _check(arch, "arch", ARCHS)
    image_processor = _image_processor(arch)
    if arch == "qwen3_vl":
        from transformers import Qwen3VLProcessor, Qwen3VLVideoProcessor

        return Qwen3VLProcessor(image_processor=image_processor, video_processor=Qwen3VLVideoProcessor(),
                                tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
    from transformers import Qwen2VLVideoProcessor

    if arch == "qwen2_vl":
        from transformers import Qwen2VLProcessor as Processor
    else:
        from transformers import Qwen2_5_VLProcessor as Processor
    return Processor(image_processor=image_processor, video_processor=Qwen2VLVideoProcessor(),
                     tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


def build_config(arch: str, tokenizer: Any, size: str = "tiny") -> Any:
    """The real model config of ``arch`` at preset ``size``, with the tokenizer's ids."""
    _check(arch, "arch", ARCHS)
    _check(size, "size", tuple(SIZES))
    s = SIZES[size]
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    head_dim = s["hidden"] // s["heads"]
    # mrope sections (temporal, height, width) must add up to head_dim / 2.
    half = head_dim // 2
    section = [half - 2 * (half // 3), half // 3, half // 3]
    text = dict(
        vocab_size=len(tokenizer), hidden_size=s["hidden"], num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"], intermediate_size=s["intermediate"],
        max_position_embeddings=4096, bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    vision = dict(depth=s["vision_depth"], num_heads=s["vision_heads"], out_hidden_size=s["hidden"])
    if arch == "qwen3_vl":
        from transformers import Qwen3VLConfig

        text.update(head_dim=head_dim, rope_scaling={"rope_type": "default", "mrope_section": section,
                                                     "mrope_interleaved": True})
        vision.update(hidden_size=s["vision_hidden"], intermediate_size=s["vision_intermediate"], patch_size=16,
                      spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                      deepstack_visual_indexes=[1])
        return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)
    text.update(rope_scaling={"type": "mrope", "mrope_section": section})
    if arch == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision.update(embed_dim=s["vision_hidden"], hidden_size=s["hidden"], mlp_ratio=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)
        return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)
    from transformers import Qwen2_5_VLConfig

    vision.update(hidden_size=s["vision_hidden"], intermediate_size=s["vision_intermediate"], patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)


def build_model(arch: str, tokenizer: Any, size: str = "tiny", seed: int = 0) -> torch.nn.Module:
    """A randomly initialized model of ``arch`` (seeded)."""
    from transformers import AutoModelForImageTextToText, GenerationConfig

    config = build_config(arch, tokenizer, size)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.pad_token_id,
    )
    return model


def make_tiny(arch: str, out_dir: str | Path, *, size: str = "tiny", seed: int = 0,
              extra_corpus: Iterable[str] = (), vocab_size: int = 2048) -> Path:
    """Write a tiny random checkpoint of ``arch`` (model + processor) to ``out_dir`` and return it.

    A directory that already holds a complete checkpoint built with the same
    arguments is returned as it is.
    """
    _check(arch, "arch", ARCHS)
    _check(size, "size", tuple(SIZES))
    out = Path(out_dir)
    extra = list(extra_corpus)
    recipe = {"arch": arch, "size": size, "seed": seed, "vocab_size": vocab_size, "extra_corpus": extra}
    stamp = out / "vigos_tiny.json"
    if stamp.exists() and json.loads(stamp.read_text()) == recipe and (out / "config.json").exists():
        return out
    tokenizer = build_tokenizer(extra, vocab_size=vocab_size)
    processor = build_processor(arch, tokenizer)
    model = build_model(arch, tokenizer, size, seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    # Written last: its presence means the checkpoint is complete.
    stamp.write_text(json.dumps(recipe, indent=1))
    return out


def _check(value: str, name: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(valid)}")
