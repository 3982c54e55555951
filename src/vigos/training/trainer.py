"""``ViGOSTrainer``: a ``transformers.Trainer`` whose loss is rollout → scoring.

Everything else — optimizer, schedule, gradient accumulation, mixed
precision, checkpointing, ``resume_from_checkpoint``, logging integrations,
Accelerate/DeepSpeed/FSDP launch — is the Trainer's own.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from vigos.data.examples import collate_examples
from vigos.data.rows import Example
from vigos.method.score_types import ScoreOutput
from vigos.method.teachers import TeacherPolicy
from vigos.models.modeling import unwrap
from vigos.prompts import DESCRIPTION_OPEN
from vigos.rollout.hf import Rollout
from vigos.training.checkpoints import AtomicCheckpointMixin, reporting_full_disk
from vigos.training.config import ViGOSConfig
from vigos.training.model_card import CARD, training_card
from vigos.training.trackers import log_completions


class ViGOSTrainer(AtomicCheckpointMixin, Trainer):
    """Post-trains a VLM with ViGOS or multimodal OPSD (``args.method``).

    ``train_dataset`` yields :class:`vigos.data.rows.Example`; ``processing_class``
    is the model's processor. ``rollout`` defaults to the config's
    ``rollout_engine`` with its sampling settings (an engine with a ``sync``
    method, vLLM's, is sent the policy every ``vllm_sync_steps`` optimizer
    steps), ``teacher`` to the config's teacher policy.

    Each loss term is a mean over its tokens in the whole optimizer step: every
    micro-batch of a gradient-accumulation window, on every process. The
    step's micro-batches are therefore rolled out together, at its first
    micro-batch (the weights do not change within a step, so this samples what
    rolling each out just before its own backward would), which gives the
    step's token counts before any backward pass.
    """

    # compute_loss returns each micro-batch's share of the step's loss, already
    # normalized by the step's token counts: the Trainer must not divide it again.
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: torch.nn.Module,
        args: ViGOSConfig,
        train_dataset: Any,
        processing_class: Any,
        *,
        rollout: Rollout | None = None,
        teacher: TeacherPolicy | None = None,
        callbacks: list[TrainerCallback] | None = None,
    ):
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            data_collator=collate_examples,
            processing_class=processing_class,
            callbacks=callbacks,
        )
        self.teacher = teacher or args.teacher_policy(self.model)
        self.rollout = rollout or args.build_rollout(
            processing_class, model_path=getattr(unwrap(self.model), "name_or_path", None)
        )
        self.scorer = args.build_scorer(
            processing_class,
            teacher=self.teacher,
            reduce_sum=self._reduce_sum,
            lockstep=self._weights_sharded(),
            separate_teachers=args.separate_teachers(processing_class, self.model),
        )
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._metric_steps: set[int] = set()
        self._step_batches: list[Sequence[Example]] | None = None
        self._step_rollouts: deque[list[list[int]]] = deque()
        self._step_totals: deque[torch.Tensor] = deque()
        self.add_callback(_TeacherUpdate(self))
        if hasattr(self.rollout, "sync"):  # an engine with its own copy of the policy (vLLM)
            self.add_callback(_PolicySync(self, every=args.vllm_sync_steps))
        self.add_callback(_MetricsFile(Path(args.output_dir)))
        if args.eval_benchmarks:
            from vigos.eval.during_training import BenchmarkCallback

            self.add_callback(BenchmarkCallback(self))
        if args.diagnostics_steps:
            from vigos.diagnostics.callback import DiagnosticsCallback

            self.add_callback(
                DiagnosticsCallback(self, every=args.diagnostics_steps, sample_size=args.diagnostics_sample_size)
            )

    def _weights_sharded(self) -> bool:
        """FSDP or DeepSpeed ZeRO-3: weights are gathered collectively in every forward pass."""
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

        return self.accelerator.num_processes > 1 and (self.is_fsdp_enabled or is_deepspeed_zero3_enabled())

    def _reduce_sum(self, counts: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(counts, reduction="sum") if self.accelerator.num_processes > 1 else counts

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The optimizer step's micro-batches; they are rolled out at the step's first ``compute_loss``
        (after the Trainer has restored the RNG on a resume)."""
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._step_batches, self._step_rollouts, self._step_totals = list(batch_samples), deque(), deque()
        return batch_samples, None

    def _roll_out_step(self, model) -> None:
        counts = []
        for batch in self._step_batches:
            completions = self.rollout(model, batch)
            self._step_rollouts.append(completions)
            counts.append(self.scorer.totals(completions).to(self.args.device))
        step = self._reduce_sum(torch.stack(counts).sum(0))
        if self.args.loss_normalization == "micro_batch":
            # The release's way: each term a mean over its own micro-batch on this process, and the
            # step the average over its micro-batches and processes (the rollout count stays the step's).
            share = len(counts) * self.accelerator.num_processes
            self._step_totals = deque(torch.cat([step[:1], c[1:] * share]) for c in counts)
        else:
            self._step_totals = deque([step] * len(counts))

    def compute_loss(self, model, inputs: Sequence[Example], return_outputs: bool = False, num_items_in_batch=None):
        """Rollout → spans → teachers → loss (METHOD.md section 3)."""
        start = time.perf_counter()
        if self._step_batches:  # a micro-batch of the training loop's current step, in order
            if not self._step_rollouts:
                self._roll_out_step(model)
            completions, totals = self._step_rollouts.popleft(), self._step_totals.popleft()
            if not self._step_rollouts:
                self._step_batches = None
        else:
            completions, totals = self.rollout(model, inputs), None
        # The whole step's rollouts happen at its first micro-batch: the step's sum is its rollout time.
        rollout_seconds = time.perf_counter() - start
        examples = [e for e in inputs for _ in range(self.args.num_generations)]
        scored = self.scorer(model, examples, completions, step_totals=totals)
        scored.metrics["time_rollout"] = rollout_seconds
        self._record(scored, examples)
        # Each term is a mean over the global batch's tokens, while DDP averages
        # gradients over processes: scale back so the gradient is the global mean's.
        loss = scored.loss * self.accelerator.num_processes
        return (loss, scored) if return_outputs else loss

    def _record(self, scored: ScoreOutput, examples: Sequence[Example]) -> None:
        for name, value in scored.metrics.items():
            self._metrics[name].append(value)
        self._metric_steps.add(self.state.global_step)
        # The optimizer step these rollouts train (1-based, as in metrics.jsonl and checkpoint-N).
        step = self.state.global_step + 1
        every = self.args.log_completions_steps
        if every and step % every == 0 and self.is_world_process_zero():
            tokenizer = self.processing_class.tokenizer
            records = [
                {
                    "step": step,
                    "row": example.row,
                    "question": example.question,
                    "reference": example.answer,
                    "completion": DESCRIPTION_OPEN + tokenizer.decode(ids, skip_special_tokens=True),
                    "valid": spans.valid,
                    "reason": spans.reason,
                    "answer": spans.answer,
                }
                for example, ids, spans in list(zip(examples, scored.completion_ids, scored.spans))[
                    : self.args.num_completions_to_log
                ]
            ]
            path = Path(self.args.output_dir) / "completions.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with reporting_full_disk(path.parent, path.name), path.open("a") as f:
                f.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
            log_completions(self.callback_handler.callbacks, records, step)

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """The Hub model card (``README.md``) in ``output_dir``: the method, the settings that matter, the final
        metrics and how to load the weights (`vigos.training.model_card`). ``push_to_hub`` calls it before
        uploading; ``vigos train`` after saving. Its arguments (the Trainer's) are not used."""
        if not self.is_world_process_zero():
            return
        adapter = hasattr(unwrap(self.model), "peft_config")
        card = training_card(self.args, self.state.log_history, adapter=adapter)
        path = Path(self.args.output_dir) / CARD
        with reporting_full_disk(path.parent, CARD):
            card.save(path)

    def log_beside(self, logs: dict[str, float]) -> None:
        """Log numbers measured beside training at this step (diagnostics, benchmarks) from a callback.

        The Trainer's own ``log`` marks the step's log as done, so a callback logging from ``on_step_end``
        would drop the step's loss and rates (which the Trainer logs after the callbacks): that flag is
        kept as it was."""
        due = self.control.should_log
        self.log(logs)
        self.control.should_log = due

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the per-step mean of each ViGOS metric since the last log."""
        if self._metrics and "loss" in logs:
            # The Trainer logs the loss itself. Each micro-batch recorded its share
            # of its step's value: sum the shares, then average over the steps.
            for name, values in self._metrics.items():
                if name != "loss":
                    logs[name] = sum(values) / len(self._metric_steps)
            self._metrics.clear()
            self._metric_steps.clear()
        super().log(logs, start_time)


class _TeacherUpdate(TrainerCallback):
    """Lets an EMA teacher follow the weights after every optimizer step."""

    def __init__(self, trainer: ViGOSTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.teacher.update(self.trainer.model)


class _PolicySync(TrainerCallback):
    """Pushes the policy to the rollout engine every ``every`` optimizer steps, so rollouts stay on-policy."""

    def __init__(self, trainer: ViGOSTrainer, every: int):
        self.trainer = trainer
        self.every = every

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            self.trainer.rollout.sync(self.trainer.model)


class _MetricsFile(TrainerCallback):
    """Appends every log entry to ``output_dir/metrics.jsonl`` (main process only)."""

    def __init__(self, output_dir: Path):
        self.path = output_dir / "metrics.jsonl"

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with reporting_full_disk(self.path.parent, self.path.name), self.path.open("a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")
