"""`vigos train` and `vigos make-tiny` from the command line, on a CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vigos.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_tiny_config_writes_adapter_and_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--output_dir", str(out), "--max_steps", "2"]) == 0
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()
    assert (out / "checkpoint-2" / "trainer_state.json").exists()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "valid_rate" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for key in ("loss", "loss_perception", "loss_reasoning", "loss_reference", "fallback_rate", "tagless_rate",
                "tokens_reference", "completion_length", "answer_accuracy"):
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
    common = ["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--dataset", str(data), "--max_steps", "1",
              "--save_strategy", "no"]
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
