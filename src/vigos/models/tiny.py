"""Tiny, randomly initialized checkpoints of the real VLM architectures, built offline.

``make_tiny`` writes a model of the real transformers class (Qwen2-VL,
Qwen2.5-VL or Qwen3-VL here; Gemma 3, LLaVA-OneVision and Idefics3 in
:mod:`vigos.models.tiny_families`) with a byte-level BPE tokenizer trained locally on a
built-in corpus, the family's special tokens, pre-tokenizer split and chat
template, and the family's real processor classes. The checkpoint loads back
with ``AutoProcessor.from_pretrained`` and
``AutoModelForImageTextToText.from_pretrained`` without any network. Only the
sizes (and the vocabulary) differ from a 7B checkpoint; every code path is the
same, so what works on a tiny model works on the real one. With
``vocab="qwen"`` the tokenizer is Qwen's real 151,643-rank vocabulary
instead, with each family's added tokens at their real ids and its real chat
template (see :mod:`vigos.models.qwen_vocab`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vigos.models.tiny_corpus import builtin_corpus
from vigos.models.tiny_families import decoder_fields

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerFast, ProcessorMixin

QWEN_ARCHS: tuple[str, ...] = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
# The other families are built by vigos.models.tiny_families, with a trained vocabulary only.
ARCHS: tuple[str, ...] = (*QWEN_ARCHS, "gemma3", "llava_onevision", "idefics3")

SIZES: dict[str, dict[str, int]] = {
    # About 0.3M parameters in all, 0.2M in the text part at the default vocabulary: unit and end-to-end tests.
    "tiny": dict(
        hidden=64,
        layers=2,
        heads=4,
        kv_heads=2,
        intermediate=128,
        vision_hidden=32,
        vision_depth=2,
        vision_heads=2,
        vision_intermediate=64,
    ),
    # About 0.5M parameters: the demo model (learns the output format in a couple of minutes on 2 cores).
    "mini": dict(
        hidden=128,
        layers=2,
        heads=4,
        kv_heads=2,
        intermediate=384,
        vision_hidden=32,
        vision_depth=2,
        vision_heads=2,
        vision_intermediate=64,
    ),
    # About 5M parameters: the benchmark model (text hidden 256, 4 layers; vision depth 2).
    "small": dict(
        hidden=256,
        layers=4,
        heads=4,
        kv_heads=2,
        intermediate=1024,
        vision_hidden=64,
        vision_depth=2,
        vision_heads=2,
        vision_intermediate=128,
    ),
    # The real vocabulary's preset: its 151,936 embedding rows dominate (4.9M parameters at hidden 32, tied).
    "micro": dict(
        hidden=32,
        layers=2,
        heads=2,
        kv_heads=1,
        intermediate=64,
        vision_hidden=32,
        vision_depth=2,
        vision_heads=2,
        vision_intermediate=64,
    ),
}
VOCABS: tuple[str, ...] = ("trained", "qwen")
# make_tiny's size when none is given, per vocabulary.
DEFAULT_SIZE: dict[str, str] = {"trained": "tiny", "qwen": "micro"}

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)

# The Qwen chat layout without the default system prompt (prompts stay short for tiny models).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item or 'image_url' in item %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'video' or 'video' in item %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Bump when the built checkpoint changes for the same arguments, so cached directories are rebuilt.
_BUILDER_VERSION = 4
_STAMP = "vigos_tiny.json"
_MIN_VOCAB = 256 + len(SPECIAL_TOKENS)

# Pixel budgets (min, max) per image: a 112x112 image becomes 16 image tokens in every family.
_PIXELS = {"qwen2_vl": (56 * 56, 112 * 112), "qwen2_5_vl": (56 * 56, 112 * 112), "qwen3_vl": (64 * 64, 128 * 128)}
_PATCH = {"qwen2_vl": 14, "qwen2_5_vl": 14, "qwen3_vl": 16}
_VIDEO_FRAMES_BUDGET = 8


def build_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the built-in corpus plus ``corpus``, with the Qwen-VL special tokens.

    The pre-tokenizer is the Qwen2 family's split (single digits, punctuation
    runs, letters with one leading symbol) followed by byte-level mapping, so
    any text round-trips exactly through ``encode``/``decode`` and offsets
    are character offsets into the original text. The format tags are
    ordinary text, as in the real vocabulary. ``vocab_size`` is an upper
    bound: the merges stop when the corpus has no pair left to merge.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    if vocab_size < _MIN_VOCAB:
        raise ValueError(
            f"vocab_size {vocab_size} is too small: the bytes and special tokens alone need "
            f"{_MIN_VOCAB}; use at least that (2048 is the default)"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    # Untrimmed offsets: every character of the text lies in some token's span.
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(builtin_corpus() + list(corpus or []), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in (IM_END, ENDOFTEXT)],
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_processor(arch: str, tokenizer: PreTrainedTokenizerFast) -> ProcessorMixin:
    """The real processor class of ``arch``'s family around ``tokenizer``, with a small pixel budget.

    A 112x112 image becomes 16 image tokens (4x4 after the 2x2 merge) in every family.
    """
    _check(arch, "arch", QWEN_ARCHS)
    from transformers import Qwen2VLImageProcessor

    # The tokenizer's own template: the trained vocabulary's short one or the real family's.
    template = tokenizer.chat_template

    low, high = _PIXELS[arch]
    patch = _PATCH[arch]
    # Qwen3-VL normalizes to [-1, 1]; the Qwen2 families keep the CLIP statistics (the class default).
    stats = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]} if arch == "qwen3_vl" else {}
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": low, "longest_edge": high},
        patch_size=patch,
        temporal_patch_size=2,
        merge_size=2,
        **stats,
    )
    # Per-frame cap as in the reference qwen-vl-utils (and no deprecation warning on every video).
    video = {"size": {"shortest_edge": low, "longest_edge": high * _VIDEO_FRAMES_BUDGET}, "cap_pixels_per_frame": True}
    if arch == "qwen3_vl":
        from transformers import Qwen3VLProcessor, Qwen3VLVideoProcessor

        return Qwen3VLProcessor(
            image_processor=image_processor,
            video_processor=Qwen3VLVideoProcessor(**video),
            tokenizer=tokenizer,
            chat_template=template,
        )
    from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    processor_class = Qwen2VLProcessor if arch == "qwen2_vl" else Qwen2_5_VLProcessor
    return processor_class(
        image_processor=image_processor,
        video_processor=Qwen2VLVideoProcessor(**video),
        tokenizer=tokenizer,
        chat_template=template,
    )


def mrope_section(head_dim: int) -> list[int]:
    """Rotary frequencies per (temporal, height, width) axis; they add up to ``head_dim / 2``.

    The split keeps the real checkpoints' ratio (16, 24, 24 of 64 at head_dim 128).
    """
    half = head_dim // 2
    spatial = 3 * half // 8
    return [half - 2 * spatial, spatial, spatial]


def build_config(
    arch: str,
    tokenizer: PreTrainedTokenizerFast,
    size: str = "tiny",
    *,
    vocab_size: int | None = None,
    tie_word_embeddings: bool = False,
) -> PreTrainedConfig:
    """The real model config of ``arch`` at preset ``size``, with the tokenizer's vocabulary and token ids.

    ``vocab_size`` (embedding rows) defaults to ``len(tokenizer)``; the real
    checkpoints pad it past the tokenizer's last id.
    """
    _check(arch, "arch", QWEN_ARCHS)
    _check(size, "size", tuple(SIZES))
    s = SIZES[size]
    ids = {
        name: tokenizer.convert_tokens_to_ids(token)
        for name, token in (
            ("image_token_id", IMAGE_PAD),
            ("video_token_id", VIDEO_PAD),
            ("vision_start_token_id", VISION_START),
            ("vision_end_token_id", VISION_END),
        )
    }
    head_dim = s["hidden"] // s["heads"]
    rope = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": mrope_section(head_dim)}
    if vocab_size is not None and vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer ({len(tokenizer)} tokens)")
    # Qwen's bos is <|endoftext|>; the defaults (151643/151645) would lie outside a trained vocabulary.
    text = decoder_fields(s, tokenizer, tokenizer.pad_token_id, vocab_size) | {"rope_parameters": rope}
    vision = dict(
        depth=s["vision_depth"],
        num_heads=s["vision_heads"],
        out_hidden_size=s["hidden"],
        patch_size=_PATCH[arch],
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    if arch == "qwen3_vl":
        from transformers import Qwen3VLConfig

        text.update(head_dim=head_dim)
        rope.update(rope_theta=5_000_000.0, mrope_interleaved=True)
        # 64 learned positions = an 8x8 patch grid, interpolated for other sizes; deepstack from an inner layer.
        vision.update(
            hidden_size=s["vision_hidden"],
            intermediate_size=s["vision_intermediate"],
            num_position_embeddings=64,
            deepstack_visual_indexes=[0],
        )
        return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=tie_word_embeddings, **ids)
    if arch == "qwen2_vl":
        from transformers import Qwen2VLConfig

        # Qwen2-VL names the vision width embed_dim and the merger's output width hidden_size.
        vision.update(
            embed_dim=s["vision_hidden"],
            hidden_size=s["hidden"],
            mlp_ratio=s["vision_intermediate"] // s["vision_hidden"],
        )
        return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=tie_word_embeddings, **ids)
    from transformers import Qwen2_5_VLConfig

    # A 56-pixel window is 2x2 merged tokens, so a 112x112 image spans 4 windows and the
    # windowed-attention block (0) differs from the full-attention one (1).
    vision.update(
        hidden_size=s["vision_hidden"],
        intermediate_size=s["vision_intermediate"],
        window_size=56,
        fullatt_block_indexes=[s["vision_depth"] - 1],
    )
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=tie_word_embeddings, **ids)


def build_model(
    arch: str,
    tokenizer: PreTrainedTokenizerFast,
    size: str = "tiny",
    seed: int = 0,
    *,
    vocab_size: int | None = None,
    tie_word_embeddings: bool = False,
) -> PreTrainedModel:
    """A randomly initialized model of ``arch`` at preset ``size``; the same seed gives the same weights.

    Its generation config stops at ``<|im_end|>`` or ``<|endoftext|>`` and
    pads with ``<|endoftext|>``; ``vocab_size`` and ``tie_word_embeddings``
    go to :func:`build_config`.
    """
    from transformers import AutoModelForImageTextToText, GenerationConfig

    config = build_config(arch, tokenizer, size, vocab_size=vocab_size, tie_word_embeddings=tie_word_embeddings)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def make_tiny(
    arch: str,
    out_dir: str | Path,
    *,
    size: str | None = None,
    seed: int = 0,
    vocab: str = "trained",
    extra_corpus: Iterable[str] = (),
    vocab_size: int = 2048,
) -> Path:
    """Write a tiny random checkpoint of ``arch`` (model, processor, tokenizer, chat template) to ``out_dir``.

    ``vocab="trained"`` trains a small BPE (at most ``vocab_size`` tokens) on
    the built-in corpus plus ``extra_corpus``; ``vocab="qwen"`` uses Qwen's
    real vocabulary (needs the ``quicktok-v1`` package) with the family's
    added tokens, chat template and 151,936 tied embedding rows, as the
    small real checkpoints have. ``size`` defaults to ``DEFAULT_SIZE[vocab]``.

    Returns ``out_dir``. A directory that already holds a complete checkpoint
    built with the same arguments is returned untouched. The files are
    written next to ``out_dir`` first and moved in, and ``vigos_tiny.json``
    records the arguments, so an interrupted build is rebuilt next time.
    A directory holding files that ``make_tiny`` did not write is refused.
    """
    _check(arch, "arch", ARCHS)
    _check(vocab, "vocab", VOCABS)
    size = size or DEFAULT_SIZE[vocab]
    _check(size, "size", tuple(SIZES))
    out = Path(out_dir)
    extra = list(extra_corpus)
    recipe: dict[str, Any] = {"builder": _BUILDER_VERSION, "arch": arch, "size": size, "seed": seed, "vocab": vocab}
    if arch not in QWEN_ARCHS:
        if vocab != "trained":
            raise ValueError(
                f"vocab={vocab!r} is Qwen's real vocabulary, for the Qwen families only; arch {arch!r} takes "
                "vocab='trained'"
            )
        from vigos.models.tiny_families import FAMILY_BUILDER_VERSION

        recipe["family_builder"] = FAMILY_BUILDER_VERSION
    if vocab == "qwen":
        if extra or vocab_size != 2048:
            raise ValueError("extra_corpus and vocab_size shape the trained vocabulary; vocab='qwen' takes neither")
        from vigos.models.qwen_vocab import fingerprint

        recipe["qwen_vocab"] = fingerprint()
    else:
        corpus_hash = hashlib.sha256(json.dumps(extra).encode()).hexdigest()
        recipe.update(vocab_size=vocab_size, extra_corpus_sha256=corpus_hash)
    if _built_with(out) == recipe:
        return out
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} is a file; give a directory for the tiny checkpoint")
    if out.is_dir() and any(out.iterdir()) and not (out / _STAMP).exists():
        raise ValueError(f"out_dir {out} holds files that make_tiny did not write; give a new or empty directory")

    if arch not in QWEN_ARCHS:
        from vigos.models.tiny_families import build_family

        processor, model = build_family(
            arch, SIZES[size], seed, qwen_tokenizer=build_tokenizer, extra_corpus=extra, vocab_size=vocab_size
        )
    else:
        model_options: dict[str, Any] = {}
        if vocab == "qwen":
            from vigos.models.qwen_vocab import PADDED_VOCAB_SIZE, build_qwen_tokenizer

            tokenizer = build_qwen_tokenizer(arch)
            # Tied, as in the 2-4B real checkpoints: one 151,936-row matrix instead of two keeps the model small.
            model_options.update(vocab_size=PADDED_VOCAB_SIZE, tie_word_embeddings=True)
        else:
            tokenizer = build_tokenizer(extra, vocab_size=vocab_size)
        processor = build_processor(arch, tokenizer)
        model = build_model(arch, tokenizer, size, seed, **model_options)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        files = sorted(p.name for p in staging.iterdir())
        _write_stamp(out, {"recipe": recipe, "files": files, "complete": False})
        for name in files:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _write_stamp(out, {"recipe": recipe, "files": files, "complete": True})
    return out


def _built_with(out: Path) -> dict[str, Any] | None:
    """The recipe of the complete tiny checkpoint in ``out``, or None."""
    try:
        stamp = json.loads((out / _STAMP).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("complete") is not True:
        return None
    if not all((out / name).is_file() for name in stamp.get("files", [])) or not (out / "config.json").is_file():
        return None
    return stamp.get("recipe")


def _write_stamp(out: Path, stamp: dict[str, Any]) -> None:
    # Replaced in one step, so a reader never sees half a stamp.
    tmp = out / f".{_STAMP}.{os.getpid()}"
    tmp.write_text(json.dumps(stamp, indent=1))
    os.replace(tmp, out / _STAMP)


def _check(value: str, name: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(valid)}")
