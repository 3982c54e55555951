"""Tiny, randomly initialized checkpoints of the non-Qwen VLM families, built offline.

:func:`vigos.models.tiny.make_tiny` calls :func:`build_family` for the archs
in :data:`FAMILY_ARCHS`. Each family gets transformers' own model, config,
processor and image-processor classes, and a tokenizer laid out as the
family's real one (its vocabulary model, special tokens and their attribute
names, chat layout), trained locally on the built-in corpus. Only the sizes
and the vocabulary differ from the real checkpoints:

- ``gemma3``: Gemma3ForConditionalGeneration; a SentencePiece-style BPE with
  byte fallback (``GemmaTokenizer``); an image is a fixed 16 soft tokens.
- ``llava_onevision``: LlavaOnevisionForConditionalGeneration; the Qwen2-style
  tokenizer of :func:`vigos.models.tiny.build_tokenizer` plus ``<image>`` and
  ``<video>``; anyres tiling over small grid pinpoints.
- ``idefics3``: Idefics3ForConditionalGeneration laid out as SmolVLM-Instruct;
  a SmolLM2-style byte-level BPE; a large image is split into tiles plus a
  global view.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from vigos.models.tiny_corpus import builtin_corpus

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

FAMILY_ARCHS: tuple[str, ...] = ("gemma3", "llava_onevision", "idefics3")

# Bump when a family's built checkpoint changes for the same arguments, so cached directories are rebuilt.
FAMILY_BUILDER_VERSION = 1

# Gemma 3: the real vocabulary's named tokens; the template writes <start_of_image> where an image goes and
# the processor expands it to <start_of_image>, the soft tokens, <end_of_image>.
GEMMA_PAD, GEMMA_EOS, GEMMA_BOS, GEMMA_UNK, GEMMA_MASK = "<pad>", "<eos>", "<bos>", "<unk>", "<mask>"
START_OF_TURN, END_OF_TURN = "<start_of_turn>", "<end_of_turn>"
START_OF_IMAGE, END_OF_IMAGE, IMAGE_SOFT_TOKEN = "<start_of_image>", "<end_of_image>", "<image_soft_token>"
GEMMA_SPECIAL_TOKENS: tuple[str, ...] = (
    GEMMA_PAD,
    GEMMA_EOS,
    GEMMA_BOS,
    GEMMA_UNK,
    GEMMA_MASK,
    START_OF_TURN,
    END_OF_TURN,
    START_OF_IMAGE,
    END_OF_IMAGE,
    IMAGE_SOFT_TOKEN,
)
# The byte-fallback pieces, ordinary vocabulary entries as in SentencePiece.
GEMMA_BYTES: tuple[str, ...] = tuple(f"<0x{b:02X}>" for b in range(256))
# Gemma 3 folds a system message into the first user turn and calls the assistant "model".
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% set system = messages[0]['content'] if messages and messages[0]['role'] == 'system' else none %}"
    "{% for message in messages if message['role'] != 'system' %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if loop.first and system is not none %}"
    "{% if system is string %}{{ system | trim }}"
    "{% else %}{% for item in system if item['type'] == 'text' %}{{ item['text'] | trim }}{% endfor %}{% endif %}"
    # A literal newline right after a block tag would be trimmed (transformers renders with trim_blocks).
    "{{ '\\n\\n' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item or 'image_url' in item %}<start_of_image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
# A 64x64 image is an 8x8 grid of 8-pixel patches, average-pooled 2x2 into 16 soft tokens.
GEMMA_IMAGE_SIZE = 64
GEMMA_PATCH = 8
GEMMA_IMAGE_TOKENS = 16
# Gemma 3's local layers see a window of this many tokens; small, so that a rollout outgrows it.
GEMMA_SLIDING_WINDOW = 64


def gemma_tokenizer(corpus: Iterable[str] = (), vocab_size: int = 2048) -> PreTrainedTokenizerBase:
    """A Gemma-layout tokenizer trained on the built-in corpus plus ``corpus``: ``GemmaTokenizer``'s own class.

    A BPE over "▁"-joined words with byte fallback (``<0x00>``..``<0xFF>``),
    so any text without a literal "▁" round-trips exactly. ``<pad>``,
    ``<eos>``, ``<bos>``, ``<unk>``, ``<mask>`` take ids 0-4 as in Gemma;
    ``boi_token``, ``eoi_token`` and ``image_token`` are named as in Gemma 3's
    tokenizer config, which the processor reads. ``vocab_size`` bounds the
    vocabulary, the 266 special and byte tokens included.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import GemmaTokenizer

    fixed = GEMMA_SPECIAL_TOKENS + GEMMA_BYTES
    _check_vocab_size(vocab_size, len(fixed))
    trainer_model = Tokenizer(models.BPE(byte_fallback=True, unk_token=GEMMA_UNK))
    trainer_model.normalizer = normalizers.Replace(" ", "▁")
    # Words for training only: merges never join the end of one word to the "▁" that starts the next.
    trainer_model.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(fixed), show_progress=False)
    trainer_model.train_from_iterator(builtin_corpus() + list(corpus), trainer=trainer)
    trained = trainer_model.get_vocab()
    vocab = dict(sorted(trained.items(), key=lambda item: item[1]))
    merges = _bpe_merges(trainer_model)
    return GemmaTokenizer(
        vocab=vocab,
        merges=merges,
        add_bos_token=True,
        extra_special_tokens=[START_OF_TURN, END_OF_TURN],
        boi_token=START_OF_IMAGE,
        eoi_token=END_OF_IMAGE,
        image_token=IMAGE_SOFT_TOKEN,
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
        chat_template=GEMMA_CHAT_TEMPLATE,
    )


def gemma_processor(tokenizer: PreTrainedTokenizerBase) -> ProcessorMixin:
    """``Gemma3Processor`` with a 64x64 ``Gemma3ImageProcessor``: every image becomes 16 soft tokens."""
    from transformers import Gemma3ImageProcessor, Gemma3Processor

    image_processor = Gemma3ImageProcessor(
        size={"height": GEMMA_IMAGE_SIZE, "width": GEMMA_IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
        image_seq_length=GEMMA_IMAGE_TOKENS,
    )


def gemma_config(tokenizer: PreTrainedTokenizerBase, s: Mapping[str, int]) -> PreTrainedConfig:
    """``Gemma3Config`` at the size preset ``s`` (one of ``tiny.SIZES``): local (sliding) layers with a global
    one last, tied embeddings."""
    from transformers import Gemma3Config

    head_dim = s["hidden"] // s["heads"]
    layers = s["layers"]
    # Gemma 3 makes every sixth layer global; the last one is global here too, so each preset has both kinds.
    layer_types = [
        "full_attention" if (i + 1) % 6 == 0 or i == layers - 1 else "sliding_attention" for i in range(layers)
    ]
    text = dict(
        decoder_fields(s, tokenizer, bos_token_id=tokenizer.bos_token_id),
        head_dim=head_dim,
        # As in the real checkpoints, where the query scale is 1/sqrt(head_dim).
        query_pre_attn_scalar=head_dim,
        sliding_window=GEMMA_SLIDING_WINDOW,
        layer_types=layer_types,
    )
    vision = dict(_siglip(s), image_size=GEMMA_IMAGE_SIZE, patch_size=GEMMA_PATCH)
    return Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=GEMMA_IMAGE_TOKENS,
        boi_token_index=tokenizer.boi_token_id,
        eoi_token_index=tokenizer.eoi_token_id,
        image_token_index=tokenizer.image_token_id,
    )


# LLaVA-OneVision: Qwen2's tokenizer with the placeholders <image> and <video> added after its vocabulary.
LLAVA_IMAGE, LLAVA_VIDEO = "<image>", "<video>"
# The llava-onevision-qwen2 layout: "<|im_start|>role " then the images and videos, then each text item on a
# new line; no newline between turns.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }} "
    "{% if message['content'] is string %}{{ '\\n' + message['content'] }}"
    "{% else %}"
    "{% for item in message['content'] if item['type'] == 'image' or 'image' in item or 'image_url' in item %}"
    "<image>{% endfor %}"
    "{% for item in message['content'] if item['type'] == 'video' or 'video' in item %}<video>{% endfor %}"
    "{% for item in message['content'] if item['type'] == 'text' %}{{ '\\n' + item['text'] }}{% endfor %}"
    "{% endif %}<|im_end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# A 32x32 tile is a 4x4 grid of 8-pixel patches, 16 tokens; the pinpoints let an image span up to 3x3 tiles.
LLAVA_TILE = 32
LLAVA_PATCH = 8
LLAVA_TILE_TOKENS = (LLAVA_TILE // LLAVA_PATCH) ** 2
LLAVA_GRID_PINPOINTS: list[list[int]] = [
    [LLAVA_TILE * rows, LLAVA_TILE * cols] for rows in (1, 2, 3) for cols in (1, 2, 3)
]


def llava_tokenizer(base: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """``base`` (the Qwen2-style trained tokenizer) with ``<image>`` and ``<video>`` added as special tokens and
    named ``image_token`` / ``video_token``, as LLaVA-OneVision's tokenizer has them, and its chat template."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    backend = base.backend_tokenizer
    backend.add_special_tokens([AddedToken(token, special=True) for token in (LLAVA_IMAGE, LLAVA_VIDEO)])
    options = {name: value for name, value in base.init_kwargs.items() if name not in ("backend", "chat_template")}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        **options,
        image_token=LLAVA_IMAGE,
        video_token=LLAVA_VIDEO,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )


def llava_processor(tokenizer: PreTrainedTokenizerBase) -> ProcessorMixin:
    """``LlavaOnevisionProcessor`` over 32x32 tiles: the base image plus anyres tiles for a single image, the
    base image alone (and a newline token) for each of several images."""
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    tile = {"height": LLAVA_TILE, "width": LLAVA_TILE}
    siglip = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=tile, image_grid_pinpoints=LLAVA_GRID_PINPOINTS, **siglip),
        video_processor=LlavaOnevisionVideoProcessor(size=tile, **siglip),
        tokenizer=tokenizer,
        num_image_tokens=LLAVA_TILE_TOKENS,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=tokenizer.chat_template,
    )


def llava_config(tokenizer: PreTrainedTokenizerBase, s: Mapping[str, int]) -> PreTrainedConfig:
    """``LlavaOnevisionConfig`` at the size preset ``s``: a SigLIP tower and a Qwen2 language model."""
    from transformers import LlavaOnevisionConfig

    # Qwen's bos is <|endoftext|>, as in the Qwen families.
    text = dict(decoder_fields(s, tokenizer, bos_token_id=tokenizer.pad_token_id), model_type="qwen2")
    vision = dict(_siglip(s), image_size=LLAVA_TILE, patch_size=LLAVA_PATCH)
    return LlavaOnevisionConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=tokenizer.image_token_id,
        video_token_index=tokenizer.video_token_id,
        image_grid_pinpoints=LLAVA_GRID_PINPOINTS,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
    )


# Idefics3 as SmolVLM-Instruct: SmolLM2's first tokens, then the image tokens added after the vocabulary.
SMOL_ENDOFTEXT, SMOL_IM_START, SMOL_IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
END_OF_UTTERANCE, FAKE_IMAGE, IDEFICS_IMAGE, GLOBAL_IMAGE = (
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
)
# The tile tags the processor writes before each tile: it names up to 6 rows by 6 columns.
IDEFICS_TILE_TOKENS: tuple[str, ...] = tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))
IDEFICS_ADDED_TOKENS: tuple[str, ...] = (
    FAKE_IMAGE,
    IDEFICS_IMAGE,
    END_OF_UTTERANCE,
    GLOBAL_IMAGE,
) + IDEFICS_TILE_TOKENS
# SmolVLM's layout: one <|im_start|> opens the conversation; "Role:" before an image, "Role: " before text.
IDEFICS_CHAT_TEMPLATE = (
    "<|im_start|>"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}{{ ':' if message['content'] and message['content'][0]['type'] == 'image' else ': ' }}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item or 'image_url' in item %}<image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
# A 32x32 tile is a 4x4 grid of 8-pixel patches, shuffled 2x2 into 4 tokens; images are resized to at most
# 96 pixels on the longest edge, so a large one becomes up to 3x3 tiles plus the global view.
IDEFICS_TILE = 32
IDEFICS_PATCH = 8
IDEFICS_SCALE = 2
IDEFICS_TILE_TOKENS_COUNT = (IDEFICS_TILE // IDEFICS_PATCH) ** 2 // IDEFICS_SCALE**2
IDEFICS_LONGEST_EDGE = 3 * IDEFICS_TILE


def idefics_tokenizer(corpus: Iterable[str] = (), vocab_size: int = 2048) -> PreTrainedTokenizerBase:
    """A SmolLM2-layout byte-level BPE (single digits, GPT-2's split) trained on the built-in corpus plus
    ``corpus``, with SmolVLM's image and turn tokens added after the trained vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    base = (SMOL_ENDOFTEXT, SMOL_IM_START, SMOL_IM_END)
    _check_vocab_size(vocab_size, 256 + len(base))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(base),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(builtin_corpus() + list(corpus), trainer=trainer)
    tokenizer.add_special_tokens([AddedToken(token, special=True) for token in IDEFICS_ADDED_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=SMOL_IM_START,
        eos_token=END_OF_UTTERANCE,
        pad_token=SMOL_IM_END,
        unk_token=SMOL_ENDOFTEXT,
        extra_special_tokens=[t for t in IDEFICS_ADDED_TOKENS if t != END_OF_UTTERANCE],
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
        chat_template=IDEFICS_CHAT_TEMPLATE,
    )


def idefics_processor(tokenizer: PreTrainedTokenizerBase) -> ProcessorMixin:
    """``Idefics3Processor`` with image splitting on: a 32x32 tile is 4 image tokens."""
    from transformers import Idefics3ImageProcessor, Idefics3Processor

    image_processor = Idefics3ImageProcessor(
        do_image_splitting=True,
        size={"longest_edge": IDEFICS_LONGEST_EDGE},
        max_image_size={"longest_edge": IDEFICS_TILE},
    )
    return Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=IDEFICS_TILE_TOKENS_COUNT,
        chat_template=tokenizer.chat_template,
    )


def idefics_config(tokenizer: PreTrainedTokenizerBase, s: Mapping[str, int]) -> PreTrainedConfig:
    """``Idefics3Config`` at the size preset ``s``: a SigLIP-style tower, pixel shuffle, a Llama model."""
    from transformers import Idefics3Config

    text = dict(decoder_fields(s, tokenizer, bos_token_id=tokenizer.bos_token_id), model_type="llama")
    vision = dict(_siglip(s), model_type="idefics3_vision", image_size=IDEFICS_TILE, patch_size=IDEFICS_PATCH)
    return Idefics3Config(
        text_config=text,
        vision_config=vision,
        scale_factor=IDEFICS_SCALE,
        image_token_id=tokenizer.convert_tokens_to_ids(IDEFICS_IMAGE),
        pad_token_id=tokenizer.pad_token_id,
    )


_BUILDERS: dict[str, tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]] = {
    "gemma3": (gemma_tokenizer, gemma_processor, gemma_config),
    "llava_onevision": (llava_tokenizer, llava_processor, llava_config),
    "idefics3": (idefics_tokenizer, idefics_processor, idefics_config),
}
# The tokens that end a reply, per family, first the one its chat template closes a turn with.
_STOPS = {
    "gemma3": (END_OF_TURN, GEMMA_EOS),
    "llava_onevision": ("<|im_end|>", "<|endoftext|>"),
    "idefics3": (END_OF_UTTERANCE, SMOL_ENDOFTEXT),
}


def build_family(
    arch: str,
    preset: Mapping[str, int],
    seed: int = 0,
    *,
    qwen_tokenizer: Callable[[list[str], int], PreTrainedTokenizerBase],
    extra_corpus: Iterable[str] = (),
    vocab_size: int = 2048,
) -> tuple[ProcessorMixin, PreTrainedModel]:
    """(processor, model) of ``arch`` at the size preset ``preset`` (one of ``tiny.SIZES``).

    The tokenizer is trained on the built-in corpus plus ``extra_corpus``,
    at most ``vocab_size`` tokens before the family's added ones;
    ``llava_onevision`` starts from ``qwen_tokenizer(extra_corpus,
    vocab_size)`` (``tiny.build_tokenizer``, passed in so that this module
    does not import its caller). The same seed gives the same weights. The
    model's generation config stops at the end of a turn or of the text.
    """
    from transformers import AutoModelForImageTextToText, GenerationConfig

    if arch not in _BUILDERS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(FAMILY_ARCHS)}")
    make_tokenizer, make_processor, make_config = _BUILDERS[arch]
    corpus = list(extra_corpus)
    if arch == "llava_onevision":
        tokenizer = make_tokenizer(qwen_tokenizer(corpus, vocab_size))
    else:
        tokenizer = make_tokenizer(corpus, vocab_size)
    processor = make_processor(tokenizer)
    config = make_config(tokenizer, preset)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    stops = [tokenizer.convert_tokens_to_ids(token) for token in _STOPS[arch]]
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id
    )
    return processor, model


def decoder_fields(
    s: Mapping[str, int], tokenizer: PreTrainedTokenizerBase, bos_token_id: int, vocab_size: int | None = None
) -> dict[str, Any]:
    """A language model's size fields at a preset, with the tokenizer's eos/pad ids and its vocabulary
    (``vocab_size`` embedding rows, default ``len(tokenizer)``)."""
    return dict(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=s["hidden"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        intermediate_size=s["intermediate"],
        max_position_embeddings=32768,
        bos_token_id=bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _siglip(s: Mapping[str, int]) -> dict[str, Any]:
    """A SigLIP vision tower's size fields at a preset (image and patch size are the family's)."""
    return dict(
        model_type="siglip_vision_model",
        hidden_size=s["vision_hidden"],
        num_hidden_layers=s["vision_depth"],
        num_attention_heads=s["vision_heads"],
        intermediate_size=s["vision_intermediate"],
    )


def _bpe_merges(tokenizer: Any) -> list[tuple[str, str]]:
    """The merges of a trained ``tokenizers`` BPE, in rank order."""
    return [tuple(pair) for pair in json.loads(tokenizer.to_str())["model"]["merges"]]


def _check_vocab_size(vocab_size: int, fixed: int) -> None:
    # The trainer silently returns only the fixed tokens below this; say so instead.
    if vocab_size <= fixed:
        raise ValueError(
            f"vocab_size {vocab_size} is too small: the family's special and byte tokens alone take {fixed}; "
            "use more (2048 is the default)"
        )
