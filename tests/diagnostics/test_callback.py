"""Tests for vigos.diagnostics.callback: the diagnostics logged during training, without disturbing it."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from train_args import tiny_run_args
from vigos.data import synthetic
from vigos.data.examples import ExampleDataset
from vigos.data.rows import Example
from vigos.diagnostics.callback import DiagnosticsCallback
from vigos.training.recipe import apply_lora
from vigos.training.trainer import ViGOSTrainer


def world_examples(n, conflict_fraction, seed=3):
    split = synthetic.make_split(n, conflict_fraction=conflict_fraction, seed=seed)
    return [Example(e.question, e.answer, e.image, i, e.to_row()) for i, e in enumerate(split)], split


def train_args(tmp_path, **kw):
    return tiny_run_args(tmp_path, max_completion_length=10, **kw)


def train_run(model_dir, out, with_diagnostics):
    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    args = train_args(out)
    model = apply_lora(model, args)
    examples, _ = world_examples(4, 0.5)
    trainer = ViGOSTrainer(model, args, ExampleDataset(examples), processor)
    if with_diagnostics:
        trainer.add_callback(DiagnosticsCallback(trainer, every=1, sample_size=2))
    trainer.train()
    return trainer, {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_callback_logs_every_step_without_disturbing_training(tiny_model_dir, tmp_path):
    trainer, weights = train_run(tiny_model_dir, tmp_path / "diag", with_diagnostics=True)
    lines = [json.loads(line) for line in (tmp_path / "diag" / "diagnostics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    for line in lines:
        assert line["rows"] == 2 and 0.0 <= line["valid_rate"] <= 1.0 and "leakage" in line
        assert any(key.startswith("reliance_") for key in line)
    logged = [h for h in trainer.state.log_history if "diag_valid_rate" in h]
    assert [h["step"] for h in logged] == [1, 2] and "diag_grounding_n" in logged[0]
    # The step's own loss and rates are still logged at a step that ran the diagnostics.
    assert [h["step"] for h in trainer.state.log_history if "valid_rate" in h] == [1, 2]
    _, plain = train_run(tiny_model_dir, tmp_path / "plain", with_diagnostics=False)
    assert all(torch.equal(weights[name], plain[name]) for name in plain), "diagnostics changed the training run"
