"""``vigos export``: the merged, standalone model computes what base + adapter computes."""

from __future__ import annotations

import argparse

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from vigos.export import add_export_arguments, export_command
from vigos.models.tiny_families import FAMILY_ARCHS
from vigos.training.recipe import language_lora_targets


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vigos export")
    add_export_arguments(parser)
    return parser.parse_args(list(argv))


def save_random_adapter(base_dir, out_dir):
    """A LoRA adapter with random non-zero weights (so merging it changes the model), saved as a run saves it."""
    model = AutoModelForImageTextToText.from_pretrained(base_dir, dtype=torch.float32)
    torch.manual_seed(0)
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        init_lora_weights=False,
        target_modules=language_lora_targets(
            ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        ),
    )
    get_peft_model(model, lora).save_pretrained(out_dir)
    AutoProcessor.from_pretrained(base_dir).save_pretrained(out_dir)


def logits(model, processor):
    image = Image.new("RGB", (112, 112), (40, 160, 220))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + "<description> blue"
    batch = processor(text=[text], images=[image], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return model.eval()(**batch).logits


@pytest.mark.parametrize("fixture_name", ["tiny_model_dir", "tiny_qwen3_dir", *FAMILY_ARCHS])
def test_exported_model_equals_base_plus_adapter(request, tmp_path, fixture_name, capsys):
    if fixture_name in FAMILY_ARCHS:
        base_dir = request.getfixturevalue("family_dirs")[fixture_name]
    else:
        base_dir = request.getfixturevalue(fixture_name)
    save_random_adapter(base_dir, tmp_path / "adapter")

    assert export_command(parse("--adapter", str(tmp_path / "adapter"), "--out", str(tmp_path / "merged"))) == 0
    assert "merged" in capsys.readouterr().out

    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    processor = AutoProcessor.from_pretrained(tmp_path / "merged")
    base = AutoModelForImageTextToText.from_pretrained(base_dir, dtype=torch.float32)
    base_logits = logits(base, processor)
    with_adapter = PeftModel.from_pretrained(base, tmp_path / "adapter")
    expected = logits(with_adapter, processor)

    assert (expected - base_logits).abs().max() > 1e-2, (
        "the adapter does not change the model; the test would be vacuous"
    )
    torch.testing.assert_close(logits(merged, processor), expected, rtol=1e-5, atol=1e-5)


def test_base_override_and_dtype(tiny_model_dir, tmp_path):
    save_random_adapter(tiny_model_dir, tmp_path / "adapter")
    config = tmp_path / "adapter" / "adapter_config.json"
    # The adapter names a base that is not on this machine; --base points at a local copy.
    config.write_text(config.read_text().replace(str(tiny_model_dir), "/nowhere/base-model"))
    args = parse(
        "--adapter",
        str(tmp_path / "adapter"),
        "--out",
        str(tmp_path / "merged"),
        "--base",
        str(tiny_model_dir),
        "--dtype",
        "bfloat16",
    )
    assert export_command(args) == 0
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged")
    assert next(merged.parameters()).dtype == torch.bfloat16


def test_clear_errors(tiny_model_dir, tmp_path, capsys):
    out = str(tmp_path / "merged")
    assert export_command(parse("--adapter", str(tmp_path / "missing"), "--out", out)) == 2
    assert "not a directory" in capsys.readouterr().err

    assert export_command(parse("--adapter", str(tiny_model_dir), "--out", out)) == 2
    assert "no adapter_config.json" in capsys.readouterr().err

    save_random_adapter(tiny_model_dir, tmp_path / "adapter")
    config = tmp_path / "adapter" / "adapter_config.json"
    config.write_text(config.read_text().replace(str(tiny_model_dir), str(tmp_path / "gone")))
    assert export_command(parse("--adapter", str(tmp_path / "adapter"), "--out", out)) == 2
    err = capsys.readouterr().err
    assert "could not load the base model" in err and "--base" in err

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x")
    args = parse("--adapter", str(tmp_path / "adapter"), "--out", str(tmp_path / "full"), "--base", str(tiny_model_dir))
    assert export_command(args) == 2
    assert "not empty" in capsys.readouterr().err
