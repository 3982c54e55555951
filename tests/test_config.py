"""ViGOSConfig defaults, range checks, and YAML + command-line loading."""

from __future__ import annotations

import dataclasses

import pytest
from transformers import TrainingArguments

from vigos.cli import ConfigError, load_config, parse_overrides
from vigos.config import ViGOSConfig


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
        ({"method": "grpo"}, "method must be one of vigos, opsd"),
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
        ({"rollout_engine": "vllm_server", "vllm_server_url": "localhost:8000"}, "vllm_server_url must start with http://"),
    ],
)
def test_range_checks_name_the_option(kw, message):
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        make(**kw)


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: opsd\noutput_dir: out\nreport_to: none\nlora_target_modules: [q_proj, v_proj]\ntoken_loss_clip: null\n")
    cfg = load_config(path, parse_overrides(["--lora_r", "4", "--learning-rate=1e-4", "--use_lora", "false",
                                               "--reasoning_start_clip", "none", "--lora_target_modules", "q_proj,k_proj"]))
    assert cfg.method == "opsd" and cfg.lora_r == 4 and cfg.learning_rate == 1e-4 and cfg.use_lora is False
    assert cfg.token_loss_clip is None and cfg.reasoning_start_clip is None
    assert cfg.lora_target_modules == ["q_proj", "k_proj"]


def test_unknown_keys_list_close_matches(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("perception_weigth: 2\n")
    with pytest.raises(ConfigError, match="unknown option 'perception_weigth'.*perception_weight"):
        load_config(path)
    with pytest.raises(ConfigError, match="unknown option 'lora_rank' in the command line.*lora_r"):
        load_config(None, {"lora_rank": "4"})
    with pytest.raises(ConfigError, match="cannot read 'four' as int"):
        load_config(None, {"lora_r": "four", "output_dir": "x"})
    with pytest.raises(ConfigError, match="invalid configuration: method must be one of"):
        load_config(None, {"method": "x", "output_dir": "x"})
    with pytest.raises(ConfigError, match="needs a value"):
        parse_overrides(["--lora_r"])


def test_rollout_sampler_is_checked_and_reaches_the_rollout(tmp_path, tiny_model_dir):
    from transformers import AutoProcessor

    with pytest.raises(ValueError, match="rollout_sampler"):
        ViGOSConfig(output_dir=str(tmp_path), report_to="none", rollout_sampler="beam")
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    for sampler in ("lean", "generate"):
        config = ViGOSConfig(output_dir=str(tmp_path), report_to="none", rollout_sampler=sampler)
        assert config.build_rollout(processor).sampler == sampler


def test_recipe_raises_typed_errors_for_the_cli_to_report(tmp_path, monkeypatch):
    """Library code raises ConfigError/DataError (the CLI turns them into one line and exit code 2), never SystemExit."""
    from vigos.data import DataError
    from vigos.recipe import load_model_and_processor, resolve_dataset, train

    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="model_name_or_path is not set"):
        train(ViGOSConfig(output_dir=str(tmp_path), report_to="none", dataset="x"))
    with pytest.raises(ConfigError, match="dataset is not set"):
        train(ViGOSConfig(output_dir=str(tmp_path), report_to="none", model_name_or_path="x"))
    with pytest.raises(ConfigError, match="could not load the model"):
        load_model_and_processor(str(tmp_path / "no-model"))
    with pytest.raises(DataError, match="no split 'nope'"):
        resolve_dataset("synthetic:nope:4")
