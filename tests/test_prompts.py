"""Tests for vigos.prompts: templates, the rendered chat prompt, and the one student prompt spec."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from transformers import AutoProcessor

from vigos.prompts import (
    DESCRIPTION_OPEN,
    PERCEPTION_PROMPT,
    REASONING_PROMPT,
    REFERENCE_PROMPT,
    STUDENT_PROMPT,
    THINK_OPEN,
    PromptSpec,
    render_prompt,
    render_template,
    student_spec,
    template_fields,
)
from vigos.training.config import ViGOSConfig


def test_the_student_spec_has_one_source(tmp_path, tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    cfg = ViGOSConfig(output_dir=str(tmp_path), report_to="none", student_prompt="Q: {question}")
    assert cfg.student_spec == student_spec("Q: {question}") == PromptSpec("Q: {question}", DESCRIPTION_OPEN)
    assert cfg.build_rollout(processor).prompt == cfg.student_spec
    default = ViGOSConfig(output_dir=str(tmp_path), report_to="none")
    assert default.build_rollout(processor).prompt == student_spec() == PromptSpec(STUDENT_PROMPT, DESCRIPTION_OPEN)


@given(st.text(), st.text())
def test_templates_substitute_question_and_answer_once_and_verbatim(question, answer):
    """Values are inserted as they are: braces or field names inside them are never substituted again."""
    assert render_template("Q: {question} A: {answer}", question=question, answer=answer) == (
        f"Q: {question} A: {answer}"
    )
    assert render_template("{question}{question}", question=question) == question + question


def test_a_template_that_asks_for_the_answer_needs_one():
    with pytest.raises(ValueError, match=r"needs \{answer\}"):
        PromptSpec(REASONING_PROMPT, THINK_OPEN).text("What colour?")
    assert template_fields(STUDENT_PROMPT) == {"question"}
    assert template_fields(REASONING_PROMPT) == template_fields(REFERENCE_PROMPT) == {"question", "answer"}
    assert template_fields(PERCEPTION_PROMPT) == set()
    assert "red" in PromptSpec(REFERENCE_PROMPT, "").text("What colour?", "red")


@pytest.mark.parametrize("images", [0, 1, 3])
def test_render_prompt_puts_each_image_before_the_text_and_ends_with_the_prefill(tiny_model_dir, images):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    rendered = render_prompt(processor, "What colour?", DESCRIPTION_OPEN, images)
    assert rendered.endswith(DESCRIPTION_OPEN)
    pads = [m.start() for m in re.finditer(re.escape("<|image_pad|>"), rendered)]
    assert len(pads) == images
    assert all(p < rendered.index("What colour?") for p in pads)
    # The image-only turn (the perception teacher's default) has no text at all.
    assert "What colour?" not in render_prompt(processor, PERCEPTION_PROMPT, "", 1)
