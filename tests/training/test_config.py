"""ViGOSConfig defaults, range checks, and YAML + command-line loading."""

from __future__ import annotations

import dataclasses
import re

import pytest
from transformers import TrainingArguments

from vigos.errors import ConfigError
from vigos.training.config import ViGOSConfig
from vigos.training.config_file import load_config, parse_overrides


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
        (
            {"rollout_engine": "vllm_server", "vllm_server_url": "localhost:8000"},
            "vllm_server_url must start with http://",
        ),
    ],
)
def test_range_checks_name_the_option(kw, message):
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        make(**kw)


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "method: opsd\noutput_dir: out\nreport_to: none\nlora_target_modules: [q_proj, v_proj]\ntoken_loss_clip: null\n"
    )
    cfg = load_config(
        path,
        parse_overrides(
            [
                "--lora_r",
                "4",
                "--learning-rate=1e-4",
                "--use_lora",
                "false",
                "--reasoning_start_clip",
                "none",
                "--lora_target_modules",
                "q_proj,k_proj",
            ]
        ),
    )
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
    """Library code raises ConfigError/DataError (the CLI makes them one line and exit code 2), never SystemExit."""
    from vigos.errors import DataError
    from vigos.models.loading import load_model_and_processor
    from vigos.training.recipe import resolve_dataset, train

    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="model_name_or_path is not set"):
        train(ViGOSConfig(output_dir=str(tmp_path), report_to="none", dataset="x"))
    with pytest.raises(ConfigError, match="dataset is not set"):
        train(ViGOSConfig(output_dir=str(tmp_path), report_to="none", model_name_or_path="x"))
    with pytest.raises(ConfigError, match="could not load the model"):
        load_model_and_processor(str(tmp_path / "no-model"))
    with pytest.raises(DataError, match="no split 'nope'"):
        resolve_dataset("synthetic:nope:4")


# Item 7: a command-line value means what the same text means in the YAML file.
SAME_TEXT_BOTH_WAYS = [
    ("report_to", "none", []),
    ("report_to", "null", []),
    ("report_to", "[tensorboard]", ["tensorboard"]),
    ("report_to", "tensorboard,wandb", ["tensorboard", "wandb"]),
    ("report_to", "None", []),
    ("save_strategy", "steps", "steps"),
    ("save_strategy", "no", "no"),  # YAML 1.1 reads `no` as false
    ("eval_strategy", "no", "no"),
    ("lr_scheduler_type", "cosine", "cosine"),
    ("learning_rate", "1e-5", 1e-5),  # YAML 1.1 reads `1e-5` as text
    ("learning_rate", "3", 3.0),
    ("lora_target_modules", "[q_proj, v_proj]", ["q_proj", "v_proj"]),
    ("lora_target_modules", "q_proj,v_proj", ["q_proj", "v_proj"]),
    ("lora_target_modules", "q_proj", ["q_proj"]),
    ("max_train_rows", "none", None),
    ("max_train_rows", "null", None),
    ("max_train_rows", "~", None),
    ("max_train_rows", "5", 5),
    ("token_loss_clip", "none", None),
    ("use_lora", "no", False),
    ("use_lora", "true", True),
    ("use_lora", "on", True),
    ("dataset_split", "010", "010"),  # YAML 1.1 reads `010` as octal 8
    ("dataset_split", "2024-01-01", "2024-01-01"),  # and this as a date
    ("student_prompt", "'Q: {question}'", "Q: {question}"),
    ("lr_scheduler_kwargs", "{num_cycles: 2}", {"num_cycles": 2}),
]


@pytest.mark.parametrize("key, text, expected", SAME_TEXT_BOTH_WAYS)
def test_an_option_means_the_same_in_the_yaml_file_and_on_the_command_line(tmp_path, key, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(f"output_dir: out\n{key}: {text}\n")
    from_file = load_config(path)
    from_command_line = load_config(None, parse_overrides(["--output_dir", "out", f"--{key}", text]))
    assert getattr(from_file, key) == expected
    assert getattr(from_command_line, key) == expected
    assert from_file == from_command_line


def test_unquoted_yaml_that_reads_as_a_mapping_where_text_is_due_says_to_quote_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("student_prompt: {question}\n")
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"option 'student_prompt' in {path}: cannot read {{'question': None}} as text; put the text in quotes"
        ),
    ):
        load_config(path)


def test_command_line_text_that_yaml_would_read_otherwise_is_taken_as_typed():
    """The shell delimits the value already: a prompt with ': ' or braces is text, not a YAML mapping."""
    cfg = load_config(
        None,
        parse_overrides(
            [
                "--output_dir",
                "out",
                "--student_prompt",
                "Q: {question}",
                "--perception_prefill",
                "{a",
                "--run_name",
                "1.10",
            ]
        ),
    )
    assert cfg.student_prompt == "Q: {question}" and cfg.perception_prefill == "{a"
    assert cfg.run_name == "1.1"  # read as YAML reads it, then turned into text


@pytest.mark.parametrize(
    "key, text, message",
    [
        ("learning_rate", "fast", "option 'learning_rate' in {where}: cannot read 'fast' as float"),
        ("lora_r", "2.5", "option 'lora_r' in {where}: cannot read 2.5 as int"),
        ("use_lora", "maybe", "option 'use_lora' in {where}: cannot read 'maybe' as true or false"),
        ("lora_r", "null", "option 'lora_r' in {where}: needs int, not null"),
        ("lora_target_modules", "{a: 1}", "option 'lora_target_modules' in {where}: cannot read {{'a': 1}} as a list"),
        ("max_train_rows", "many", "option 'max_train_rows' in {where}: cannot read 'many' as int or null"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_option_and_where_it_was_given(tmp_path, key, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(f"{key}: {text}\n")
    with pytest.raises(ConfigError, match=re.escape(message.format(where=str(path)))):
        load_config(path)
    with pytest.raises(ConfigError, match=re.escape(message.format(where="the command line"))):
        load_config(None, parse_overrides([f"--{key}", text]))


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


def test_a_bad_learning_rate_on_the_command_line_is_a_config_error():
    with pytest.raises(ConfigError, match=re.escape("invalid configuration: learning_rate must be > 0.0; got -1e-05")):
        load_config(None, parse_overrides(["--output_dir", "x", "--learning_rate", "-1e-5"]))


def test_the_student_spec_has_one_source(tmp_path, tiny_model_dir):
    from transformers import AutoProcessor

    from vigos.prompts import DESCRIPTION_OPEN, STUDENT_PROMPT, PromptSpec, student_spec

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    cfg = ViGOSConfig(output_dir=str(tmp_path), report_to="none", student_prompt="Q: {question}")
    assert cfg.student_spec == student_spec("Q: {question}") == PromptSpec("Q: {question}", DESCRIPTION_OPEN)
    assert cfg.build_rollout(processor).prompt == cfg.student_spec
    default = ViGOSConfig(output_dir=str(tmp_path), report_to="none")
    assert default.build_rollout(processor).prompt == student_spec() == PromptSpec(STUDENT_PROMPT, DESCRIPTION_OPEN)
