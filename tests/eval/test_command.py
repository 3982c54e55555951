"""EvalConfig's option checks and the `vigos eval` command: errors in one message, the results table."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from eval_runs import lines_of, make_config
from vigos.eval.command import add_eval_arguments, eval_command
from vigos.eval.engines import resolve_engine
from vigos.eval.options import EvalConfig
from vigos.eval.run_folder import EvalError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- options and command-line errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "option"),
    [
        ({"k": 0}, "k"),
        ({"n_samples": 1}, "n_samples"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"batch_size": 0}, "batch_size"),
        ({"limit": 0}, "limit"),
        ({"engine": "tpu"}, "engine"),
        ({"seed": 1.5}, "seed"),
        ({"benchmarks": [" ", ""]}, "benchmarks"),
        ({"model": ""}, "model"),
        ({"student_prompt": "no placeholder"}, "student_prompt"),
        ({"student_prompt": "{question} the answer is {answer}"}, "student_prompt"),
        ({"judge_url": "127.0.0.1:8000"}, "judge_url"),
        ({"judge_url": "http://127.0.0.1:1/v1"}, "judge_model"),
    ],
)
def test_bad_option_values_name_the_option(override, option, tmp_path):
    options = {
        "model": "tiny:qwen2_5_vl",
        "benchmarks": ["cvbench"],
        "data_dir": str(tmp_path),
        "out_dir": str(tmp_path / "out"),
        "k": 2,
        **override,
    }
    with pytest.raises(ValueError, match=rf"^{option}\b"):
        EvalConfig(**options)


def test_benchmark_names_are_split_and_deduplicated(tmp_path):
    config = make_config("tiny:qwen2_5_vl", tmp_path, tmp_path, benchmarks="vilp-f, mathvista,vilp-f")
    assert config.benchmarks == ["vilp-f", "mathvista"]
    assert config.samples_per_item == 2 and config.run_name == "tiny-qwen2_5_vl"


def parse(argv: list[str]) -> Any:
    import argparse

    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("benchmarks", "data", "message"),
    [
        ("vilpf,nope", "DATA", "unknown benchmark 'nope'"),
        ("mmsi", "DATA", "mmsi: local copy not found"),
        ("cvbench", "MISSING", "cvbench: local copy not found"),
    ],
)
def test_eval_command_reports_data_problems_in_one_message(benchmarks, data, message, data_dir, tmp_path, capsys):
    data_path = data_dir if data == "DATA" else tmp_path / "missing"
    args = parse(
        [
            "--model",
            "unused-model",
            "--benchmarks",
            benchmarks,
            "--data-dir",
            str(data_path),
            "--out-dir",
            str(tmp_path / "out"),
        ]
    )
    assert eval_command(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vigos eval: {message}") and "Traceback" not in err


def test_eval_command_rejects_bad_options_and_missing_vllm(data_dir, tmp_path, capsys):
    common = [
        "--model",
        "unused-model",
        "--benchmarks",
        "cvbench",
        "--data-dir",
        str(data_dir),
        "--out-dir",
        str(tmp_path / "out"),
    ]
    assert eval_command(parse(common + ["--k", "3", "--n-samples", "2"])) == 2
    assert capsys.readouterr().err.startswith("vigos eval: n_samples (2) must be at least k (3)")
    assert eval_command(parse(common + ["--student-prompt", "@" + str(tmp_path / "absent.txt")])) == 2
    assert "absent.txt not found" in capsys.readouterr().err
    if importlib.util.find_spec("vllm") is None:
        assert eval_command(parse(common + ["--engine", "vllm"])) == 2
        assert "pip install 'vigos[vllm]'" in capsys.readouterr().err


def test_eval_command_reports_a_model_that_does_not_load(data_dir, tmp_path, capsys):
    args = parse(
        [
            "--model",
            str(tmp_path / "no-model"),
            "--benchmarks",
            "cvbench",
            "--data-dir",
            str(data_dir),
            "--out-dir",
            str(tmp_path / "out"),
            "--engine",
            "hf",
            "--no-progress",
        ]
    )
    assert eval_command(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("vigos eval: could not load the model") and "Traceback" not in err


def test_engine_choice():
    assert resolve_engine("hf", model_given=False) == "hf"
    assert resolve_engine("auto", model_given=True) == "hf"  # a loaded model is generated from in-process
    with pytest.raises(EvalError, match="do not pass a loaded model"):
        resolve_engine("vllm", model_given=True)
    if importlib.util.find_spec("vllm") is None:
        assert resolve_engine("auto", model_given=False) == "hf"


def test_eval_command_runs_and_prints_the_table(tiny_model_dir, data_dir, tmp_path, capsys):
    args = parse(
        [
            "--model",
            str(tiny_model_dir),
            "--benchmarks",
            "cvbench",
            "--data-dir",
            str(data_dir),
            "--out-dir",
            str(tmp_path),
            "--k",
            "2",
            "--max-new-tokens",
            "8",
            "--no-progress",
            "--engine",
            "hf",
            "--student-prompt",
            "Q: {question}\nAnswer in \\boxed{}.",
        ]
    )
    assert eval_command(args) == 0
    out = capsys.readouterr().out
    assert "pass@2" in out.lower() and "| 2 |" in out  # the table: two items
    assert out.rstrip().endswith(f"results: {tmp_path}")
    record = lines_of(tmp_path / "responses" / "cvbench.jsonl")[0]
    assert record["prompt"].startswith("Q: ") and record["prompt"].endswith("Answer in \\boxed{}.")


def test_tile_images_is_a_flag_that_the_resume_command_repeats(tmp_path):
    import argparse

    from vigos.eval.runner import _resume_command

    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    argv = ["--model", "m", "--benchmarks", "mmsi", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path)]
    for extra, expected in (([], False), (["--tile-images"], True)):
        args = parser.parse_args([*argv, *extra])
        assert args.tile_images is expected
        config = make_config("m", tmp_path, tmp_path, benchmarks=["mmsi"], tile_images=args.tile_images)
        command = _resume_command(args, config)
        assert ("--tile-images" in command) is expected and "True" not in command and "False" not in command
