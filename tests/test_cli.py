"""`vigos train` and `vigos make-tiny` from the command line, on a CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from vigos.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_tiny_config_writes_adapter_and_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert (
        main(["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--output_dir", str(out), "--max_steps", "2"])
        == 0
    )
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()
    assert (out / "checkpoint-2" / "trainer_state.json").exists()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "valid_rate" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for key in (
        "loss",
        "loss_perception",
        "loss_reasoning",
        "loss_reference",
        "fallback_rate",
        "tagless_rate",
        "tokens_reference",
        "completion_length",
        "answer_accuracy",
    ):
        assert key in steps[0], key


def broken_dataset(tmp_path):
    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.new("RGB", (64, 64), (0, 0, 200)).save(tmp_path / "img" / "ok.png")
    rows = [
        {"question": "What colour?", "image": "img/ok.png", "answer": "blue"},
        {"question": "What colour?", "image": "img/gone.png", "answer": "blue"},
        {"question": "", "image": "img/ok.png", "answer": "blue"},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


@pytest.mark.slow
def test_bad_rows_skip_or_stop(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    data = broken_dataset(tmp_path)
    common = [
        "train",
        "--config",
        str(ROOT / "configs" / "tiny.yaml"),
        "--dataset",
        str(data),
        "--max_steps",
        "1",
        "--save_strategy",
        "no",
    ]
    caplog.set_level("INFO", logger="vigos.data")
    assert main(common + ["--output_dir", str(tmp_path / "skip")]) == 0
    assert "1 of 3 rows kept; skipped 2 (1 empty question, 1 missing image)" in caplog.text
    assert main(common + ["--output_dir", str(tmp_path / "stop"), "--bad_rows", "error"]) == 2
    err = capsys.readouterr().err
    assert "row 1 (field 'image'): image file" in err and "set bad_rows: skip" in err and "Traceback" not in err


def test_config_errors_exit_2_with_a_message(capsys):
    assert main(["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--perception_weigth", "2"]) == 2
    assert "Did you mean: perception_weight" in capsys.readouterr().err
    assert main(["train", "--config", "no-such.yaml"]) == 2
    assert "not found" in capsys.readouterr().err


def test_make_tiny_command(tmp_path, capsys):
    assert main(["make-tiny", "--arch", "qwen2_vl", "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "config.json").exists() and (tmp_path / "m" / "tokenizer.json").exists()


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    "content, problem",
    [
        (
            "output_dir: out\nlearning_rate: 1e-5: 2\n",
            "is not valid YAML: line 2, column 20: mapping values are not allowed here",
        ),
        ("lora_target_modules: [q_proj, v_proj\n", "is not valid YAML: line 2, column 1: expected ',' or ']'"),
        ("output_dir: out\n\tmax_steps: 2\n", "is not valid YAML: line 2, column 1: found character '\\t'"),
        ("- a\n- b\n", "must hold a mapping of option: value"),
    ],
)
def test_malformed_yaml_is_one_line_naming_the_file_and_the_place(tmp_path, capsys, content, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert main(["train", "--config", str(path)]) == 2
    err = one_line_error(capsys)
    assert err.startswith(f"vigos train: config file {str(path)!r} ") and problem in err


def test_a_config_that_is_not_utf8_or_is_a_directory_is_one_line(tmp_path, capsys):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("run_name: café\n".encode("latin-1"))
    assert main(["train", "--config", str(latin1)]) == 2
    assert (
        f"config file {str(latin1)!r} is not UTF-8 text (byte 0xe9 at offset 13); save it as UTF-8"
        in one_line_error(capsys)
    )
    assert main(["train", "--config", str(tmp_path)]) == 2
    assert f"config file {str(tmp_path)!r} is a directory" in one_line_error(capsys)


def test_yaml_tags_cannot_build_python_objects(tmp_path, capsys):
    """Config files are read as plain data only: a python/ tag is an error, and nothing runs."""
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f"run_name: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["train", "--config", str(path)]) == 2
    assert "line 1, column 11: could not determine a constructor for the tag" in one_line_error(capsys)
    assert not marker.exists()


def test_command_line_options_are_read_as_in_the_yaml_file_and_checked_before_the_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    common = [
        "train",
        "--config",
        str(ROOT / "configs" / "tiny.yaml"),
        "--output_dir",
        str(tmp_path / "run"),
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--lr_scheduler_type",
        "cosine",
    ]
    assert main(common + ["--learning_rate", "0"]) == 2
    assert "vigos train: invalid configuration: learning_rate must be > 0.0; got 0.0" in one_line_error(capsys)
    assert main(common + ["--warmup_steps", "-1"]) == 2
    assert "warmup_steps must be >= 0.0; got -1.0" in one_line_error(capsys)
    assert not (tmp_path / "cache").exists()  # no model was built


def unwritable_system_dir() -> Path:
    """A directory even root cannot write to (sysfs refuses new files and directories); skip where there is none."""
    root = Path("/sys")
    try:
        (root / "vigos-write-check").open("w").close()
    except OSError:
        return root
    (root / "vigos-write-check").unlink()
    pytest.skip("/sys is writable here")


UNWRITABLE_OUTPUT_DIRS = {
    # Tests run as root, where chmod stops no write: each of these fails for root too.
    "parent is a file": (lambda tmp: tmp / "file" / "run", "cannot be written to: Not a directory"),
    "is a file": (lambda tmp: tmp / "file", "is a file, not a directory"),
    "existing, read-only": (lambda tmp: unwritable_system_dir(), "cannot be written to: "),
    "new, under a read-only parent": (lambda tmp: unwritable_system_dir() / "vigos-run", "cannot be written to: "),
}


@pytest.mark.parametrize("case", list(UNWRITABLE_OUTPUT_DIRS))
def test_an_unwritable_output_dir_fails_before_the_model_loads(tmp_path, capsys, monkeypatch, case):
    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "file").write_text("not a directory")
    make_path, reason = UNWRITABLE_OUTPUT_DIRS[case]
    output_dir = make_path(tmp_path)
    assert main(["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--output_dir", str(output_dir)]) == 2
    err = one_line_error(capsys)
    assert f"vigos train: output_dir {str(output_dir)!r} {reason}" in err and "set output_dir to a" in err
    assert not (tmp_path / "cache").exists()  # the model was not built


@pytest.mark.slow
def test_train_with_sampled_token_losses(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = ["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--output_dir", str(out), "--max_steps", "2"]
    assert main([*args, "--perception_divergence", "sampled_k1", "--reasoning_divergence", "sampled_k3"]) == 0
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "loss_perception" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in steps)


@pytest.mark.slow
def test_train_the_outcome_reward_baseline_config(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    config = str(ROOT / "configs" / "grpo_tiny.yaml")
    assert main(["train", "--config", config, "--output_dir", str(out), "--max_steps", "2"]) == 0
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "loss_reward" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert not any(key.startswith("loss_") and key != "loss_reward" for key in steps[0])
    assert (out / "adapter_model.safetensors").exists()


def test_train_help_lists_every_vigos_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for option in ("--accelerate_config", "--num_processes", "--perception_teacher_model", "--reward_weight"):
        assert option in printed, option
    assert "Every transformers.TrainingArguments option is accepted too" in printed


def test_a_process_count_below_one_is_refused(capsys):
    assert main(["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--num_processes", "0"]) == 2
    assert "--num_processes must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_train_launches_itself_through_accelerate(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    accelerate = str(ROOT / "configs" / "accelerate" / "cpu_ddp.yaml")
    args = ["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--output_dir", str(out), "--max_steps", "2"]
    assert main([*args, "--save_steps", "2", "--accelerate_config", accelerate, "--num_processes", "2"]) == 0
    # One RNG state per process: both processes trained.
    assert (out / "checkpoint-2" / "rng_state_0.pth").exists() and (out / "checkpoint-2" / "rng_state_1.pth").exists()
    assert (out / "adapter_model.safetensors").exists()
