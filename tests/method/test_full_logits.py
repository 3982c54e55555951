"""The release's full-logits scorer: chosen by naive_loss, the same loss as the fast path (see
tests/test_perf_paths.py for terms and gradients), and no top-k teacher."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoProcessor

from vigos.method.full_logits import FullLogitsScorer, LogitsTeacher
from vigos.method.losses import Divergence
from vigos.method.score_types import ScoringOptions
from vigos.method.scoring import Scorer
from vigos.method.state_losses import divergence_from_logits
from vigos.training.config import ViGOSConfig


def test_naive_loss_selects_the_full_logits_scorer(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    fast = ViGOSConfig(output_dir="unused", report_to="none").build_scorer(processor)
    naive = ViGOSConfig(output_dir="unused", report_to="none", naive_loss=True).build_scorer(processor)
    assert type(fast) is Scorer
    assert type(naive) is FullLogitsScorer


def test_the_full_logits_scorer_refuses_a_top_k_teacher(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    spec = ViGOSConfig(output_dir="unused", report_to="none").student_spec
    with pytest.raises(ValueError, match="teacher_top_k needs the hidden-state scorer"):
        FullLogitsScorer(processor, [], spec, options=ScoringOptions(teacher_top_k=4))


def test_a_logits_teacher_term_is_the_plain_masked_mean():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(5, 11, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(5, 11, generator=generator, dtype=torch.float64)
    divergence = Divergence("reverse_kl", temperature=1.5)
    clip = torch.tensor([0.1, float("inf"), 0.2, float("inf"), 0.05], dtype=torch.float64)
    term = LogitsTeacher(teacher).loss_term(student, None, None, divergence, clip=clip, global_count=9)
    expected = torch.minimum(divergence(student, teacher), clip).sum() / 9
    torch.testing.assert_close(term, expected)
    torch.testing.assert_close(
        term, divergence_from_logits(student, teacher, divergence, torch.ones(5, dtype=torch.bool), clip, 9)
    )
