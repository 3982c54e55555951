"""The Hub model card: written by `vigos train` next to the adapter and by `vigos export` next to the merged
model, read back with huggingface_hub as the Hub reads it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from vigos.cli import main
from vigos.export import add_export_arguments, export_command
from vigos.training.config import ViGOSConfig
from vigos.training.model_card import exported_card, final_metrics, training_card

ROOT = Path(__file__).resolve().parents[2]
LOG = [
    {"loss": 0.9, "loss_perception": 0.4, "valid_rate": 0.5, "step": 1},
    {"loss": 0.7, "loss_perception": 0.3, "step": 2, "note": "text is not a metric"},
]


def test_final_metrics_keep_the_last_value_of_each_number():
    assert final_metrics(LOG) == {"loss": 0.7, "loss_perception": 0.3, "valid_rate": 0.5, "step": 2}


@pytest.mark.parametrize("dataset,hub", [("someone/vilp-train", ["someone/vilp-train"]), ("synthetic:train:32", None)])
def test_a_training_card_has_the_hubs_front_matter_and_what_was_done(tmp_path, dataset, hub):
    config = ViGOSConfig(
        output_dir=str(tmp_path / "run"),
        report_to="none",
        model_name_or_path="Qwen/Qwen2.5-VL-3B-Instruct",
        dataset=dataset,
        method="opsd",
        opsd_divergence="sampled_k1",
    )
    card = training_card(config, LOG, adapter=True)
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.base_model == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert loaded.data.library_name == "peft" and loaded.data.pipeline_tag == "image-text-to-text"
    assert {"vigos", "opsd", "lora"} <= set(loaded.data.tags)
    assert loaded.data.datasets == hub
    assert "one privileged teacher" in loaded.text
    assert "| `opsd_divergence` | `sampled_k1` |" in loaded.text
    # Only the settings of this method's teachers; no epoch count beside max_steps.
    assert "perception_divergence" not in loaded.text and "reward_weight" not in loaded.text
    assert "| `loss_perception` | 0.3 |" in loaded.text
    assert "PeftModel.from_pretrained" in loaded.text


@pytest.mark.slow
def test_train_and_export_write_model_cards(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    args = ["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--output_dir", str(run), "--max_steps", "2"]
    assert main(args) == 0
    card = ModelCard.load(run / "README.md")
    assert card.data.base_model == "tiny:qwen2_5_vl" and card.data.library_name == "peft"
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in logged if "loss_perception" in r][-1]
    assert f"| `loss_perception` | {last['loss_perception']:.6g} |" in card.text

    parser = argparse.ArgumentParser()
    add_export_arguments(parser)
    merged = tmp_path / "merged"
    assert export_command(parser.parse_args(["--adapter", str(run), "--out", str(merged)])) == 0
    exported = ModelCard.load(merged / "README.md")
    assert exported.data.library_name == "transformers" and "lora" not in exported.data.tags
    assert "vigos" in exported.data.tags and "merged into" in exported.text
    assert "PeftModel" not in exported.text and "## Settings" in exported.text


def test_an_adapter_without_a_vigos_card_gets_a_plain_merged_card(tmp_path):
    card = exported_card(tmp_path, "base/model")
    assert card.data.base_model == "base/model" and card.data.library_name == "transformers"
    assert "merged into `base/model`" in card.text


def test_a_grpo_card_names_the_reward_and_no_teacher(tmp_path):
    config = ViGOSConfig(output_dir=str(tmp_path), report_to="none", method="grpo", reward_weight=1.0, max_steps=3)
    text = training_card(config, LOG, adapter=False).text
    assert "| `reward_weight` | `1.0` |" in text and "outcome-reward baseline" in text
    assert "divergence" not in text and "num_train_epochs" not in text
    assert "PeftModel" not in text
