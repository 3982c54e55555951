"""Model-side plumbing shared by rollouts, teachers and the student pass.

* encode a context (prompt text + image + appended token ids) into model
  inputs, processing each image once and reusing it for every context;
* run each image through the vision tower once and hand the features to
  every forward pass that shows it, when the tower is frozen;
* run a forward pass that keeps the final hidden states rather than logits
  (the loss projects them through the output head chunk by chunk);
* find the output head and the underlying Hugging Face model through
  Accelerate and PEFT wrappers.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from vigos.models.families import END_OF_TURN_TOKENS


@dataclass
class EncodedImage:
    """The image input of one context after the processor: one image or a row's several, in order.

    ``inputs`` holds the processor's image tensors for these images
    (Qwen-VL: ``pixel_values`` and ``image_grid_thw``; Gemma 3: ``pixel_values``;
    LLaVA-OneVision: ``pixel_values``, ``image_sizes``; Idefics3/SmolVLM:
    ``pixel_values``, ``pixel_attention_mask``). ``placeholders[i]`` is the text
    the processor puts in place of image ``i``'s placeholder in the prompt
    (a run of image tokens, with the family's begin/end and tile markers), and
    ``tokens_per_image[i]`` how many image-feature tokens it holds.
    ``token_types`` names the token-type field the model reads (Qwen-VL's
    ``mm_token_type_ids``, Gemma 3's ``token_type_ids``) and the token ids
    marked 1 in it, as the processor marks them; None for families without one.
    """

    inputs: dict[str, Any]
    placeholders: tuple[str, ...]
    tokens_per_image: tuple[int, ...]
    token_types: tuple[str, tuple[int, ...]] | None = None

    @property
    def count(self) -> int:
        """How many images."""
        return len(self.tokens_per_image)

    @property
    def num_tokens(self) -> int:
        """Image-feature tokens all the images take in the text."""
        return sum(self.tokens_per_image)

    @property
    def pixel_values(self) -> torch.Tensor:
        """The processed pixels, laid out as the family's model takes them."""
        return self.inputs["pixel_values"]

    @property
    def image_grid_thw(self) -> torch.Tensor | None:
        """Qwen-VL's patch grid per image [images, 3]; None in other families."""
        return self.inputs.get("image_grid_thw")


# Processor outputs that belong to the text, not to the images.
_TEXT_FIELDS = frozenset(
    {"input_ids", "attention_mask", "text_replacement_offsets", "mm_token_type_ids", "token_type_ids"}
)
_TOKEN_TYPE_FIELDS = ("mm_token_type_ids", "token_type_ids")


def encode_image(processor: Any, image: Image.Image | Sequence[Image.Image]) -> EncodedImage:
    """Run the processor on one image or on a row's images (a list, kept in order).

    The processor is asked for a prompt of bare placeholders, so that what it
    returns (pixels, each image's expanded placeholder text, the token types it
    marks) is the family's own; prompts are then expanded with
    :func:`tokenize_prompt` as the processor would expand them.
    """
    images = list(image) if isinstance(image, (list, tuple)) else [image]
    out = processor(
        images=[images],
        text=[processor.image_token * len(images)],
        return_text_replacement_offsets=True,
        return_tensors="pt",
    )
    placeholders = tuple(o["replacement"] for o in out["text_replacement_offsets"][0])
    feature = image_token_id(processor)
    encode = processor.tokenizer
    tokens = tuple(encode(p, add_special_tokens=False)["input_ids"].count(feature) for p in placeholders)
    field = next((f for f in _TOKEN_TYPE_FIELDS if f in out and f in processor.model_input_names), None)
    token_types = None
    if field is not None:
        marked = out["input_ids"][0][out[field][0] == 1]
        token_types = (field, tuple(sorted({int(i) for i in marked})))
    inputs = {k: v for k, v in out.items() if k not in _TEXT_FIELDS}
    return EncodedImage(inputs, placeholders, tokens, token_types)


def end_token_ids(tokenizer: Any) -> list[int]:
    """The ids that end a completion: the tokenizer's EOS and pad, and its family's end-of-turn token
    (Qwen's ``<|im_end|>`` and ``<|endoftext|>``; Gemma's ``<end_of_turn>``, ``<eos>`` and ``<pad>``). The one
    definition the samplers, the vLLM paths, the server and the span parser use."""
    unknown = tokenizer.unk_token_id
    turn = [i for i in map(tokenizer.convert_tokens_to_ids, END_OF_TURN_TOKENS) if i is not None and i != unknown]
    return sorted({int(i) for i in (tokenizer.eos_token_id, tokenizer.pad_token_id, *turn) if i is not None})


def image_token_id(processor: Any) -> int:
    """Id of the token that stands for one image feature in the model's input (Qwen-VL's ``<|image_pad|>``,
    Gemma 3's ``<image_soft_token>``, LLaVA's and Idefics3's ``<image>``): repeated once per feature."""
    ids = [i for i in getattr(processor, "image_token_ids", None) or () if i is not None]
    if ids:
        return int(ids[0])
    return int(processor.tokenizer.convert_tokens_to_ids(processor.image_token))


def tokenize_prompt(processor: Any, prompt: str, image: EncodedImage | None) -> list[int]:
    """Token ids of a rendered prompt, each image placeholder expanded to its image's text, as the processor does.

    The whole expanded text is tokenized at once, so tokens merge across the
    expansion's edges exactly as they do in the processor (Gemma 3's
    expansion begins and ends with blank lines).
    """
    if image is not None:
        token = processor.image_token
        pieces = prompt.split(token)
        if len(pieces) - 1 != image.count:
            raise ValueError(
                f"expected {image.count} image placeholder(s) {token!r} in the prompt, found {len(pieces) - 1}"
            )
        prompt = pieces[0] + "".join(text + piece for text, piece in zip(image.placeholders, pieces[1:]))
    return processor.tokenizer(prompt, add_special_tokens=False)["input_ids"]


@dataclass
class Context:
    """One sequence for a forward pass: prompt ids, then appended ids (a completion or part of one)."""

    prompt_ids: list[int]
    appended_ids: list[int]
    image: EncodedImage | None

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.appended_ids)


@dataclass
class ImageFeatures:
    """Vision-tower outputs of some images, computed once and shared by every context showing one of them."""

    encoded: Any  # the model's get_image_features output: per-image pooler_output (and deepstack_features)
    position: dict[int, list[int]]  # id(EncodedImage) -> the indices of its images in ``encoded``

    def select(self, images: Sequence[EncodedImage]) -> dict[str, Any]:
        """``mm_encoder_outputs`` for a batch showing ``images`` in this order."""
        order = [i for image in images for i in self.position[id(image)]]
        pooled = self.encoded.pooler_output
        picked = [pooled[i] for i in order]
        # Qwen-VL and LLaVA-OneVision take a sequence of per-image features, Gemma 3 one [images, tokens, H] tensor.
        fields: dict[str, Any] = {"pooler_output": torch.stack(picked) if torch.is_tensor(pooled) else tuple(picked)}
        deepstack = getattr(self.encoded, "deepstack_features", None)
        if deepstack is not None:
            fields["deepstack_features"] = [tuple(layer[i] for i in order) for layer in deepstack]
        return {"image": type(self.encoded)(**fields)}


def _vision_parts(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules that turn pixels into the features the decoder reads: the vision tower and, where it stands
    apart, the projector (Qwen-VL's merger is inside ``visual``). Empty for a model without ``visual`` or
    ``vision_tower``."""
    inner = getattr(unwrap(model), "model", None)
    tower = getattr(inner, "visual", None) or getattr(inner, "vision_tower", None)
    if tower is None:
        return []
    projector = getattr(inner, "multi_modal_projector", None)
    return [tower] if projector is None else [tower, projector]


def takes_image_features(model: torch.nn.Module) -> bool:
    """Whether the model can run on precomputed vision features instead of pixels (Qwen-VL, Gemma 3,
    LLaVA-OneVision: a forward pass that takes ``mm_encoder_outputs``)."""
    core = unwrap(model)
    inner = getattr(core, "model", None)
    return (
        bool(_vision_parts(model))
        and hasattr(core, "get_image_features")
        and "mm_encoder_outputs" in inspect.signature(inner.forward).parameters
    )


def image_features_reusable(model: torch.nn.Module) -> bool:
    """Whether one vision encode can serve every pass over an image, the student's included: the
    model takes precomputed features and its vision tower and projector have nothing trained and no
    dropout, so every teacher's and the student's compute the same function."""
    if not takes_image_features(model):
        return False
    modules = [m for part in _vision_parts(model) for m in part.modules()]
    frozen = not any(p.requires_grad for m in modules for p in m.parameters(recurse=False))
    return frozen and not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in modules)


@torch.no_grad()
def encode_image_features(model: torch.nn.Module, images: Sequence[EncodedImage]) -> ImageFeatures | None:
    """Run ``images`` (distinct objects) through the vision tower in one batch; None when the model's features
    do not come one per image (Gemma 3's pan-and-scan crops), so that every pass encodes its own."""
    core = unwrap(model)
    device = next(core.parameters()).device
    accepted = inspect.signature(core.get_image_features).parameters
    inputs = {k: v.to(device) for k, v in _image_inputs(images).items() if k in accepted}
    encoded = core.get_image_features(**inputs, return_dict=True)
    if len(encoded.pooler_output) != sum(image.count for image in images):
        return None
    position, start = {}, 0
    for image in images:
        position[id(image)] = list(range(start, start + image.count))
        start += image.count
    return ImageFeatures(encoded, position)


def collate_contexts(
    contexts: Sequence[Context],
    *,
    pad_token_id: int,
    padding_side: str = "right",
    image_features: ImageFeatures | None = None,
) -> dict[str, Any]:
    """Pad contexts into one batch of model inputs.

    Right padding keeps every row's prompt at the same offsets as when it was
    built, which is what the loss's position arithmetic relies on; generation
    takes left padding. With ``image_features`` the batch carries the
    precomputed vision features (``mm_encoder_outputs``) instead of pixels.
    """
    width = max(c.length for c in contexts)
    input_ids = torch.full((len(contexts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(contexts), width), dtype=torch.long)
    for row, context in enumerate(contexts):
        ids = torch.tensor(context.prompt_ids + context.appended_ids, dtype=torch.long)
        where = slice(0, len(ids)) if padding_side == "right" else slice(width - len(ids), width)
        input_ids[row, where] = ids
        attention_mask[row, where] = 1
    batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    images = [c.image for c in contexts if c.image is not None]
    if images:
        batch.update(_image_inputs([c.image for c in contexts]))
        if image_features is not None:
            del batch["pixel_values"]
            batch["mm_encoder_outputs"] = image_features.select(images)
        if images[0].token_types is not None:
            field, marked = images[0].token_types
            batch[field] = torch.isin(input_ids, torch.tensor(marked)).long() * attention_mask
    return batch


def _padded(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``tensors`` zero-padded at the end of every dimension but the first to the largest size among them."""
    shape = [max(sizes) for sizes in zip(*(t.shape for t in tensors))]
    out = []
    for t in tensors:
        pad = [p for size, full in zip(reversed(t.shape[1:]), reversed(shape[1:])) for p in (0, full - size)]
        out.append(torch.nn.functional.pad(t, pad) if any(pad) else t)
    return out


def _image_inputs(images: Sequence[EncodedImage | None]) -> dict[str, Any]:
    """The image fields of a batch whose rows show ``images`` (None: a row without one).

    Most families take every image of the batch in one sequence, in order
    (Qwen-VL's patches, Gemma 3's and LLaVA-OneVision's pictures, the latter
    padded to the largest tile count as its processor pads them). Families
    whose processor lays images out per prompt (Idefics3/SmolVLM, which also
    return a ``pixel_attention_mask``) get one row per context, padded with
    all-zero images, which their model drops as padding.
    """
    shown = [i for i in images if i is not None]
    fields = [k for k, v in shown[0].inputs.items() if isinstance(v, torch.Tensor) and k != "batch_num_images"]
    if "pixel_attention_mask" in shown[0].inputs:
        out = {}
        for key in fields:
            template = shown[0].inputs[key]
            rows = [i.inputs[key] if i is not None else template.new_zeros((1, 0, *template.shape[2:])) for i in images]
            out[key] = torch.cat(_padded(rows))
        return out
    out = {key: torch.cat(_padded([i.inputs[key] for i in shown])) for key in fields}
    if "batch_num_images" in shown[0].inputs:
        # LLaVA-OneVision tiles a lone image (anyres) but not the images of a several-image prompt.
        out["batch_num_images"] = torch.tensor([i.count if i is not None else 0 for i in images])
    return out


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model under DDP/FSDP/compile wrappers and PEFT (LoRA layers stay in place)."""
    from accelerate.utils import extract_model_from_parallel

    model = extract_model_from_parallel(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def output_head(model: torch.nn.Module) -> torch.Tensor:
    """The output projection weight [V, H] (under DeepSpeed ZeRO-3, a partitioned placeholder:
    read it inside `gathered_output_head`)."""
    return unwrap(model).get_output_embeddings().weight


def output_head_shape(model: torch.nn.Module) -> torch.Size:
    """[V, H] of the output head, also while ZeRO-3 holds it partitioned (its own shape is then [0])."""
    weight = output_head(model)
    return getattr(weight, "ds_shape", weight.shape)


@contextmanager
def gathered_output_head(model: torch.nn.Module, *, needed_in_backward: bool = False) -> Iterator[torch.Tensor]:
    """The output head [V, H], whole for the duration of the block.

    The loss projects final hidden states through the head outside the
    model's forward pass, where DeepSpeed ZeRO-3 leaves the weight
    partitioned (an empty placeholder, marked by its ``ds_id``). Inside the
    block it is gathered with ``deepspeed.zero.GatheredParameters`` for reading
    only (``modifier_rank=None``); every process must enter the block, as the
    gather is collective. Without ZeRO-3 this yields the weight as it is.

    The weight is partitioned again when the block ends, so nothing may need
    it in the backward pass: the chunked loss computes its gradients inside
    its forward and keeps none of the head, which is what makes this enough.
    A trained head (its gradient would be a dense [V, H] tensor that ZeRO-3
    does not expect from outside a module's forward) and callers whose
    backward reads the head (``needed_in_backward``: the unchunked autograd
    loss) are refused under ZeRO-3 with an error saying what to use instead.
    """
    weight = output_head(model)
    if not hasattr(weight, "ds_id"):
        yield weight
        return
    if weight.requires_grad or needed_in_backward:
        why = (
            "the output head is trained (its gradient would come from outside ZeRO-3's hooks)"
            if weight.requires_grad
            else "loss_chunk_size is None (that loss reads the head again in the backward pass, after ZeRO-3 "
            "has partitioned it)"
        )
        raise ValueError(
            f"DeepSpeed ZeRO-3 cannot run this loss: {why}. Train with LoRA (the head stays frozen) and a "
            "loss_chunk_size, or use ZeRO-2 or FSDP."
        )
    import deepspeed

    with deepspeed.zero.GatheredParameters([weight], modifier_rank=None):
        yield weight


def _final_norm(model: torch.nn.Module) -> torch.nn.Module:
    return language_model(model).norm


def language_model(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder stack under the VLM (``language_model`` in most families, Idefics3's ``text_model``)."""
    core = unwrap(model).model
    return getattr(core, "language_model", None) or getattr(core, "text_model", None) or core


@contextmanager
def _capture_output(module: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        yield captured
    finally:
        handle.remove()


def final_hidden_states(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """Final (post-norm) hidden states [B, L, H] of a forward pass, without full logits.

    The pass goes through the outermost wrapper (so DDP/FSDP see their
    forward) and asks for the logits of one position only; the hidden states
    come from a hook on the decoder's final norm.
    """
    with _capture_output(_final_norm(model)) as captured:
        model(**batch, logits_to_keep=1, use_cache=False)
    return captured[-1]
