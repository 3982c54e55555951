"""Tests for vigos.training.recipe: typed errors for the CLI to report, and the student prompt's length and key."""

from __future__ import annotations

import pytest
from PIL import Image
from transformers import AutoProcessor

from vigos.errors import ConfigError, DataError
from vigos.models.loading import load_model_and_processor
from vigos.training.config import ViGOSConfig
from vigos.training.recipe import resolve_dataset, student_prompt_key, student_prompt_length, train


def test_recipe_raises_typed_errors_for_the_cli_to_report(tmp_path, monkeypatch):
    """Library code raises ConfigError/DataError (the CLI makes them one line and exit code 2), never SystemExit."""
    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="model_name_or_path is not set"):
        train(ViGOSConfig(output_dir=str(tmp_path), report_to="none", dataset="x"))
    with pytest.raises(ConfigError, match="dataset is not set"):
        train(ViGOSConfig(output_dir=str(tmp_path), report_to="none", model_name_or_path="x"))
    with pytest.raises(ConfigError, match="could not load the model"):
        load_model_and_processor(str(tmp_path / "no-model"))
    with pytest.raises(DataError, match="no split 'nope'"):
        resolve_dataset("synthetic:nope:4")


def test_student_prompt_length_counts_every_image_and_its_key_follows_the_prompt(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    config = ViGOSConfig(output_dir="unused", report_to="none")
    length = student_prompt_length(processor, config)
    one, two = Image.new("RGB", (56, 56)), Image.new("RGB", (112, 56))
    a, b, aa, ab, aaa = (length("What?", images) for images in ([one], [two], [one, one], [one, two], [one] * 3))
    assert aaa - aa == aa - a > 0  # each image adds its own tokens
    assert ab - aa == b - a == 4  # 112x56 is 8 merged patches, 56x56 is 4
    key = student_prompt_key(processor, config)
    assert key == student_prompt_key(processor, config) and len(key) == 64
    assert key != student_prompt_key(
        processor, ViGOSConfig(output_dir="unused", report_to="none", student_prompt="Look. {question}")
    )
