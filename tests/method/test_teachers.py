"""Teacher policies: whose weights a teacher pass runs, and the method as data."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText

from vigos.method.teachers import AdapterOffTeacher, SnapshotTeacher, TeacherPolicy, TeacherTerm, make_teacher_policy
from vigos.models.modeling import unwrap
from vigos.prompts import PromptSpec
from vigos.training.config import ViGOSConfig
from vigos.training.recipe import apply_lora


def lora_model(path):
    cfg = ViGOSConfig(output_dir="unused", report_to="none", lora_r=4, lora_alpha=8)
    return apply_lora(AutoModelForImageTextToText.from_pretrained(path), cfg)


def test_kinds(tiny_model_dir):
    assert isinstance(make_teacher_policy("fixed", lora_model(tiny_model_dir)), AdapterOffTeacher)
    plain = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    fixed = make_teacher_policy("fixed", plain)
    assert isinstance(fixed, SnapshotTeacher) and fixed.decay == 1.0
    assert type(make_teacher_policy("current", plain)) is TeacherPolicy
    with pytest.raises(ValueError, match="fixed, current, ema"):
        make_teacher_policy("frozen", plain)


def test_fixed_full_finetune_swaps_initial_weights_in_and_back(tiny_model_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    teacher = make_teacher_policy("fixed", model)
    weight = model.lm_head.weight
    initial = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1.0)
    live = weight.detach().clone()
    with teacher.weights(model):
        assert torch.equal(weight, initial)
    assert torch.equal(weight, live)
    assert torch.equal(teacher.head(model), initial)  # the head is trained here, so the teacher's is the snapshot
    teacher.update(model)  # decay 1: never moves
    assert torch.equal(teacher.snapshot["lm_head.weight"], initial)


def test_ema_update_is_a_moving_average(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    teacher = make_teacher_policy("ema", model, ema_decay=0.75)
    name, param = next((n, p) for n, p in unwrap(model).named_parameters() if p.requires_grad and "lora_A" in n)
    before = teacher.snapshot[name].clone()
    with torch.no_grad():
        param.add_(4.0)
    teacher.update(model)
    assert torch.allclose(teacher.snapshot[name], 0.75 * before + 0.25 * param.detach())
    assert torch.equal(teacher.head(model), unwrap(model).lm_head.weight)  # LoRA: the head is shared


def test_terms_are_data():
    cfg = ViGOSConfig(output_dir="unused", report_to="none", reasoning_sees_description=True, reference_weight=3.0)
    perception, reasoning, reference = cfg.teacher_terms()
    assert (perception.span, perception.rows, perception.divergence) == ("description", "valid", "forward_kl")
    assert (reasoning.span, reasoning.prompt.prefill, reasoning.reads_from) == (
        "reasoning",
        "<description>",
        "completion",
    )
    assert (reference.span, reference.rows, reference.divergence, reference.weight) == (
        "completion",
        "invalid",
        "reverse_kl",
        3.0,
    )
    with pytest.raises(ValueError, match="span must be one of"):
        TeacherTerm("x", PromptSpec("", ""), "answer", "valid", "forward_kl", 1.0)
    with pytest.raises(ValueError, match="reads_from must be one of"):
        TeacherTerm("x", PromptSpec("", ""), "reasoning", "valid", "forward_kl", 1.0, reads_from="span")
    with pytest.raises(ValueError, match="no pre-fill"):
        TeacherTerm("x", PromptSpec("", "<think>"), "reasoning", "valid", "forward_kl", 1.0, reads_from="think")


def test_release_defaults_as_data():
    """By default the perception teacher sees the image alone and the reasoning teacher reads the student's
    own tokens from <think> on (no text pre-fill)."""
    perception, reasoning, reference = ViGOSConfig(output_dir="unused", report_to="none").teacher_terms()
    assert (perception.prompt.template, perception.prompt.prefill, perception.reads_from) == ("", "", "completion")
    assert (reasoning.prompt.prefill, reasoning.reads_from) == ("", "think")
    assert (reference.prompt.prefill, reference.reads_from) == ("<description>", "completion")
