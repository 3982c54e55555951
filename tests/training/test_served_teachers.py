"""A teacher role served by `vigos serve` on 127.0.0.1: a training step's terms and gradients with the served
reasoning teacher equal those with the same model read locally (k = the vocabulary; and the sampled-token
loss), a server with another tokenizer is refused, and a 2-step `vigos train` runs from the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from scoring_cases import COMPLETIONS, unclipped_config
from vigos.cli import main
from vigos.errors import ConfigError
from vigos.models.loading import load_model_and_processor
from vigos.models.modeling import output_head_shape
from vigos.serve.server import PolicyServer, running
from vigos.training.recipe import score_completions

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served_url(tiny_model_dir):
    """The tiny model's base weights (the LoRA student's adapter-off teacher) served on 127.0.0.1."""
    model, processor = load_model_and_processor(str(tiny_model_dir), dtype=torch.float32)
    with running(PolicyServer(model.eval(), processor, model_name="tiny")) as url:
        yield url


def _scored(model, processor, examples, **options):
    rows = [examples[i % 2] for i in range(len(COMPLETIONS))]
    model.zero_grad()
    out = score_completions(model, processor, rows, COMPLETIONS, config=unclipped_config(**options))
    out.loss.backward()
    return out, {n: p.grad.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("loss", ["forward_kl", "sampled_k1"])
def test_a_served_reasoning_teacher_scores_as_the_same_model_read_locally(scoring_setup, served_url, loss):
    model, processor, examples = scoring_setup
    vocab = output_head_shape(model)[0]
    options = dict(teacher_top_k=vocab, reasoning_divergence=loss)
    local, local_grads = _scored(model, processor, examples, **options)
    served, served_grads = _scored(model, processor, examples, reasoning_teacher_model=served_url, **options)
    assert list(served.terms) == list(local.terms)
    for name, value in local.terms.items():
        torch.testing.assert_close(served.terms[name], value, rtol=1e-4, atol=1e-6, msg=name)
    assert local.terms["reasoning"].item() != 0
    assert any(g.abs().max() > 0 for g in local_grads.values())
    for name, grad in local_grads.items():
        torch.testing.assert_close(served_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert "time_served_teachers" in served.metrics


def test_fewer_served_tokens_give_a_top_k_term_no_larger(scoring_setup, served_url):
    model, processor, examples = scoring_setup
    whole, _ = _scored(model, processor, examples, teacher_top_k=output_head_shape(model)[0])
    few, _ = _scored(model, processor, examples, teacher_top_k=4, reasoning_teacher_model=served_url)
    # Coarsened to 4 tokens and the rest, the served term is strictly below the full one: it was served.
    assert 0 < few.terms["reasoning"].item() < whole.terms["reasoning"].item()


def test_a_server_with_another_tokenizer_is_refused(scoring_setup, tiny_model_dir, tmp_path):
    model, processor, _ = scoring_setup
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    served_model, served_processor = load_model_and_processor(str(other))
    served_processor.tokenizer.add_tokens([" orange leaf"])
    with running(PolicyServer(served_model.eval(), served_processor, model_name="other")) as url:
        config = unclipped_config(reasoning_teacher_model=url, teacher_top_k=4)
        with pytest.raises(ConfigError, match=r"reasoning_teacher_model 'http://.*' cannot teach this student"):
            config.separate_teachers(processor, model)


def test_an_unreachable_server_is_a_config_error_naming_the_option(scoring_setup):
    model, processor, _ = scoring_setup
    config = unclipped_config(perception_teacher_model="http://127.0.0.1:9", teacher_top_k=4)
    config.vllm_request_timeout = 5.0
    with pytest.raises(ConfigError, match="perception_teacher_model 'http://127.0.0.1:9'"):
        config.separate_teachers(processor, model)


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(naive_loss=True, teacher_top_k=None), "a served teacher needs naive_loss: false"),
        (dict(distill_temperature=2.0), "set distill_temperature to 1"),
        (dict(teacher_top_k=None), "set teacher_top_k"),
    ],
)
def test_served_teacher_options_are_checked(kw, message):
    with pytest.raises(ValueError, match=message):
        unclipped_config(reasoning_teacher_model="http://127.0.0.1:8000", **{"teacher_top_k": 4, **kw})


def test_a_sampled_token_loss_needs_no_top_k_from_a_server():
    config = unclipped_config(reasoning_teacher_model="http://127.0.0.1:8000", reasoning_divergence="sampled_k1")
    assert config.teacher_models() == {"reasoning": "http://127.0.0.1:8000"}


@pytest.mark.slow
def test_two_steps_of_vigos_train_with_a_served_reasoning_teacher(tmp_path, monkeypatch, served_url):
    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = ["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--output_dir", str(out), "--max_steps", "2"]
    assert main([*args, "--reasoning_teacher_model", served_url, "--teacher_top_k", "8"]) == 0
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "loss_reasoning" in r] == [1, 2]
    assert (out / "adapter_model.safetensors").exists()
