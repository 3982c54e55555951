"""Benchmarks during training: a slice of ``vigos eval`` on the current policy every ``eval_steps`` steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from vigos.errors import ConfigError
from vigos.eval.options import EvalConfig
from vigos.eval.runner import EvalError, check_benchmarks, run_eval


def benchmark_metrics(summary: dict[str, Any], k: int) -> dict[str, float]:
    """The numbers to log from an evaluation's summary: per benchmark ``eval_<name>_avg@k`` and ``_pass@k``,
    and for a benchmark with prior-conflicting items ``eval_<name>_score_avg@k`` and ``_prior_avg@k``."""
    metrics = {}
    for name, result in summary["metrics"]["benchmarks"].items():
        for estimate in (f"avg@{k}", f"pass@{k}"):
            if estimate in result:
                metrics[f"eval_{name}_{estimate}"] = float(result[estimate]["mean"])
    for name, sides in summary.get("vilp", {}).items():
        for side in ("score", "prior"):
            if f"avg@{k}" in sides.get(side, {}):
                metrics[f"eval_{name}_{side}_avg@{k}"] = float(sides[side][f"avg@{k}"]["mean"])
    return metrics


class BenchmarkCallback(TrainerCallback):
    """Runs `run_eval` on ``trainer``'s current policy every ``args.eval_steps`` optimizer steps and logs
    `benchmark_metrics` (a :class:`vigos.training.trainer.ViGOSTrainer` adds it when ``eval_benchmarks``
    is set). Each evaluation writes its run folder to ``output_dir/eval/step-N``; its sampling is seeded
    per item and does not disturb training's random stream. Every process evaluates (sharded weights
    need every process in each forward pass); the main one writes."""

    def __init__(self, trainer: Any):
        """Checks, before training starts, that every benchmark has a readable local copy and the judge it
        needs; raises :class:`~vigos.errors.ConfigError` naming the option otherwise."""
        self.trainer = trainer
        try:
            check_benchmarks(
                self._config(trainer.args, step=0),
                judge_options="eval_judge_url and eval_judge_model",
                benchmarks_option="eval_benchmarks",
            )
        except (EvalError, ValueError) as error:
            raise ConfigError(f"eval_benchmarks: {error}") from None

    @staticmethod
    def _config(args: Any, step: int) -> EvalConfig:
        return EvalConfig(
            model=str(args.model_name_or_path or "policy"),
            benchmarks=list(args.eval_benchmarks),
            data_dir=args.eval_data_dir,
            out_dir=str(Path(args.output_dir) / "eval" / f"step-{step}"),
            k=args.eval_k,
            max_new_tokens=args.max_completion_length,
            limit=args.eval_limit,
            seed=args.seed,
            student_prompt=args.student_prompt,
            engine="hf",
            judge_url=args.eval_judge_url,
            judge_model=args.eval_judge_model,
        )

    def on_step_end(self, args, state, control, **kwargs):
        every = int(args.eval_steps) if args.eval_steps and args.eval_steps >= 1 else 0
        if not every or state.global_step % every:
            return
        trainer = self.trainer
        config = self._config(args, state.global_step)
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        try:
            model.eval()
            with torch.random.fork_rng(devices=devices):
                summary = run_eval(
                    config, model=model, processor=trainer.processing_class, progress=False, report=False
                )
        finally:
            model.train(was_training)
        trainer.log_beside(benchmark_metrics(summary, args.eval_k))
