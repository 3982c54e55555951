"""End to end: ViGOS and OPSD training of tiny real-architecture VLMs with LoRA."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from train_args import tiny_run_args
from vigos.data.examples import ExampleDataset
from vigos.data.rows import Example
from vigos.models.modeling import unwrap
from vigos.training.recipe import apply_lora
from vigos.training.trainer import ViGOSTrainer

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


def colour_examples():
    return [
        Example(
            question="What colour is the square?", answer=name, image=Image.new("RGB", (112, 112), rgb), row=i, meta={}
        )
        for i, (name, rgb) in enumerate(COLOURS.items())
    ]


def probe_logits(model, processor, example):
    """Logits of the adapter-off model on a fixed input: the fixed teacher's view."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": example.question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=[example.image], return_tensors="pt", return_mm_token_type_ids=True)
    with torch.no_grad(), model.disable_adapter():
        return model(**enc).logits.clone()


@pytest.mark.slow
@pytest.mark.parametrize("fixture_name", ["tiny_model_dir", "tiny_qwen3_dir", "qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("method", ["vigos", "opsd"])
def test_lora_training_end_to_end(request, tmp_path, fixture_name, method):
    """On our trained vocabulary (two families) and on Qwen's real one (all three, by arch name)."""
    if fixture_name in ("tiny_model_dir", "tiny_qwen3_dir"):
        model_dir = request.getfixturevalue(fixture_name)
    else:
        model_dir = request.getfixturevalue("qwen_vocab_dirs")[fixture_name]
    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    args = tiny_run_args(
        tmp_path / "out",
        method=method,
        max_steps=3,
        max_grad_norm=1.0,
        max_completion_length=24,
        num_generations=2,
        log_completions_steps=1,
    )
    model = apply_lora(model, args)
    examples = colour_examples()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    teacher_before = probe_logits(model, processor, examples[0])

    trainer = ViGOSTrainer(model, args, ExampleDataset(examples), processor)
    trainer.train()

    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    terms = {"vigos": ["loss_perception", "loss_reasoning", "loss_reference"], "opsd": ["loss_privileged"]}[method]
    logged = [h for h in trainer.state.log_history if "valid_rate" in h]
    assert logged and all(t in logged[0] for t in terms)
    changed_lora = [n for n, p in model.named_parameters() if "lora_" in n and not torch.equal(p, before[n])]
    changed_base = [n for n, p in model.named_parameters() if "lora_" not in n and not torch.equal(p, before[n])]
    assert changed_lora, "no LoRA weight changed"
    # The release's module names reach Qwen2.5-VL's vision MLP (not Qwen3-VL's), and its adapter trains too.
    assert any(".visual." in n for n in changed_lora) == (fixture_name in ("tiny_model_dir", "qwen2_5_vl"))
    assert not changed_base, f"base weights changed: {changed_base[:3]}"
    assert torch.equal(probe_logits(model, processor, examples[0]), teacher_before), "the fixed teacher moved"
    assert (tmp_path / "out" / "metrics.jsonl").exists() and (tmp_path / "out" / "completions.jsonl").exists()


def test_ema_teacher_follows_the_weights(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    # TrainingArguments' own logging_steps and seed, as this test has always run with.
    args = tiny_run_args(tmp_path, teacher="ema", ema_decay=0.5, max_completion_length=16, logging_steps=500, seed=42)
    model = apply_lora(model, args)
    trainer = ViGOSTrainer(model, args, ExampleDataset(colour_examples()), processor)
    snapshot_before = {n: t.clone() for n, t in trainer.teacher.snapshot.items()}
    trainer.train()
    live = dict(unwrap(model).named_parameters())
    moved = [n for n, t in trainer.teacher.snapshot.items() if not torch.equal(t, snapshot_before[n])]
    assert moved, "the EMA teacher never moved"
    for name in moved[:5]:  # strictly between the start and the live weights
        assert not torch.equal(trainer.teacher.snapshot[name], live[name].detach())
