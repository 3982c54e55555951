"""The warm start: its supervised items, its loss against the model's own, that it learns, and its ability check."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from vigos.data import synthetic
from vigos.data.rows import Example
from vigos.demo.warmstart import (
    _encode,
    check_abilities,
    stated_attributes,
    supervised_loss,
    warm_start,
    warm_start_items,
)

TARGET = " A red leaf. </description>\n<think> The leaf is red. </think>\n\\boxed{red}"


def example():
    return Example("Leaves are green. What colour is the leaf?", "red", Image.new("RGB", (112, 112), (220, 30, 30)), 0)


def test_items_cover_the_three_abilities():
    items = warm_start_items([example()], lambda e: TARGET)
    # Each teacher is taught in the context it is scored in: the perception teacher sees the image alone,
    # the reasoning teacher writes from <think> on.
    assert [i.prefill for i in items] == ["<description>", "", "", "<description>"]
    student, perception, reasoning, reference = items
    assert student.target == TARGET and "red" not in student.user_text
    assert perception.target == " A red leaf. </description>" and perception.user_text == ""
    assert reasoning.target.startswith("<think> The leaf is red.") and "red" in reasoning.user_text
    assert reference.target == TARGET and "red" in reference.user_text
    assert len(warm_start_items([example()], lambda e: TARGET, ("perception",))) == 1
    with pytest.raises(ValueError, match="unknown abilities"):
        warm_start_items([example()], lambda e: TARGET, ("vision",))


def test_loss_equals_the_models_own_cross_entropy_and_decreases(tiny_model_dir):
    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    items = warm_start_items([example()], lambda e: TARGET)
    context = _encode(processor, items[0], {})
    ours = supervised_loss(model, processor, [context])
    ids = torch.tensor([context.prompt_ids + context.appended_ids])
    labels = ids.clone()
    labels[0, : len(context.prompt_ids)] = -100
    theirs = model(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        pixel_values=context.image.pixel_values,
        image_grid_thw=context.image.image_grid_thw,
        mm_token_type_ids=(ids == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")).long(),
        labels=labels,
    ).loss
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    losses = warm_start(model, processor, items, steps=15, batch_size=4, learning_rate=3e-3)
    assert losses[-1] < 0.7 * losses[0]


def test_check_abilities_reports_each_role_on_conflicting_images(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    rows = synthetic.make_split(3, conflict_fraction=1.0, seed=5)
    result = check_abilities(model, processor, rows, [e.prior_answer for e in rows], max_new_tokens=8)
    assert set(result) == {"student", "perception", "reasoning", "reference"}
    described = {"describes_kind", "describes_colour", "describes_size", "describes_position", "describes_all"}
    answered = {"states_true", "states_prior"}
    assert set(result["perception"]) - {"describes_text"} == described
    assert set(result["reasoning"]) == answered
    assert set(result["student"]) - {"describes_text"} == set(result["reference"]) - {"describes_text"}
    assert set(result["student"]) - {"describes_text"} == described | answered
    for shares in result.values():
        assert all(0.0 <= v <= 1.0 for v in shares.values())
    # One role alone gives the same shares as in the full check (greedy decoding).
    alone = check_abilities(
        model, processor, rows, [e.prior_answer for e in rows], max_new_tokens=8, roles=["perception"]
    )
    assert alone == {"perception": result["perception"]}
    with pytest.raises(ValueError, match="unknown roles \\['teacher'\\]"):
        check_abilities(model, processor, rows, [e.prior_answer for e in rows], roles=["teacher"])


def test_stated_attributes_judge_each_attribute_of_the_scene():
    scene = synthetic.Scene(kind="leaf", colour="red", count=1, size="small", position="left", text="BUS")
    true = synthetic.describe_scene(scene)
    assert stated_attributes(true, scene) == dict.fromkeys(("kind", "colour", "size", "position", "text"), True)
    wrong = stated_attributes("A large red grape on the right.", scene)
    assert wrong == {"kind": False, "colour": True, "size": False, "position": False, "text": False}
    group = synthetic.Scene(kind="leaf", colour="green", count=3, size="small", position="center", text=None)
    assert stated_attributes(synthetic.describe_scene(group, state_count=True), group, "count") == dict.fromkeys(
        ("kind", "colour", "size", "position", "count"), True
    )
