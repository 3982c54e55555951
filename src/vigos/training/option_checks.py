"""Checks of option values; each error names the option and the values or the range it takes."""

from __future__ import annotations

import importlib.util
import math
from typing import Any

from vigos import prompts
from vigos.method.losses import LOSS_NAMES, SAMPLED_TOKEN_LOSSES
from vigos.method.teachers import TEACHER_KINDS
from vigos.rollout.hf import SAMPLERS

METHODS = ("vigos", "opsd", "grpo")
LOSS_NORMALIZATIONS = ("step", "micro_batch")
ROLLOUT_ENGINES = ("hf", "vllm_server", "vllm_colocate")
BAD_ROWS = ("skip", "error")


def _check_report_to(names: list[str]) -> None:
    """The Trainer checks the integrations' names only once the model is loaded; check them here."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    unknown = [name for name in names if name not in INTEGRATION_TO_CALLBACK]
    if unknown:
        raise ValueError(
            f"report_to must name integrations among {', '.join(INTEGRATION_TO_CALLBACK)}, "
            f"or be none or all; got {', '.join(map(repr, unknown))}"
        )
    for name, modules in (("tensorboard", ("tensorboard", "tensorboardX")), ("wandb", ("wandb",))):
        if name in names and not any(importlib.util.find_spec(module) for module in modules):
            raise ValueError(f"report_to {name} needs the {name} package: pip install 'vigos[trackers]'")


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(valid)}; got {value!r}")


def _range(
    name: str,
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    hint: str = "",
) -> None:
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high or math.isnan(value):  # NaN compares false with every bound
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        allowed = " and ".join(x for x in (lo, hi) if x) + (f" {hint}" if hint else "")
        raise ValueError(f"{name} must be {allowed}; got {value!r}")


# Each method's teacher roles, which a `<role>_teacher_model` option may name another model for.
TEACHER_ROLES = {"vigos": ("perception", "reasoning", "reference"), "opsd": ("privileged",), "grpo": ()}


def _check_teacher_models(config: Any) -> None:
    for role in ("perception", "reasoning", "reference", "privileged"):
        option, value = f"{role}_teacher_model", getattr(config, f"{role}_teacher_model")
        if not value:
            continue
        if role not in TEACHER_ROLES[config.method]:
            teachers = ", ".join(TEACHER_ROLES[config.method]) or "none"
            raise ValueError(
                f"{option} is set, but method {config.method!r} has no {role} teacher; its teachers: {teachers}"
            )
        if value.startswith(("http://", "https://")):
            _check_served_teacher(config, role, option)


def _check_served_teacher(config: Any, role: str, option: str) -> None:
    """A served teacher returns top-k log-probabilities at temperature 1, read by the hidden-state scorer."""
    if config.naive_loss:
        raise ValueError(f"{option} is a server: a served teacher needs naive_loss: false")
    if config.distill_temperature != 1.0:
        raise ValueError(
            f"{option} is a server, which returns log-probabilities at temperature 1: set distill_temperature "
            f"to 1 (got {config.distill_temperature})"
        )
    loss = getattr(config, f"{role}_divergence" if role != "privileged" else "opsd_divergence")
    if config.teacher_top_k is None and loss not in SAMPLED_TOKEN_LOSSES:
        raise ValueError(
            f"{option} is a server, read as its top-k tokens: set teacher_top_k (vLLM caps it at its "
            f"--max-logprobs, 20 by default), or give the role a sampled-token loss ({', '.join(SAMPLED_TOKEN_LOSSES)})"
        )


def check_options(config: Any) -> None:
    """The values of the options ``ViGOSConfig`` adds to ``TrainingArguments``."""
    _check_report_to(config.report_to)
    _choice("method", config.method, METHODS)
    _choice("teacher", config.teacher, TEACHER_KINDS)
    _choice("bad_rows", config.bad_rows, BAD_ROWS)
    _choice("loss_normalization", config.loss_normalization, LOSS_NORMALIZATIONS)
    for name in ("perception_divergence", "reasoning_divergence", "reference_divergence", "opsd_divergence"):
        _choice(name, getattr(config, name), LOSS_NAMES)
    _check_teacher_models(config)
    _range("reward_weight", config.reward_weight, low=0.0)
    if config.eval_benchmarks:
        if not config.eval_steps:
            raise ValueError("eval_benchmarks is set: set eval_steps too, the steps between evaluations")
        _range("eval_k", config.eval_k, low=1)
        if config.eval_limit is not None:
            _range("eval_limit", config.eval_limit, low=1)
    if config.method == "grpo" and not config.reward_weight > 0:
        raise ValueError("method 'grpo' trains on the outcome reward alone: set reward_weight above 0 (e.g. 1.0)")
    _range("temperature", config.temperature, low=0.0, low_open=True)
    _range("top_p", config.top_p, low=0.0, high=1.0, low_open=True)
    _range("top_k", config.top_k, low=0)
    _range("num_generations", config.num_generations, low=1)
    _choice("rollout_engine", config.rollout_engine, ROLLOUT_ENGINES)
    _choice("rollout_sampler", config.rollout_sampler, SAMPLERS)
    _range("vllm_sync_steps", config.vllm_sync_steps, low=1)
    _range("vllm_gpu_memory_utilization", config.vllm_gpu_memory_utilization, low=0.0, high=1.0, low_open=True)
    _range("vllm_request_timeout", config.vllm_request_timeout, low=0.0, low_open=True)
    if config.rollout_engine == "vllm_server":
        if not config.use_lora:
            raise ValueError(
                "rollout_engine 'vllm_server' needs use_lora: true: the server is sent the policy as "
                "a LoRA adapter (full weights cannot be pushed to it); use 'vllm_colocate' or 'hf'"
            )
        if not config.vllm_server_url.startswith(("http://", "https://")):
            raise ValueError(f"vllm_server_url must start with http:// or https://; got {config.vllm_server_url!r}")
    _range("max_completion_length", config.max_completion_length, low=1)
    _range("max_prompt_length", config.max_prompt_length, low=1)
    _range("ema_decay", config.ema_decay, low=0.0, high=1.0)
    _range("jsd_beta", config.jsd_beta, low=0.0, high=1.0)
    _range("distill_temperature", config.distill_temperature, low=0.0, low_open=True)
    for name in ("perception_weight", "reasoning_weight", "reference_weight", "opsd_weight"):
        _range(name, getattr(config, name), low=0.0)
    for name in ("token_loss_clip", "description_end_clip", "reasoning_start_clip"):
        if getattr(config, name) is not None:
            _range(name, getattr(config, name), low=0.0, low_open=True)
    if config.loss_chunk_size is not None:
        _range("loss_chunk_size", config.loss_chunk_size, low=1)
    _range("teacher_batch_size", config.teacher_batch_size, low=1)
    if config.teacher_top_k is not None:
        _range("teacher_top_k", config.teacher_top_k, low=1)
        if config.naive_loss:
            raise ValueError("teacher_top_k needs naive_loss: false (the naive path keeps full teacher logits)")
    _range("lora_r", config.lora_r, low=1)
    _range("lora_alpha", config.lora_alpha, low=0, low_open=True)
    _range("lora_dropout", config.lora_dropout, low=0.0, high=1.0)
    _range("min_image_side", config.min_image_side, low=1)
    _choice("images_per_row", config.images_per_row, ("all", "first"))
    if config.max_train_rows is not None:
        _range("max_train_rows", config.max_train_rows, low=1)
    if config.max_images_per_row is not None:
        _range("max_images_per_row", config.max_images_per_row, low=1)
    if config.data_num_proc is not None:
        _range("data_num_proc", config.data_num_proc, low=1)
    _range("log_completions_steps", config.log_completions_steps, low=0)
    _range("diagnostics_steps", config.diagnostics_steps, low=0)
    _range("diagnostics_sample_size", config.diagnostics_sample_size, low=1)
    _range("num_completions_to_log", config.num_completions_to_log, low=0)
    for name, needs in (
        ("student_prompt", {"question"}),
        ("reasoning_prompt", {"question", "answer"}),
        ("reference_prompt", {"question", "answer"}),
    ):
        missing = needs - prompts.template_fields(getattr(config, name))
        if missing:
            raise ValueError(f"{name} must contain {', '.join('{' + m + '}' for m in sorted(missing))}")
    if "answer" in prompts.template_fields(config.student_prompt):
        raise ValueError("student_prompt must not contain {answer}: the student never sees the reference answer")
    if prompts.template_fields(config.perception_prompt):
        raise ValueError(
            "perception_prompt must not contain {question} or {answer}: the perception teacher sees the image only"
        )


def check_trainer_numbers(config: Any) -> None:
    """Ranges of the ``TrainingArguments`` numbers a run uses, named as options."""
    _range("learning_rate", config.learning_rate, low=0.0, low_open=True)
    _range("weight_decay", config.weight_decay, low=0.0)
    _range("max_grad_norm", config.max_grad_norm, low=0.0)
    for name in ("adam_beta1", "adam_beta2"):
        _range(name, getattr(config, name), low=0.0, high=1.0, high_open=True)
    _range("adam_epsilon", config.adam_epsilon, low=0.0, low_open=True)
    # Below 1 a fraction of the run's steps, from 1 a number of steps (TrainingArguments' own reading).
    _range("warmup_steps", config.warmup_steps, low=0.0)
    _range("label_smoothing_factor", config.label_smoothing_factor, low=0.0, high=1.0)
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        _range(name, getattr(config, name), low=1)
    if config.max_steps != -1:
        _range("max_steps", config.max_steps, low=1, hint="or -1 to train num_train_epochs")
    else:
        _range("num_train_epochs", config.num_train_epochs, low=0.0, low_open=True, hint="(or set max_steps)")
    # A step count only matters under its strategy ("steps"); below 1 it is a fraction of the run.
    for strategy, steps in (
        ("logging_strategy", "logging_steps"),
        ("save_strategy", "save_steps"),
        ("eval_strategy", "eval_steps"),
    ):
        if getattr(config, strategy) == "steps" and getattr(config, steps) is not None:
            _range(steps, getattr(config, steps), low=0.0, low_open=True, hint=f"with {strategy}: steps")
    if config.save_total_limit is not None:
        _range("save_total_limit", config.save_total_limit, low=1, hint="or null to keep every checkpoint")
    _range("dataloader_num_workers", config.dataloader_num_workers, low=0)
    for name in ("seed", "data_seed"):
        if getattr(config, name) is not None:
            _range(name, getattr(config, name), low=0, high=2**32 - 1)  # what numpy's seeding takes
    if config.neftune_noise_alpha is not None:
        _range("neftune_noise_alpha", config.neftune_noise_alpha, low=0.0, low_open=True)
