"""Another model as a teacher role: loaded once, checked against the student's tokenizer and image
processing, and scoring exactly as the plain computation with that model's logits says; the fused
path against the full-logits one, gradients included; and a 2-step `vigos train` from the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from plain import kl, pieces_to_ids, plain_logits
from scoring_cases import COMPLETIONS
from scoring_cases import unclipped_config as config
from vigos import prompts
from vigos.cli import main
from vigos.errors import ConfigError
from vigos.models.tiny import make_tiny
from vigos.training.config import ViGOSConfig
from vigos.training.recipe import score_completions

ROOT = Path(__file__).resolve().parents[2]
VALID = [" A red square. ", "</description>\n", "<think>", " It is red. ", "</think>\n\\boxed{red}"]


@pytest.fixture(scope="module")
def mini_teacher_dir(tmp_path_factory):
    """A tiny Qwen2.5-VL of another size (hidden 128, the student's 64) with the same tokenizer."""
    return make_tiny("qwen2_5_vl", tmp_path_factory.mktemp("teacher") / "mini", size="mini", seed=3)


def test_a_separate_perception_teacher_grades_the_description_with_its_own_model(scoring_setup, mini_teacher_dir):
    model, processor, (example, _) = scoring_setup
    ids, bounds = pieces_to_ids(processor, VALID)
    d0, d1 = bounds[0]  # the description span: the first piece
    alone = score_completions(model, processor, [example], [ids], config=config())
    separate = score_completions(
        model, processor, [example], [ids], config=config(perception_teacher_model=str(mini_teacher_dir))
    )
    teacher = AutoModelForImageTextToText.from_pretrained(mini_teacher_dir, dtype=torch.float32).eval()
    student_text = prompts.render_template(config().student_prompt, question=example.question)
    with torch.no_grad():
        student = plain_logits(model, processor, example.image, student_text, "<description>", ids)
        cfg = config()
        perception = plain_logits(
            teacher, processor, example.image, cfg.perception_prompt, cfg.perception_prefill, ids[d0:d1]
        )
    expected = kl(perception, student[d0:d1]).mean().item()
    assert separate.terms["perception"].item() == pytest.approx(expected, rel=1e-4)
    assert separate.terms["perception"].item() != pytest.approx(alone.terms["perception"].item(), rel=1e-2)
    # The other roles are still the trained model's own (adapter off).
    assert separate.terms["reasoning"].item() == pytest.approx(alone.terms["reasoning"].item(), rel=1e-6)


@pytest.mark.parametrize("loss", ["forward_kl", "sampled_k1"])
def test_fused_and_full_logits_scoring_agree_with_a_separate_teacher(scoring_setup, mini_teacher_dir, loss):
    model, processor, examples = scoring_setup
    rows = [examples[i % 2] for i in range(len(COMPLETIONS))]
    results = []
    for naive in (True, False):
        cfg = config(
            naive_loss=naive,
            teacher_batch_size=2,
            perception_teacher_model=str(mini_teacher_dir),
            reference_teacher_model=str(mini_teacher_dir),
            perception_divergence=loss,
        )
        model.zero_grad()
        out = score_completions(model, processor, rows, COMPLETIONS, config=cfg)
        out.loss.backward()
        results.append((out, {n: p.grad.detach().clone() for n, p in model.named_parameters() if "lora_" in n}))
    (naive, naive_grads), (fast, fast_grads) = results
    for name, value in naive.terms.items():
        torch.testing.assert_close(fast.terms[name], value, rtol=1e-5, atol=1e-6, msg=name)
        assert value.item() != 0, name
    assert any(g.abs().max() > 0 for g in naive_grads.values())
    for name, grad in naive_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_roles_naming_one_source_share_one_loaded_model(scoring_setup, mini_teacher_dir):
    model, processor, _ = scoring_setup
    teachers = config(
        perception_teacher_model=str(mini_teacher_dir), reasoning_teacher_model=str(mini_teacher_dir)
    ).separate_teachers(processor, model)
    assert set(teachers) == {"perception", "reasoning"}
    assert teachers["perception"] is teachers["reasoning"]
    assert not any(p.requires_grad for p in teachers["perception"].model.parameters())
    assert not teachers["perception"].model.training


def test_a_teacher_with_another_vocabulary_is_refused_with_the_option_named(scoring_setup, tiny_model_dir, tmp_path):
    model, processor, _ = scoring_setup
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    tokenizer = AutoProcessor.from_pretrained(other).tokenizer
    tokenizer.add_tokens(["<not_in_the_student>"])
    tokenizer.save_pretrained(other)
    with pytest.raises(ConfigError, match=r"perception_teacher_model '.*other' cannot teach this student: the student"):
        config(perception_teacher_model=str(other)).separate_teachers(processor, model)


def test_a_teacher_with_other_image_processing_is_refused(scoring_setup, tiny_model_dir, tmp_path):
    model, processor, _ = scoring_setup
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    settings_file = other / "preprocessor_config.json"
    if not settings_file.exists():
        settings_file = other / "processor_config.json"
    settings = json.loads(settings_file.read_text())
    target = settings.get("image_processor", settings)
    target["image_mean"] = [0.1, 0.2, 0.3]
    settings_file.write_text(json.dumps(settings))
    with pytest.raises(ConfigError, match="reference_teacher_model .* image processor differs in .*image_mean"):
        config(reference_teacher_model=str(other)).separate_teachers(processor, model)


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(method="opsd", perception_teacher_model="x"), "method 'opsd' has no perception teacher"),
        (dict(privileged_teacher_model="x"), "method 'vigos' has no privileged teacher"),
        (dict(reasoning_teacher_model="http://127.0.0.1:8000"), "is a server, read as its top-k tokens"),
    ],
)
def test_teacher_model_options_are_checked(kw, message):
    with pytest.raises(ValueError, match=message):
        ViGOSConfig(output_dir="unused", report_to="none", **kw)


@pytest.mark.slow
def test_two_steps_of_vigos_train_with_a_separate_perception_teacher(tmp_path, monkeypatch, mini_teacher_dir):
    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = ["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--output_dir", str(out), "--max_steps", "2"]
    assert main([*args, "--perception_teacher_model", str(mini_teacher_dir)]) == 0
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "loss_perception" in r] == [1, 2]
    assert (out / "adapter_model.safetensors").exists()
