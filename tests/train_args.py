"""Training arguments for short runs of the tiny models in tests: the settings they share, in one place."""

from __future__ import annotations

from typing import Any

from vigos.training.config import ViGOSConfig

TINY_RUN = dict(
    max_steps=2,
    per_device_train_batch_size=2,
    learning_rate=5e-3,
    lora_r=4,
    lora_alpha=8,
    lora_dropout=0.0,
    token_loss_clip=None,
    description_end_clip=None,
    reasoning_start_clip=None,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    use_cpu=True,
    log_completions_steps=0,
    seed=0,
)


def tiny_run_args(output_dir: Any, **overrides: Any) -> ViGOSConfig:
    """A ViGOSConfig for a few CPU steps on a tiny model (no clips, LoRA r 4, no saving); ``overrides`` win."""
    return ViGOSConfig(output_dir=str(output_dir), **{**TINY_RUN, **overrides})
