"""Rollouts: sample the student's completions for a batch of examples.

A rollout takes the model and the examples and returns, for each example,
``num_samples`` completions as token ids (the tokens after the student
prompt's ``<description>`` pre-fill, up to and including the end-of-sequence
token). It knows nothing of teachers or losses. :class:`HFGenerateRollout`
samples from the Hugging Face model, by default with vigos's lean decode loop
(``sampler.py``), or with Hugging Face ``generate``; other engines implement
the same :class:`Rollout` protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from vigos.data.rows import Example
from vigos.models.families import QWEN_VISION_TOKENS, VISION_MARKER_ATTRIBUTES
from vigos.models.modeling import Context, collate_contexts, encode_image, end_token_ids, tokenize_prompt, unwrap
from vigos.prompts import PromptSpec, render_prompt, student_spec
from vigos.rollout.sampler import LeanDecoder, SamplingFilters, completion_ids, folded_linear

logger = logging.getLogger(__name__)

SAMPLERS = ("lean", "generate")


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings of a rollout (release: temperature 1.1, top-p 0.95, top-k 20)."""

    temperature: float = 1.1
    top_p: float = 0.95
    top_k: int = 20
    max_new_tokens: int = 4096
    num_samples: int = 1
    # End-of-sequence is forbidden before this many new tokens (benchmarks set it to max_new_tokens).
    min_new_tokens: int = 0


class Rollout(Protocol):
    """Samples completions: ``len(examples) * num_samples`` token-id lists, grouped by example."""

    def __call__(self, model: torch.nn.Module, examples: Sequence[Example]) -> list[list[int]]: ...


def student_contexts(processor: Any, examples: Sequence[Example], prompt: PromptSpec) -> list[Context]:
    """The student's prompt for each example (image + question, ``<description>`` pre-filled)."""
    contexts = []
    for example in examples:
        image = encode_image(processor, example.image)
        text = render_prompt(processor, prompt.text(example.question), prompt.prefill, image.count)
        contexts.append(Context(tokenize_prompt(processor, text, image), [], image))
    return contexts


class HFGenerateRollout:
    """Rollouts from a Hugging Face model (sampling; left-padded batch).

    ``sampler``: ``"lean"`` (default) prefills each distinct prompt once and
    decodes with vigos's own loop over the weights (:class:`LeanDecoder`),
    drawing the same tokens as ``generate`` for the same seed;
    ``"generate"`` calls Hugging Face ``generate`` on every sample's copy of
    the prompt. A model whose layout the lean loop does not cover, or whose
    LoRA layers cannot be folded (DoRA, LoRA bias), falls back to ``generate``.

    ``merge_lora`` (``generate`` only; the lean loop always folds LoRA into
    its weights): sample with the LoRA deltas folded into copies of the
    adapted weights (see `merged_lora`), which makes each decoding step one
    matmul per adapted layer instead of three; the model's own weights are
    left untouched.
    """

    def __init__(
        self,
        processor: Any,
        params: SamplingParams,
        prompt: PromptSpec | None = None,
        *,
        merge_lora: bool = True,
        sampler: str = "lean",
    ):
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        self.processor = processor
        self.params = params
        self.prompt = prompt or student_spec()
        self.merge_lora = merge_lora
        self.sampler = sampler
        tokenizer = processor.tokenizer
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_token_ids = end_token_ids(tokenizer)
        # A sampled image placeholder would make the next forward pass look for an image that is not there.
        self.suppressed_ids = vision_token_ids(processor)
        self._said_fallback = False

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, examples: Sequence[Example]) -> list[list[int]]:
        from accelerate.utils import extract_model_from_parallel

        generator = extract_model_from_parallel(model)
        prompts = student_contexts(self.processor, examples, self.prompt)
        device = next(generator.parameters()).device
        was_training = generator.training
        generator.eval()
        try:
            # The lean loop folds LoRA into its own copy of the weights; the prefill runs the model as it is.
            decoder = LeanDecoder.of(generator) if self.sampler == "lean" else None
            if self.sampler == "lean" and decoder is None and not self._said_fallback:
                logger.info(
                    "rollout_sampler 'lean' does not reproduce %s's decoder exactly; sampling with generate",
                    type(unwrap(generator)).__name__,
                )
                self._said_fallback = True
            if decoder is not None:
                tokens = decoder.sample(
                    self._batch(prompts, 1, device),
                    self.params.num_samples,
                    self.params.max_new_tokens,
                    self._filters(),
                    self.pad_token_id,
                )
                return completion_ids(tokens, self.eos_token_ids)
            with merged_lora(generator) if self.merge_lora else nullcontext(False):
                batch = self._batch(prompts, self.params.num_samples, device)
                output = generator.generate(
                    **batch,
                    do_sample=True,
                    temperature=self.params.temperature,
                    top_p=self.params.top_p,
                    top_k=self.params.top_k or None,
                    max_new_tokens=self.params.max_new_tokens,
                    min_new_tokens=self.params.min_new_tokens or None,
                    pad_token_id=self.pad_token_id,
                    eos_token_id=self.eos_token_ids,
                    suppress_tokens=self.suppressed_ids,
                    # Only the settings above: a checkpoint's own generation defaults (Qwen's ship a
                    # repetition penalty) must not change what the rollout samples.
                    repetition_penalty=1.0,
                )
        finally:
            generator.train(was_training)
        return completion_ids(output[:, batch["input_ids"].shape[1] :], self.eos_token_ids)

    def _batch(self, prompts: Sequence[Context], copies: int, device: torch.device) -> dict[str, Any]:
        contexts = [c for c in prompts for _ in range(copies)]
        batch = collate_contexts(contexts, pad_token_id=self.pad_token_id, padding_side="left")
        return {k: v.to(device) for k, v in batch.items()}

    def _filters(self) -> SamplingFilters:
        return SamplingFilters(
            temperature=self.params.temperature,
            top_k=self.params.top_k,
            top_p=self.params.top_p,
            min_new_tokens=self.params.min_new_tokens,
            eos_token_ids=tuple(self.eos_token_ids),
            suppressed_ids=tuple(self.suppressed_ids),
        )


def _folded_lora_layers(model: torch.nn.Module) -> list[tuple[torch.nn.Module, torch.Tensor]]:
    """Each LoRA linear layer with its folded weight, if every one can be folded exactly as PEFT
    computes it (`folded_linear`), else []."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
        from peft.utils.other import ModulesToSaveWrapper
    except ImportError:
        return []
    if not hasattr(model, "disable_adapter"):
        return []
    layers = []
    for module in model.modules():
        if isinstance(module, ModulesToSaveWrapper):
            return []  # switching the adapter off would also swap these back to their originals
        if not isinstance(module, LoraLinear):
            continue
        folded = None if module.merged or module.disable_adapters else folded_linear(module)
        if folded is None:
            return []
        layers.append((module, folded[0]))
    return layers


@contextmanager
def merged_lora(model: torch.nn.Module) -> Iterator[bool]:
    """Inside, a PEFT LoRA ``model`` computes with ``W + scale * B @ A`` as one weight per adapted layer.

    The merged weights are new tensors swapped in for the block; the
    original parameters (the adapter-off teacher's weights included) are
    put back untouched afterwards, never added to and subtracted from. This
    costs one extra copy of the adapted weights while it lasts. Yields
    whether anything was merged: models without LoRA, or with layers that
    cannot be folded exactly (DoRA, LoRA bias, sharded or placeholder
    weights, modules_to_save), run as they are.
    """
    with torch.no_grad():
        layers = _folded_lora_layers(model)
    if not layers:
        yield False
        return
    originals = [module.base_layer.weight for module, _ in layers]
    try:
        for module, weight in layers:
            module.base_layer.weight = torch.nn.Parameter(weight, requires_grad=False)
        with model.disable_adapter():
            yield True
    finally:
        for (module, _), weight in zip(layers, originals):
            module.base_layer.weight = weight


def vision_token_ids(processor: Any) -> list[int]:
    """Ids of the family's vision placeholder tokens, which a completion must never hold."""
    tokenizer = processor.tokenizer
    names = [*QWEN_VISION_TOKENS]
    names += [getattr(owner, a, None) for owner in (processor, tokenizer) for a in VISION_MARKER_ATTRIBUTES]
    unk = tokenizer.unk_token_id
    ids = {tokenizer.convert_tokens_to_ids(n) for n in names if isinstance(n, str)}
    ids |= {i for i in getattr(processor, "image_token_ids", None) or () if i is not None}
    return sorted(i for i in ids if i is not None and i != unk)
