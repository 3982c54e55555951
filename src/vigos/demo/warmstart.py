"""A short supervised warm start, so a tiny model can play student and teachers.

Self-distillation needs a model that already has three abilities (issue #4):
speak the output format from the student prompt, describe an image when shown
only the image (the perception teacher), and use a reference answer placed in
its prompt (the reasoning and reference teachers). This stage teaches exactly
those, with teacher forcing on targets built from the synthetic world's
ground truth, then saves a full checkpoint that both OPSD and ViGOS start from.
:func:`check_abilities` measures afterwards whether each ability is there.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vigos import prompts
from vigos.data.rows import Example
from vigos.data.synthetic import OBJECT_KINDS, mentions_attribute
from vigos.grading.answers import extract_boxed
from vigos.models.modeling import (
    Context,
    collate_contexts,
    encode_image,
    final_hidden_states,
    output_head,
    tokenize_prompt,
)
from vigos.rollout.hf import HFGenerateRollout, SamplingParams


@dataclass(frozen=True)
class WarmStartItem:
    """One supervised pair: a prompt (template + pre-fill) and the target the model should write."""

    image: Any
    user_text: str
    prefill: str
    target: str


ABILITIES = ("student", "perception", "reasoning", "reference")
# The abilities' key of the perception role checked on images it was taught on, beside the fresh ones.
TAUGHT_PERCEPTION = "perception_taught"


def warm_start_items(
    examples: Sequence[Any], target_of: Callable[[Any], str], abilities: Sequence[str] = ABILITIES
) -> list[WarmStartItem]:
    """Supervised items for each example and ability; ``target_of`` gives the ideal completion after
    ``<description>``. The abilities: the student's format (``student``), describing an image shown
    alone (``perception``), and using a reference answer in the prompt (``reasoning``, ``reference``)."""
    unknown = set(abilities) - set(ABILITIES)
    if unknown:
        raise ValueError(f"unknown abilities {sorted(unknown)}; choose from {', '.join(ABILITIES)}")
    items = []
    for example in examples:
        target = target_of(example)
        description, _, rest = target.partition(prompts.DESCRIPTION_CLOSE)
        reasoning = rest.partition(prompts.THINK_OPEN)[2]
        with_answer = dict(question=example.question, answer=example.answer)
        by_ability = {
            "student": (
                prompts.render_template(prompts.STUDENT_PROMPT, question=example.question),
                prompts.DESCRIPTION_OPEN,
                target,
            ),
            # Each teacher is taught in the context it is scored in (teachers.vigos_terms): the perception
            # teacher sees the image alone, the reasoning teacher writes from <think> on.
            "perception": (
                prompts.PERCEPTION_PROMPT,
                prompts.PERCEPTION_PREFILL,
                description + prompts.DESCRIPTION_CLOSE,
            ),
            "reasoning": (
                prompts.render_template(prompts.REASONING_PROMPT, **with_answer),
                "",
                prompts.THINK_OPEN + reasoning,
            ),
            "reference": (
                prompts.render_template(prompts.REFERENCE_PROMPT, **with_answer),
                prompts.DESCRIPTION_OPEN,
                target,
            ),
        }
        items += [WarmStartItem(example.image, *by_ability[ability]) for ability in abilities]
    return items


def _encode(processor: Any, item: WarmStartItem, cache: dict[int, Any]) -> Context:
    if id(item.image) not in cache:
        cache[id(item.image)] = encode_image(processor, item.image)
    image = cache[id(item.image)]
    prompt = tokenize_prompt(
        processor, prompts.render_prompt(processor, item.user_text, item.prefill, image.count), image
    )
    target = processor.tokenizer(item.target, add_special_tokens=False)["input_ids"] + [
        processor.tokenizer.eos_token_id
    ]
    return Context(prompt, target, image)


def supervised_loss(model: torch.nn.Module, processor: Any, contexts: Sequence[Context]) -> torch.Tensor:
    """Mean next-token cross-entropy over the appended (target) tokens of ``contexts``."""
    tokenizer = processor.tokenizer
    batch = collate_contexts(contexts, pad_token_id=tokenizer.pad_token_id)
    device = next(model.parameters()).device
    hidden = final_hidden_states(model, {k: v.to(device) for k, v in batch.items()})
    rows, cols, labels = [], [], []
    for row, context in enumerate(contexts):
        start = len(context.prompt_ids)
        for j, token in enumerate(context.appended_ids):
            rows.append(row)
            cols.append(start + j - 1)
            labels.append(token)
    logits = hidden[torch.tensor(rows), torch.tensor(cols)] @ output_head(model).T
    return F.cross_entropy(logits.float(), torch.tensor(labels, device=logits.device))


def warm_start(
    model: torch.nn.Module,
    processor: Any,
    items: Sequence[WarmStartItem],
    *,
    steps: int,
    batch_size: int = 16,
    learning_rate: float = 2e-3,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Full fine-tuning on ``items`` for ``steps`` steps (AdamW, linear decay); returns the loss per step."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    cache: dict[int, Any] = {}
    contexts = [_encode(processor, item, cache) for item in items]
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / max(steps, 1))
    model.train()
    order: list[int] = []
    losses = []
    for step in range(steps):
        if len(order) < batch_size:
            fresh = list(range(len(contexts)))
            rng.shuffle(fresh)
            order += fresh
        batch, order = order[:batch_size], order[batch_size:]
        loss = supervised_loss(model, processor, [contexts[i] for i in batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step, losses[-1])
    model.eval()
    return losses


def save_checkpoint(model: torch.nn.Module, processor: Any, out_dir: str | Path) -> Path:
    """Save a full model + processor that ``AutoModelForImageTextToText.from_pretrained`` loads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# Roles whose completion starts with a description (the reasoning teacher writes from <think> on), and
# roles whose completion ends with a boxed answer (the perception teacher stops after its description).
DESCRIBING = ("student", "perception", "reference")
ANSWERING = ("student", "reasoning", "reference")


def stated_attributes(description: str, scene: Any, question_type: str = "colour") -> dict[str, bool]:
    """For each attribute a description of ``scene`` should state (kind, colour, size, position; the printed
    text when there is one; the count for count questions), whether ``description`` states it."""
    kind = OBJECT_KINDS[scene.kind]
    stated = {
        "kind": mentions_attribute(description, kind.noun) or mentions_attribute(description, kind.plural),
        "colour": mentions_attribute(description, scene.colour),
        "size": mentions_attribute(description, scene.size),
        "position": mentions_attribute(description, scene.position),
    }
    if scene.text is not None:
        stated["text"] = mentions_attribute(description, scene.text)
    if question_type == "count":
        stated["count"] = mentions_attribute(description, str(scene.count))
    return stated


def check_abilities(
    model: torch.nn.Module,
    processor: Any,
    examples: Sequence[Any],
    priors: Sequence[str],
    *,
    max_new_tokens: int = 48,
    roles: Sequence[str] = ABILITIES,
) -> dict[str, dict[str, float]]:
    """Per role, what its greedy completions state on ``examples`` (synthetic examples: question, answer,
    image and ``scene``; meant for images that contradict the text prior, ``priors`` being the answer
    the prior suggests for each).

    Roles that answer (student, reasoning, reference): ``states_true`` and ``states_prior``, the shares
    of boxed answers stating the true answer and the prior one; the teachers see the true answer in
    their prompt and should state it, the student does not, and stating the prior there is the
    shortcut. Roles that describe (student, perception, reference): ``describes_<attribute>``, the share
    of descriptions that state each attribute of the image (kind, colour, size, position, printed text
    over the images that have one, count for count questions), and ``describes_all``, the share that
    state every one. ``roles`` limits the check to some of the roles.
    """
    unknown = set(roles) - set(ABILITIES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; choose from {', '.join(ABILITIES)}")
    rollout = HFGenerateRollout(processor, SamplingParams(temperature=1.0, top_k=1, max_new_tokens=max_new_tokens))
    result = {}
    for ability in roles:
        items = warm_start_items(examples, lambda example: "", (ability,))
        # A rollout fills its template with the question alone; a template that is only that field, given
        # each item's finished user text as the question, lets the prompts that hold the answer through.
        rollout.prompt = prompts.PromptSpec("{question}", items[0].prefill)
        texts = processor.tokenizer.batch_decode(
            rollout(model, [Example(item.user_text, e.answer, e.image) for item, e in zip(items, examples)]),
            skip_special_tokens=True,
        )
        shares: dict[str, float] = {}
        if ability in ANSWERING:
            answers = [extract_boxed(text) or "" for text in texts]
            shares["states_true"] = sum(mentions_attribute(t, e.answer) for t, e in zip(answers, examples)) / len(
                examples
            )
            shares["states_prior"] = sum(mentions_attribute(t, p) for t, p in zip(answers, priors)) / len(examples)
        if ability in DESCRIBING:
            stated = [
                stated_attributes(text.partition(prompts.DESCRIPTION_CLOSE)[0], e.scene, e.question_type)
                for text, e in zip(texts, examples)
            ]
            for attribute in dict.fromkeys(name for row in stated for name in row):
                judged = [row[attribute] for row in stated if attribute in row]
                shares[f"describes_{attribute}"] = sum(judged) / len(judged)
            shares["describes_all"] = sum(all(row.values()) for row in stated) / len(stated)
        result[ability] = shares
    return result
