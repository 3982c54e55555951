"""The shortcut diagnostics during training, every ``diagnostics_steps`` optimizer steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from vigos.diagnostics.measures import COUNTERFACTUALS, _sample, diagnose


class DiagnosticsCallback(TrainerCallback):
    """Runs :func:`diagnose` every ``every`` optimizer steps during a run of :class:`vigos.ViGOSTrainer`
    (``trainer``: its ``scorer``, ``rollout`` and ``train_dataset`` are used).

    The examples are a fixed sample of ``sample_size`` training rows (drawn
    once with ``seed``), rolled out with the trainer's own rollout (so
    ``num_generations`` completions each) and scored with the trainer's
    scorer and teacher. Each run appends ``{"step": ..., **metrics}`` to
    ``output_dir/diagnostics.jsonl`` (main process) and logs the metrics
    with a ``diag_`` prefix. Every process runs the passes, as sharded
    models need. Its sampling is seeded and does not disturb training's
    random stream. Add it after building the trainer:
    ``trainer.add_callback(DiagnosticsCallback(trainer, every=50))``.
    """

    def __init__(
        self, trainer: Any, *, every: int, sample_size: int = 16, seed: int = 0, counterfactual: str = "blank"
    ):
        if every < 1:
            raise ValueError(f"every must be at least 1 (steps between diagnostics); got {every}")
        if sample_size < 1:
            raise ValueError(f"sample_size must be at least 1; got {sample_size}")
        if counterfactual not in COUNTERFACTUALS:
            raise ValueError(f"counterfactual must be one of {', '.join(COUNTERFACTUALS)}; got {counterfactual!r}")
        dataset = trainer.train_dataset
        self.trainer = trainer
        self.every = every
        self.seed = seed
        self.counterfactual = counterfactual
        self.examples = [dataset[i] for i in _sample(len(dataset), sample_size, seed)]
        self.path = Path(trainer.args.output_dir) / "diagnostics.jsonl"

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every:
            return
        trainer = self.trainer
        metrics = diagnose(
            trainer.model_wrapped,
            trainer.processing_class,
            self.examples,
            rollout=trainer.rollout,
            scorer=trainer.scorer,
            sample_size=len(self.examples),
            seed=self.seed + state.global_step,
            counterfactual=self.counterfactual,
        )
        if state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps({"step": state.global_step, **metrics}) + "\n")
        trainer.log_beside({f"diag_{name}": float(value) for name, value in metrics.items()})
