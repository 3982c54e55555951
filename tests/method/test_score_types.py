"""ScoringOptions: the one source of the loss options' defaults, read back from a config by name."""

from __future__ import annotations

import dataclasses

from transformers import AutoProcessor

from vigos.method.losses import Divergence
from vigos.method.score_types import ScoringOptions
from vigos.training.config import ViGOSConfig


def test_every_scoring_option_is_a_config_option_with_the_same_default():
    config = ViGOSConfig(output_dir="unused", report_to="none")
    defaults = ScoringOptions()
    for option in dataclasses.fields(ScoringOptions):
        assert getattr(config, option.name) == getattr(defaults, option.name), option.name
    assert ScoringOptions.from_settings(config) == defaults


def test_from_settings_reads_each_value_the_config_holds(tiny_model_dir):
    changed = {
        "distill_temperature": 2.0,
        "jsd_beta": 0.25,
        "token_loss_clip": None,
        "description_end_clip": 0.5,
        "reasoning_start_clip": 0.75,
        "loss_chunk_size": 7,
        "teacher_batch_size": 3,
        "teacher_top_k": 5,
        "reuse_image_features": False,
        "reward_weight": 0.25,
    }
    assert set(changed) == {option.name for option in dataclasses.fields(ScoringOptions)}
    config = ViGOSConfig(output_dir="unused", report_to="none", **changed)
    assert dataclasses.asdict(ScoringOptions.from_settings(config)) == changed
    scorer = config.build_scorer(AutoProcessor.from_pretrained(tiny_model_dir))
    assert scorer.options == ScoringOptions(**changed)
    # Each term's divergence is built once, from the same values.
    assert scorer.divergences == {
        "perception": Divergence("forward_kl", 0.25, 2.0),
        "reasoning": Divergence("forward_kl", 0.25, 2.0),
        "reference": Divergence("reverse_kl", 0.25, 2.0),
    }
