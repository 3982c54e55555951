"""Tests for vigos.training.config: ViGOSConfig defaults, range checks and what it builds (YAML and
command-line loading are in test_config_file.py)."""

from __future__ import annotations

import dataclasses
import re

import pytest
from transformers import TrainingArguments

from vigos.training.config import ViGOSConfig


def make(**kw):
    return ViGOSConfig(output_dir="unused", report_to="none", **kw)


def test_release_defaults():
    cfg = make()
    assert isinstance(cfg, TrainingArguments)
    assert (cfg.perception_weight, cfg.reasoning_weight, cfg.reference_weight) == (1.0, 1.0, 2.0)
    assert (cfg.temperature, cfg.top_p, cfg.top_k) == (1.1, 0.95, 20)
    assert (cfg.token_loss_clip, cfg.description_end_clip, cfg.reasoning_start_clip) == (0.05, 0.05, 0.05)
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (64, 128, 0.05)
    assert cfg.learning_rate == 5e-6 and cfg.max_grad_norm == 0.1
    assert (cfg.rollout_engine, cfg.vllm_sync_steps, cfg.vllm_gpu_memory_utilization) == ("hf", 1, 0.45)
    assert [t.name for t in cfg.teacher_terms()] == ["perception", "reasoning", "reference"]
    assert [t.name for t in make(method="opsd").teacher_terms()] == ["privileged"]


def test_every_own_field_has_help():
    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    for f in dataclasses.fields(ViGOSConfig):
        if f.name not in base:
            assert f.metadata.get("help"), f.name


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"method": "ppo"}, "method must be one of vigos, opsd, grpo"),
        ({"teacher": "frozen"}, "teacher must be one of fixed, current, ema"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"top_p": 1.5}, "top_p must be"),
        ({"jsd_beta": -0.1}, "jsd_beta must be"),
        ({"reasoning_divergence": "kl"}, "reasoning_divergence must be one of forward_kl, reverse_kl, jsd"),
        ({"token_loss_clip": 0.0}, "token_loss_clip must be > 0"),
        ({"bad_rows": "ignore"}, "bad_rows must be one of skip, error"),
        ({"student_prompt": "{question} {answer}"}, "student_prompt must not contain {answer}"),
        ({"reasoning_prompt": "{question} only"}, "reasoning_prompt must contain {answer}"),
        ({"perception_prompt": "Describe {question}"}, "perception teacher sees the image only"),
        ({"rollout_engine": "sglang"}, "rollout_engine must be one of hf, vllm_server, vllm_colocate"),
        ({"vllm_sync_steps": 0}, "vllm_sync_steps must be >= 1"),
        ({"vllm_gpu_memory_utilization": 1.5}, "vllm_gpu_memory_utilization must be > 0.0 and <= 1.0"),
        ({"vllm_request_timeout": 0}, "vllm_request_timeout must be > 0"),
        ({"rollout_engine": "vllm_server", "use_lora": False}, "rollout_engine 'vllm_server' needs use_lora"),
        (
            {"rollout_engine": "vllm_server", "vllm_server_url": "localhost:8000"},
            "vllm_server_url must start with http://",
        ),
    ],
)
def test_range_checks_name_the_option(kw, message):
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        make(**kw)


def test_rollout_sampler_is_checked_and_reaches_the_rollout(tmp_path, tiny_model_dir):
    from transformers import AutoProcessor

    with pytest.raises(ValueError, match="rollout_sampler"):
        ViGOSConfig(output_dir=str(tmp_path), report_to="none", rollout_sampler="beam")
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    for sampler in ("lean", "generate"):
        config = ViGOSConfig(output_dir=str(tmp_path), report_to="none", rollout_sampler=sampler)
        assert config.build_rollout(processor).sampler == sampler


# Item 9: the Trainer's numbers are checked in the config, before any model loads.
@pytest.mark.parametrize(
    "kw, message",
    [
        ({"learning_rate": 0.0}, "learning_rate must be > 0.0; got 0.0"),
        ({"learning_rate": -1e-5}, "learning_rate must be > 0.0; got -1e-05"),
        ({"learning_rate": float("nan")}, "learning_rate must be > 0.0; got nan"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0.0"),
        ({"max_grad_norm": -1.0}, "max_grad_norm must be >= 0.0"),
        ({"adam_beta1": 1.0}, "adam_beta1 must be >= 0.0 and < 1.0; got 1.0"),
        ({"adam_beta2": -0.5}, "adam_beta2 must be >= 0.0 and < 1.0"),
        ({"adam_epsilon": 0.0}, "adam_epsilon must be > 0.0"),
        ({"warmup_steps": -1}, "warmup_steps must be >= 0.0"),
        ({"label_smoothing_factor": 1.5}, "label_smoothing_factor must be >= 0.0 and <= 1.0"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size must be >= 1; got 0"),
        ({"per_device_eval_batch_size": 0}, "per_device_eval_batch_size must be >= 1"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps must be >= 1"),
        ({"max_steps": 0}, "max_steps must be >= 1 or -1 to train num_train_epochs; got 0"),
        ({"num_train_epochs": 0}, "num_train_epochs must be > 0.0 (or set max_steps); got 0"),
        ({"logging_steps": 0}, "logging_steps must be > 0.0 with logging_strategy: steps"),
        ({"save_steps": -2}, "save_steps must be > 0.0 with save_strategy: steps"),
        ({"eval_strategy": "steps", "eval_steps": 0}, "eval_steps must be > 0.0 with eval_strategy: steps"),
        ({"save_total_limit": 0}, "save_total_limit must be >= 1 or null to keep every checkpoint"),
        ({"dataloader_num_workers": -1}, "dataloader_num_workers must be >= 0"),
        ({"seed": -1}, "seed must be >= 0 and <= 4294967295"),
        ({"data_seed": 2**32}, "data_seed must be >= 0 and <= 4294967295"),
        ({"neftune_noise_alpha": 0.0}, "neftune_noise_alpha must be > 0.0"),
        ({"max_train_rows": 0}, "max_train_rows must be >= 1"),
        ({"lora_alpha": 0}, "lora_alpha must be > 0"),
        ({"num_completions_to_log": -1}, "num_completions_to_log must be >= 0"),
    ],
)
def test_trainer_numbers_out_of_range_name_the_option_and_the_range(kw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make(**kw)


def test_report_to_names_are_checked_before_the_trainer_starts():
    with pytest.raises(ValueError, match="report_to must name integrations among azure_ml, .*; got 'tensorbord'"):
        ViGOSConfig(output_dir="unused", report_to=["tensorbord"])
    assert ViGOSConfig(output_dir="unused", report_to=None).report_to == []  # the Trainer would take None as a name


def test_trainer_numbers_at_the_edge_of_their_range_are_accepted():
    cfg = make(
        max_grad_norm=0.0,
        adam_beta1=0.0,
        weight_decay=0.0,
        warmup_steps=0.1,
        save_strategy="no",
        save_steps=0,
        max_steps=3,
        num_train_epochs=0,
        seed=0,
        dataloader_num_workers=0,
        max_train_rows=1,
    )
    assert (cfg.max_grad_norm, cfg.warmup_steps, cfg.max_steps) == (0.0, 0.1, 3)
