"""Settings shared by the tests that compare scoring with a plain computation."""

from __future__ import annotations

import torch

from plain import clipped, kl, pieces_to_ids, plain_logits
from vigos import prompts
from vigos.training.config import ViGOSConfig

# Two valid rollouts (a description, a reasoning, a boxed answer) and an invalid one, as text after the
# "<description>" pre-fill; rows alternate between the scoring_setup fixture's two examples.
COMPLETIONS = [
    " A red square. </description>\n<think> It is red. </think>\n\\boxed{red}<|im_end|>",
    " A blue sky on the top. </description>\n<think> The sky is blue, so blue. </think>\n\\boxed{blue}<|im_end|>",
    " red red </description> no think \\boxed{red}<|im_end|>",
]


def unclipped_config(**kw) -> ViGOSConfig:
    """A config without token clips (every supervised token counts as computed) and small loss chunks
    (several per term), with ``kw`` on top."""
    base = dict(
        output_dir="unused",
        report_to="none",
        token_loss_clip=None,
        description_end_clip=None,
        reasoning_start_clip=None,
        loss_chunk_size=3,
    )
    return ViGOSConfig(**{**base, **kw})


# Pieces tokenized one by one, so that token boundaries fall where the pieces meet.
VALID = [" A red square. ", "</description>\n", "<think>", " It is red. ", "</think>\n\\boxed{red}"]
INVALID = {
    "no_think_close": [" A red square. ", "</description>\n<think>", " It is red. \\boxed{red}"],
    "tagless": ["red"],
    "unclosed_box": [" A red square. ", "</description><think>", " red ", "</think> \\boxed{red"],
    "empty_description": ["</description><think>", " red ", "</think> \\boxed{red}"],
}


def expected_vigos(model, processor, example, cfg, completions):
    """Each term the plain way, given where the spans lie by construction; ``completions`` as :func:`hand_made`
    makes them, the reference answer 'red'."""
    student_text = prompts.render_template(cfg.student_prompt, question=example.question)
    sums = {"perception": 0.0, "reasoning": 0.0, "reference": 0.0}
    counts = dict.fromkeys(sums, 0)
    for ids, spans in completions:
        with torch.no_grad():
            student = plain_logits(model, processor, example.image, student_text, "<description>", ids)
        if spans is None:  # invalid: reference teacher, every token, reverse KL
            with model.disable_adapter(), torch.no_grad():
                teacher = plain_logits(
                    model,
                    processor,
                    example.image,
                    prompts.render_template(cfg.reference_prompt, question=example.question, answer="red"),
                    "<description>",
                    ids,
                )
            sums["reference"] += kl(student, teacher).sum().item()
            counts["reference"] += len(ids)
            continue
        (d0, d1), think, (r0, r1) = spans
        reasoning_text = prompts.render_template(cfg.reasoning_prompt, question=example.question, answer="red")
        with model.disable_adapter(), torch.no_grad():
            # The image alone (the default perception prompt and pre-fill are empty), then the description.
            perception = plain_logits(
                model, processor, example.image, cfg.perception_prompt, cfg.perception_prefill, ids[d0:d1]
            )
            if cfg.reasoning_sees_description:
                reasoning = plain_logits(model, processor, example.image, reasoning_text, "<description>", ids[:r1])[
                    r0:
                ]
            else:  # the student's own tokens from the one that opens <think>
                reasoning = plain_logits(model, processor, example.image, reasoning_text, "", ids[think:r1])[
                    r0 - think :
                ]
        sums["perception"] += (
            clipped(kl(perception, student[d0:d1]), cfg.token_loss_clip, -1, cfg.description_end_clip).sum().item()
        )
        counts["perception"] += d1 - d0
        sums["reasoning"] += (
            clipped(kl(reasoning, student[r0:r1]), cfg.token_loss_clip, 0, cfg.reasoning_start_clip).sum().item()
        )
        counts["reasoning"] += r1 - r0
    return {k: sums[k] / max(counts[k], 1) for k in sums}, counts


def hand_made(processor):
    """One valid completion (ids, (description range, <think> index, reasoning range)) and the INVALID ones
    (ids, None), tokenized piece by piece."""
    valid_ids, b = pieces_to_ids(processor, VALID)
    valid = (valid_ids, (b[0], b[2][0], (b[3][0], b[4][1])))
    invalid = [(pieces_to_ids(processor, p)[0], None) for p in INVALID.values()]
    return [valid] + invalid


def scored_hand_made(model, processor, example, cfg):
    """``score_completions`` of :func:`hand_made`'s completions, each for ``example``, with the fixed teacher,
    and the completions."""
    from vigos.method.teachers import make_teacher_policy
    from vigos.training.recipe import score_completions

    completions = hand_made(processor)
    out = score_completions(
        model,
        processor,
        [example] * len(completions),
        [ids for ids, _ in completions],
        teacher=make_teacher_policy("fixed", model),
        config=cfg,
    )
    return out, completions
