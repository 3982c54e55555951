"""Tests for vigos.training.config_file: a config from a YAML file and command-line overrides, read alike."""

from __future__ import annotations

import re

import pytest

from vigos.errors import ConfigError
from vigos.training.config_file import load_config, parse_overrides


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


def test_a_bad_learning_rate_on_the_command_line_is_a_config_error():
    with pytest.raises(ConfigError, match=re.escape("invalid configuration: learning_rate must be > 0.0; got -1e-05")):
        load_config(None, parse_overrides(["--output_dir", "x", "--learning_rate", "-1e-5"]))
