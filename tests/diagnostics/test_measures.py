"""Tests for vigos.diagnostics.measures: the shortcut diagnostics on cases where the right numbers are known.

Teacher image reliance is checked against a plain computation: the processor
encodes each teacher's prompt with the true and with a grey image, the full
model returns full logits twice, and ``F.kl_div`` gives the KL. Nothing of
vigos's encoding, span parsing or chunking is reused there.

The callback that logs them during training is tested in test_callback.py, the
`vigos diagnose` command in tests/test_diagnose.py.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from plain import kl, pieces_to_ids, plain_logits
from vigos import prompts
from vigos.data import synthetic
from vigos.data.rows import Example
from vigos.diagnostics.measures import (
    answer_leakage,
    description_grounding,
    diagnose,
    student_image_sensitivity,
    teacher_image_reliance,
)
from vigos.method.teachers import TeacherPolicy
from vigos.rollout.hf import HFGenerateRollout, SamplingParams
from vigos.training.config import ViGOSConfig

GREY = (128, 128, 128)
VALID = [" A red square. ", "</description>\n", "<think>", " It is red. ", "</think>\n\\boxed{red}"]
INVALID = [" A red square. ", "</description>\n<think>", " It is red. \\boxed{red}"]


# --- grounding and leakage ------------------------------------------------------------------


def test_grounding_counts_true_prior_both_and_neither():
    descriptions = [
        "A red leaf.",  # true
        "A green leaf.",  # prior
        "A red-green leaf.",  # both
        "A reddish leaf.",  # neither: not the whole word
        None,  # invalid rollout: not counted
        "Two green leaves.",  # agreeing image: true is the prior, counts for both
        "A RED leaf.",  # true, any case
    ]
    true = ["red", "red", "red", "red", "red", "green", "red"]
    prior = ["green"] * 7
    assert description_grounding(descriptions, true, prior) == {"states_true": 4 / 6, "states_prior": 3 / 6, "n": 6}


def test_grounding_without_descriptions_and_bad_input():
    assert description_grounding([None, None], ["red", "red"], ["green", "green"]) == {
        "states_true": 0.0,
        "states_prior": 0.0,
        "n": 0,
    }
    with pytest.raises(ValueError, match="1 prior_values"):
        description_grounding(["a red leaf", None], ["red", "red"], ["green"])
    with pytest.raises(ValueError, match="row 1 has an empty true or prior value"):
        description_grounding([None, "a leaf"], ["red", " "], ["green", "green"])


def test_leakage_on_hand_written_descriptions():
    descriptions = [
        "A red leaf.",
        "The leaf is green.",
        None,
        "Three clovers.",
        "A leaf.",
        "Option C is shown.",
        "About 1,000 dots.",
    ]
    answers = ["red", "\\boxed{Red}", "red", "3", "red", "C", "1,000"]
    # Counted: rows 0, 1, 3, 4, 6 (row 2 has no description, row 5's answer is an option letter).
    # Leaked: 0 ("red"), 3 ("three" is 3) and 6 (the answer as written).
    assert answer_leakage(descriptions, answers) == {"leakage": 3 / 5, "n": 5}
    assert answer_leakage([None], ["red"]) == {"leakage": 0.0, "n": 0}
    with pytest.raises(ValueError, match="2 descriptions but 1 answers"):
        answer_leakage(["a", "b"], ["a"])


ASCII_WORDS = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(answer=ASCII_WORDS, noise=st.lists(st.sampled_from(["a", "leaf", "the", "on", "left"]), max_size=4))
def test_a_description_quoting_the_answer_always_leaks(answer, noise):
    description = " ".join([*noise, answer, *noise]) + " ."
    result = answer_leakage([description, None], [answer, answer])
    if len(answer) == 1 and answer.isalpha():
        assert result["n"] == 0
    else:
        assert result == {"leakage": 1.0, "n": 1}


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["a leaf", "a red leaf", "green", "blue and red", None]),
            st.sampled_from(["red", "green", "blue"]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_grounding_shares_follow_added_mentions(rows):
    descriptions, true = [d for d, _ in rows], [t for _, t in rows]
    prior = ["green"] * len(rows)
    base = description_grounding(descriptions, true, prior)
    assert base["n"] == sum(d is not None for d in descriptions)
    assert 0.0 <= base["states_true"] <= 1.0 and 0.0 <= base["states_prior"] <= 1.0
    stated = [None if d is None else f"{d}, {t}" for d, t in rows]
    assert description_grounding(stated, true, prior)["states_true"] == (1.0 if base["n"] else 0.0)


# --- teacher image reliance -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, processor


def config(tmp_path, **kw):
    return ViGOSConfig(
        **{"output_dir": str(tmp_path), "report_to": "none", "loss_chunk_size": 3, "teacher_batch_size": 2, **kw}
    )


def plain_reliance(model, processor, image, other, user_text, prefill, appended, skip=0):
    """Mean over the tokens of ``appended`` after the first ``skip`` of KL(p_true || p_other), from two full
    forward passes."""
    with torch.no_grad():
        p = plain_logits(model, processor, image, user_text, prefill, appended)[skip:]
        q = plain_logits(model, processor, other, user_text, prefill, appended)[skip:]
    return kl(p, q).mean().item()


def square(rgb, size=(112, 112)):
    return Image.new("RGB", size, rgb)


def test_reliance_matches_a_plain_computation(tiny, tmp_path):
    model, processor = tiny
    cfg = config(tmp_path)
    scorer = cfg.build_scorer(processor, teacher=TeacherPolicy())
    valid, b = pieces_to_ids(processor, VALID)
    invalid, _ = pieces_to_ids(processor, INVALID)
    red, blue = square((200, 30, 30)), square((30, 30, 200), (140, 112))
    examples = [Example("What colour is the square?", "red", red), Example("What colour is the square?", "blue", blue)]
    got = teacher_image_reliance(model, scorer, examples, [valid, invalid])

    (d0, d1), think, (r0, r1) = b[0], b[2][0], (b[3][0], b[4][1])
    question = examples[0].question
    expected = {
        "perception": plain_reliance(
            model, processor, red, square(GREY), cfg.perception_prompt, cfg.perception_prefill, valid[d0:d1]
        ),
        # The reasoning teacher reads the student's own tokens from the one that opens <think>.
        "reasoning": plain_reliance(
            model,
            processor,
            red,
            square(GREY),
            prompts.render_template(cfg.reasoning_prompt, question=question, answer="red"),
            "",
            valid[think:r1],
            skip=r0 - think,
        ),
        "reference": plain_reliance(
            model,
            processor,
            blue,
            square(GREY, (140, 112)),
            prompts.render_template(cfg.reference_prompt, question=question, answer="blue"),
            "<description>",
            invalid,
        ),
    }
    assert set(got) == {f"{kind}_{term}" for kind in ("reliance", "tokens") for term in expected}
    assert got["tokens_perception"] == d1 - d0 and got["tokens_reasoning"] == r1 - r0
    assert got["tokens_reference"] == len(invalid)
    for term, value in expected.items():
        assert value > 0
        assert got[f"reliance_{term}"] == pytest.approx(value, rel=1e-4, abs=1e-8), term

    shuffled = teacher_image_reliance(model, scorer, examples, [valid, invalid], counterfactual="shuffle")
    assert shuffled["reliance_perception"] == pytest.approx(
        plain_reliance(model, processor, red, blue, cfg.perception_prompt, cfg.perception_prefill, valid[d0:d1]),
        rel=1e-4,
    )


def test_reliance_is_zero_for_the_same_image_and_omits_empty_terms(tiny, tmp_path):
    model, processor = tiny
    scorer = config(tmp_path).build_scorer(processor, teacher=TeacherPolicy())
    valid, _ = pieces_to_ids(processor, VALID)
    examples = [Example("What colour is the square?", "red", square((200, 30, 30)))] * 3
    same = teacher_image_reliance(model, scorer, examples, [valid] * 3, counterfactual="same")
    assert set(same) == {"reliance_perception", "tokens_perception", "reliance_reasoning", "tokens_reasoning"}
    assert same["reliance_perception"] == 0.0 and same["reliance_reasoning"] == 0.0
    blank = teacher_image_reliance(model, scorer, examples, [valid] * 3, max_rows=1)
    assert blank["reliance_perception"] > 0 and blank["tokens_perception"] == same["tokens_perception"] / 3
    only_invalid = teacher_image_reliance(model, scorer, examples[:1], ["red"])
    assert set(only_invalid) == {"reliance_reference", "tokens_reference"}
    with pytest.raises(ValueError, match="at least 2 rows"):
        teacher_image_reliance(model, scorer, examples[:1], [valid], counterfactual="shuffle")
    with pytest.raises(ValueError, match="counterfactual must be one of"):
        teacher_image_reliance(model, scorer, examples[:1], [valid], counterfactual="noise")


# --- diagnose on the synthetic world ----------------------------------------------------------


def world_examples(n, conflict_fraction, seed=3):
    split = synthetic.make_split(n, conflict_fraction=conflict_fraction, seed=seed)
    return [Example(e.question, e.answer, e.image, i, e.to_row()) for i, e in enumerate(split)], split


def scorer(tmp_path, model, processor):
    cfg = config(tmp_path)
    return cfg.build_scorer(processor, teacher=cfg.teacher_policy(model))


def test_diagnose_with_ideal_completions(tiny, tmp_path):
    model, processor = tiny
    examples, split = world_examples(4, 0.5)
    completions = [synthetic.warmup_target(e) for e in split]
    got = diagnose(
        model, processor, examples, scorer=scorer(tmp_path, model, processor), completions=completions, sample_size=8
    )
    assert got["rows"] == 4 and got["valid_rate"] == 1.0
    # Each canonical description states its true colour and only that colour.
    assert (got["grounding_states_true"], got["grounding_states_prior"], got["grounding_n"]) == (1.0, 0.5, 4)
    assert (got["grounding_conflict_states_true"], got["grounding_conflict_states_prior"]) == (1.0, 0.0)
    assert got["grounding_conflict_n"] == 2
    assert got["leakage"] == 1.0 and got["leakage_n"] == 4
    # True descriptions state no colour the image does not show.
    assert (got["ungrounded"], got["ungrounded_n"]) == (0.0, 4) and "ungrounded_obscured" not in got
    assert got["reliance_perception"] > 0 and got["reliance_reasoning"] > 0 and "reliance_reference" not in got
    two = diagnose(
        model,
        processor,
        examples,
        scorer=scorer(tmp_path, model, processor),
        completions=completions,
        sample_size=2,
        seed=1,
    )
    assert two["rows"] == 2 and two["grounding_n"] == 2
    with pytest.raises(ValueError, match="3 completions for 4 examples"):
        diagnose(model, processor, examples, scorer=scorer(tmp_path, model, processor), completions=completions[:3])


def test_diagnose_counts_descriptions_that_state_a_colour_the_image_does_not_show(tiny, tmp_path):
    model, processor = tiny
    split = synthetic.make_split(4, conflict_fraction=0.25, seed=3, obscured_fraction=0.5)
    examples = [Example(e.question, e.answer, e.image, i, e.to_row()) for i, e in enumerate(split)]
    # Each description made answer-compatible: it states the reference answer's colour, whatever is drawn.
    completions = [synthetic.warmup_target(e).replace(f" {e.scene.colour} ", f" {e.answer} ", 1) for e in split]
    got = diagnose(
        model, processor, examples, scorer=scorer(tmp_path, model, processor), completions=completions, sample_size=4
    )
    obscured = sum(e.obscured for e in split)
    assert obscured == 2
    # Only the obscured rows' descriptions now name a colour not drawn (the answer is the drawn colour elsewhere).
    assert (got["ungrounded"], got["ungrounded_n"]) == (obscured / 4, 4)
    assert (got["ungrounded_obscured"], got["ungrounded_obscured_n"]) == (1.0, obscured)
    # Grounding leaves the obscured rows out: they have no readable colour to state.
    assert got["grounding_n"] == 4 - obscured


# --- student image sensitivity ----------------------------------------------------------------


def test_image_sensitivity_on_synthetic_pairs(tiny):
    model, processor = tiny
    agree, _ = world_examples(3, 0.0)
    conflict, _ = world_examples(3, 1.0)
    assert [a.question for a in agree] == [c.question for c in conflict]
    greedy = HFGenerateRollout(processor, SamplingParams(temperature=1.0, top_p=1.0, top_k=1, max_new_tokens=6))
    got = student_image_sensitivity(model, processor, agree, conflict, rollout=greedy)
    assert got["n"] == 3
    for name in ("changed", "completion_changed", "conflict_true", "conflict_prior", "agree_true"):
        assert 0.0 <= got[name] <= 1.0, name
    with pytest.raises(ValueError, match="pair 0"):
        student_image_sensitivity(
            model, processor, agree[:1], [Example("other?", "red", agree[0].image)], rollout=greedy
        )


def test_identical_images_with_a_fixed_seed_never_change(tiny):
    model, processor = tiny
    agree, _ = world_examples(3, 0.0)
    sampling = HFGenerateRollout(processor, SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=6))
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    seeded = student_image_sensitivity(model, processor, agree, agree, rollout=sampling, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before), "the caller's random state moved"
    assert seeded["changed"] == 0.0 and seeded["completion_changed"] == 0.0
    # Without a seed the two sides sample from different random streams, so the same images give other text.
    unseeded = student_image_sensitivity(model, processor, agree, agree, rollout=sampling, seed=None)
    assert unseeded["completion_changed"] > 0.0
