"""Rollouts: sample the student's completions for a batch of examples.

A rollout takes the model and the examples and returns, for each example,
``num_samples`` completions as token ids (the tokens after the student
prompt's ``<description>`` pre-fill, up to and including the end-of-sequence
token). It knows nothing of teachers or losses. :class:`HFGenerateRollout`
samples with Hugging Face ``generate``; other engines implement the same
:class:`Rollout` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch

from .data import Example
from .modeling import Context, collate_contexts, encode_image, image_token_id, tokenize_prompt
from .prompts import DESCRIPTION_OPEN, STUDENT_PROMPT, PromptSpec, render_prompt


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings of a rollout (release: temperature 1.1, top-p 0.95, top-k 20)."""

    temperature: float = 1.1
    top_p: float = 0.95
    top_k: int = 20
    max_new_tokens: int = 4096
    num_samples: int = 1


class Rollout(Protocol):
    """Samples completions: ``len(examples) * num_samples`` token-id lists, grouped by example."""

    def __call__(self, model: torch.nn.Module, examples: Sequence[Example]) -> list[list[int]]: ...


def student_contexts(processor: Any, examples: Sequence[Example], prompt: PromptSpec) -> list[Context]:
    """The student's prompt for each example (image + question, ``<description>`` pre-filled)."""
    contexts = []
    for example in examples:
        image = encode_image(processor, example.image)
        text = render_prompt(processor, prompt.text(example.question), prompt.prefill)
        contexts.append(Context(tokenize_prompt(processor, text, image), [], image))
    return contexts


class HFGenerateRollout:
    """Rollouts with Hugging Face ``generate`` (sampling; left-padded batch)."""

    def __init__(self, processor: Any, params: SamplingParams, prompt: PromptSpec | None = None):
        self.processor = processor
        self.params = params
        self.prompt = prompt or PromptSpec(STUDENT_PROMPT, DESCRIPTION_OPEN)
        tokenizer = processor.tokenizer
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_token_ids = sorted({i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None})
        # A sampled image placeholder would make the next forward pass look for an image that is not there.
        self.suppressed_ids = vision_token_ids(processor)

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, examples: Sequence[Example]) -> list[list[int]]:
        from accelerate.utils import extract_model_from_parallel

        generator = extract_model_from_parallel(model)
        contexts = [c for c in student_contexts(self.processor, examples, self.prompt) for _ in range(self.params.num_samples)]
        batch = collate_contexts(
            contexts, pad_token_id=self.pad_token_id, image_token=image_token_id(self.processor), padding_side="left"
        )
        device = next(generator.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        was_training = generator.training
        generator.eval()
        try:
            output = generator.generate(
                **batch,
                do_sample=True,
                temperature=self.params.temperature,
                top_p=self.params.top_p,
                top_k=self.params.top_k or None,
                max_new_tokens=self.params.max_new_tokens,
                pad_token_id=self.pad_token_id,
                eos_token_id=self.eos_token_ids,
                suppress_tokens=self.suppressed_ids,
            )
        finally:
            generator.train(was_training)
        new_tokens = output[:, batch["input_ids"].shape[1] :].tolist()
        return [_until_eos(ids, self.eos_token_ids) for ids in new_tokens]


def vision_token_ids(processor: Any) -> list[int]:
    """Ids of the family's vision placeholder tokens, which a completion must never hold."""
    tokenizer = processor.tokenizer
    names = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", processor.image_token)
    unk = tokenizer.unk_token_id
    return sorted({i for i in (tokenizer.convert_tokens_to_ids(n) for n in names) if i is not None and i != unk})


def _until_eos(ids: list[int], eos_token_ids: Sequence[int]) -> list[int]:
    for index, token in enumerate(ids):
        if token in eos_token_ids:
            return ids[: index + 1]
    return ids
