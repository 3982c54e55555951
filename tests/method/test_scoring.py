"""The scoring entry point on hand-made completions, against an independent computation.

The expected values here are computed the plain way: the processor encodes
each teacher's prompt with the image, the full model returns full logits, and
the KL comes from ``F.kl_div``. Nothing of vigos's encoding, span parsing or
chunked loss is reused.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from plain import kl, plain_logits
from scoring_cases import VALID, expected_vigos, hand_made, scored_hand_made
from scoring_cases import unclipped_config as config
from vigos import prompts
from vigos.data.rows import Example
from vigos.method.teachers import make_teacher_policy
from vigos.training.recipe import score_completions


@pytest.mark.parametrize("sees_description", [False, True])
def test_vigos_terms_match_plain_computation(scoring_setup, sees_description):
    model, processor, (example, _) = scoring_setup
    cfg = config(reasoning_sees_description=sees_description)
    completions = hand_made(processor)
    teacher = make_teacher_policy("fixed", model)
    out = score_completions(
        model, processor, [example] * len(completions), [ids for ids, _ in completions], teacher=teacher, config=cfg
    )
    expected, counts = expected_vigos(model, processor, example, cfg, completions)
    assert [s.valid for s in out.spans] == [True, False, False, False, False]
    assert [s.tagless for s in out.spans] == [False, False, True, False, False]
    (d0, d1), _, (r0, r1) = completions[0][1]
    assert out.supervised["perception"] == [(d0, d1), None, None, None, None]
    assert out.supervised["reasoning"] == [(r0, r1), None, None, None, None]
    assert out.supervised["reference"][0] is None
    assert out.supervised["reference"][1:] == [(0, len(ids)) for ids, _ in completions[1:]]
    for name, value in expected.items():
        assert out.terms[name].item() == pytest.approx(value, rel=1e-4, abs=1e-7), name
        assert out.metrics[f"tokens_{name}"] == pytest.approx(counts[name] / len(completions))
    assert out.loss.item() == pytest.approx(
        expected["perception"] + expected["reasoning"] + 2 * expected["reference"], rel=1e-4
    )
    assert out.metrics["valid_rate"] == pytest.approx(0.2) and out.metrics["fallback_rate"] == pytest.approx(0.8)


@pytest.mark.parametrize("clips", [(0.02, 0.001, 0.003), (0.001, 0.5, 0.5), (None, 0.002, None)])
def test_clips_and_boundary_clips(scoring_setup, clips):
    """A boundary token is clipped at the smaller of the token clip and its own (the release's rule)."""
    model, processor, (example, _) = scoring_setup
    cfg = config(token_loss_clip=clips[0], description_end_clip=clips[1], reasoning_start_clip=clips[2])
    completions = hand_made(processor)[:1]
    out = score_completions(
        model, processor, [example], [completions[0][0]], teacher=make_teacher_policy("fixed", model), config=cfg
    )
    expected, _ = expected_vigos(model, processor, example, cfg, completions)
    for name in ("perception", "reasoning"):
        assert out.terms[name].item() == pytest.approx(expected[name], rel=1e-4, abs=1e-7)


def test_opsd_scores_every_token_with_the_privileged_teacher(scoring_setup):
    model, processor, (example, _) = scoring_setup
    cfg = config(method="opsd")
    out, completions = scored_hand_made(model, processor, example, cfg)
    student_text = prompts.render_template(cfg.student_prompt, question=example.question)
    teacher_text = prompts.render_template(cfg.reference_prompt, question=example.question, answer="red")
    total, count = 0.0, 0
    for ids, _ in completions:
        with torch.no_grad():
            student = plain_logits(model, processor, example.image, student_text, "<description>", ids)
            with model.disable_adapter():
                teacher = plain_logits(model, processor, example.image, teacher_text, "<description>", ids)
        total += kl(teacher, student).sum().item()
        count += len(ids)
    assert list(out.terms) == ["privileged"]
    assert out.terms["privileged"].item() == pytest.approx(total / count, rel=1e-4)


def test_empty_terms_are_exact_zero_and_backward_works(scoring_setup):
    model, processor, (example, _) = scoring_setup
    only_invalid = [ids for ids, _ in hand_made(processor)[1:]]
    out = score_completions(
        model,
        processor,
        [example] * len(only_invalid),
        only_invalid,
        teacher=make_teacher_policy("fixed", model),
        config=config(),
    )
    assert out.terms["perception"].item() == 0.0 and out.terms["reasoning"].item() == 0.0
    assert torch.isfinite(out.loss)
    model.zero_grad()
    out.loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_text_completions_and_length_mismatch(scoring_setup):
    model, processor, (example, _) = scoring_setup
    text = "".join(VALID)
    out = score_completions(
        model, processor, [example], [text], teacher=make_teacher_policy("fixed", model), config=config()
    )
    assert out.spans[0].valid and out.spans[0].answer == "red" and out.metrics["answer_accuracy"] == 1.0
    with pytest.raises(ValueError, match="one example per completion"):
        score_completions(model, processor, [example, example], [text], config=config())


def test_teacher_passes_grouped_by_length_give_the_terms_and_gradients_of_one_pass_per_row(scoring_setup):
    """Teacher contexts are sorted by length into passes of ``teacher_batch_size``; every grouping must
    give the same per-term values and LoRA gradients (only padding differs)."""
    model, processor, (example, _) = scoring_setup
    completions = [ids for ids, _ in hand_made(processor)]
    completions = completions + [completions[0][: len(completions[0]) // 2], completions[2] + completions[3]]
    teacher = make_teacher_policy("fixed", model)
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    results = []
    for batch_size in (1, 3, len(completions)):
        out = score_completions(
            model,
            processor,
            [example] * len(completions),
            completions,
            teacher=teacher,
            config=config(teacher_batch_size=batch_size),
        )
        grads = torch.autograd.grad(out.loss, lora)
        results.append(({k: v.item() for k, v in out.terms.items()}, grads))
    for terms, grads in results[1:]:
        assert terms == pytest.approx(results[0][0], rel=1e-5, abs=1e-7)
        for grad, reference in zip(grads, results[0][1]):
            torch.testing.assert_close(grad, reference, rtol=1e-4, atol=1e-6)


def test_every_image_of_a_two_image_row_reaches_the_student_and_every_teacher(scoring_setup):
    """A row with two images: the student and each teacher that sees the image (all three) are shown both,
    in order; the terms equal the plain computation with both images in the prompt."""
    model, processor, (example, _) = scoring_setup
    two = Example(
        question="Which square is red?",
        answer="red",
        image=[example.image, Image.new("RGB", (84, 112), (20, 40, 220))],
        row=0,
        meta={},
    )
    cfg = config()
    out, completions = scored_hand_made(model, processor, two, cfg)
    expected, _ = expected_vigos(model, processor, two, cfg, completions)
    for name, value in expected.items():
        assert out.terms[name].item() == pytest.approx(value, rel=1e-4, abs=1e-7), name
    first_only, _ = expected_vigos(model, processor, example, cfg, completions)
    assert out.terms["perception"].item() != pytest.approx(first_only["perception"], rel=1e-3)


def test_score_completions_takes_its_teacher_from_the_config(scoring_setup):
    """No teacher given: the one `config.teacher` names (default fixed: the adapter off), as in training."""
    model, processor, (example, _) = scoring_setup
    text = "".join(VALID)
    fixed = score_completions(
        model, processor, [example], [text], teacher=make_teacher_policy("fixed", model), config=config()
    )
    default = score_completions(model, processor, [example], [text], config=config())
    current = score_completions(model, processor, [example], [text], config=config(teacher="current"))
    assert config().teacher == "fixed"
    for name, value in fixed.terms.items():
        assert default.terms[name].item() == pytest.approx(value.item(), rel=1e-6, abs=1e-9), name
    # The adapter changes the model, so the current-weights teacher gives other terms: the test is not vacuous.
    assert any(abs(current.terms[n].item() - v.item()) > 1e-6 for n, v in fixed.terms.items())
