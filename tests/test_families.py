"""Gemma 3, LLaVA-OneVision and Idefics3 (SmolVLM's layout) through vigos, each on a tiny random model of the
real transformers class with the family's own tokenizer layout, chat template and processor.

What a Qwen-VL model goes through, each of these goes through too: prompts expanded as the family's processor
expands them, batches laid out as its model takes them, completions parsed on its tokenizer, all three teachers
computed as the plain way computes them, rollouts (the lean sampler falls back to ``generate``), and from the
command line training, export and evaluation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from plain import plain_logits
from scoring_cases import expected_vigos, scored_hand_made
from scoring_cases import unclipped_config as config
from vigos.cli import main
from vigos.data.rows import Example
from vigos.method.spans import token_byte_table
from vigos.models.modeling import (
    Context,
    collate_contexts,
    encode_image,
    encode_image_features,
    end_token_ids,
    final_hidden_states,
    image_features_reusable,
    takes_image_features,
    tokenize_prompt,
)
from vigos.models.tiny_families import FAMILY_ARCHS
from vigos.prompts import render_prompt, student_spec
from vigos.rollout.hf import HFGenerateRollout, SamplingParams, vision_token_ids
from vigos.rollout.sampler import LeanDecoder
from vigos.training.recipe import language_lora_targets

ROOT = Path(__file__).resolve().parents[1]
RED = Image.new("RGB", (64, 64), (200, 30, 30))
WIDE = Image.new("RGB", (200, 120), (20, 40, 220))


@pytest.fixture(scope="module", params=FAMILY_ARCHS)
def family(request, family_dirs):
    """(arch, processor, float32 model in eval mode with random non-zero LoRA weights on the language model)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = family_dirs[request.param]
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=language_lora_targets(["q_proj", "v_proj", "up_proj"]),
        init_lora_weights=False,
    )
    return request.param, AutoProcessor.from_pretrained(path), get_peft_model(model, lora).eval()


@pytest.mark.parametrize("images", [[RED], [WIDE], [RED, WIDE]], ids=["square", "wide", "two"])
def test_prompt_ids_are_the_processors(family, images):
    """A prompt's ids, each image's placeholder expanded by vigos, are the processor's own for the same text."""
    _, processor, _ = family
    text = render_prompt(processor, "What colour is it?", "<description>", len(images))
    ours = tokenize_prompt(processor, text, encode_image(processor, images))
    theirs = processor(text=[text], images=[images], add_special_tokens=False)["input_ids"][0]
    assert ours == list(theirs)


def test_each_row_of_a_batch_computes_what_it_computes_alone(family):
    """Rows with one image, two images, none and a wide image, padded into one batch: each row's logits are its
    own."""
    _, processor, model = family
    one, two = encode_image(processor, RED), encode_image(processor, [RED, WIDE])
    wide = encode_image(processor, WIDE)
    text = processor.tokenizer(" A red square on grey.", add_special_tokens=False)["input_ids"]
    contexts = [
        Context(tokenize_prompt(processor, render_prompt(processor, "Which?", "", n), image), appended, image)
        for n, image, appended in ((1, one, text[:3]), (2, two, text[3:4]), (0, None, text[4:]), (1, wide, []))
    ]
    pad = processor.tokenizer.pad_token_id
    with torch.no_grad():
        batched = model(**collate_contexts(contexts, pad_token_id=pad), use_cache=False).logits
        for row, context in enumerate(contexts):
            alone = model(**collate_contexts([context], pad_token_id=pad), use_cache=False).logits[0]
            torch.testing.assert_close(batched[row, : context.length], alone, rtol=1e-4, atol=1e-5)


# Hypothesis calls the test many times: each tokenizer and its byte table are read once.
_tokenizers: dict = {}
_tables: dict = {}


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\u2581"), max_size=40))
def test_span_bytes_are_the_texts_bytes(family_dirs, text):
    """The span parser's byte table gives back each text's UTF-8 bytes from its ids, on every family's tokenizer
    (SentencePiece pieces and byte fallback in Gemma's, byte-level BPE in the others)."""
    from transformers import AutoTokenizer

    for path in family_dirs.values():
        tokenizer = _tokenizers.setdefault(str(path), AutoTokenizer.from_pretrained(path))
        table = _tables.setdefault(str(path), token_byte_table(tokenizer))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert b"".join(table[i] for i in ids) == text.encode()


def test_all_three_teachers_match_the_plain_computation(family):
    """Perception (image alone), reasoning (question and answer) and reference (repair) terms, on the family's
    own tokens, equal the plain computation: the processor encodes each teacher's prompt, full logits, F.kl_div."""
    _, processor, model = family
    example = Example(question="What colour is the square?", answer="red", image=RED, row=0, meta={})
    cfg = config()
    out, completions = scored_hand_made(model, processor, example, cfg)
    expected, counts = expected_vigos(model, processor, example, cfg, completions)
    assert [s.valid for s in out.spans] == [True] + [False] * (len(completions) - 1)
    for name, value in expected.items():
        assert counts[name] > 0, name
        assert out.terms[name].item() == pytest.approx(value, rel=1e-4, abs=1e-7), name
    out.loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    model.zero_grad()


def test_one_vision_encode_serves_every_pass_where_the_model_takes_features(family):
    """Gemma 3 and LLaVA-OneVision take precomputed vision features: one encode per image serves every context
    showing it (the same hidden states as pixels in each pass), and scoring shares it; Idefics3 does not."""
    arch, processor, model = family
    shares = arch != "idefics3"
    # The adapter is on the language model only, so the tower and projector compute the same for all passes.
    assert takes_image_features(model) is shares and image_features_reusable(model) is shares
    example = Example(question="What colour is the square?", answer="red", image=RED, row=0, meta={})
    terms = {}
    for reuse in (True, False):
        out, _ = scored_hand_made(model, processor, example, config(reuse_image_features=reuse))
        assert ("time_vision" in out.metrics) is (reuse and shares)
        terms[reuse] = {name: value.item() for name, value in out.terms.items()}
    for name, value in terms[False].items():
        assert terms[True][name] == pytest.approx(value, rel=1e-5, abs=1e-8), name
    if not shares:
        return
    one, two = encode_image(processor, RED), encode_image(processor, [RED, WIDE])
    text = processor.tokenizer(" A red square.", add_special_tokens=False)["input_ids"]
    contexts = [
        Context(tokenize_prompt(processor, render_prompt(processor, "Which?", "", n), image), text, image)
        for n, image in ((1, one), (2, two), (1, one))
    ]
    pad = processor.tokenizer.pad_token_id
    features = encode_image_features(model, [one, two])
    with torch.no_grad():
        separate = final_hidden_states(model, collate_contexts(contexts, pad_token_id=pad))
        shared = final_hidden_states(model, collate_contexts(contexts, pad_token_id=pad, image_features=features))
    torch.testing.assert_close(shared, separate, rtol=1e-5, atol=1e-6)


def test_student_logits_of_a_two_image_row_match_the_plain_computation(family):
    _, processor, model = family
    prompt = student_spec()
    text = prompt.text("Which is wider?")
    image = encode_image(processor, [RED, WIDE])
    ids = tokenize_prompt(processor, render_prompt(processor, text, prompt.prefill, 2), image)
    appended = processor.tokenizer(" the second", add_special_tokens=False)["input_ids"]
    batch = collate_contexts([Context(ids, appended, image)], pad_token_id=processor.tokenizer.pad_token_id)
    with torch.no_grad():
        ours = model(**batch, use_cache=False).logits[0, len(ids) - 1 : len(ids) - 1 + len(appended)]
        plain = plain_logits(model, processor, [RED, WIDE], text, prompt.prefill, appended)
    torch.testing.assert_close(ours, plain, rtol=1e-4, atol=1e-5)


def test_lean_sampler_samples_what_generate_samples_or_says_it_falls_back(family, caplog):
    """LLaVA-OneVision's Qwen2 and Idefics3's Llama decode in the lean loop, Gemma 3 (sliding windows, scaled
    norms) with ``generate``, saying so once. Either way: for a seed, the tokens ``generate`` samples, on a
    left-padded batch of prompts of different lengths; completions stop at the family's end of turn."""
    arch, processor, model = family
    examples = [
        Example(question="What colour?", answer="red", image=RED, row=0, meta={}),
        Example(
            question="What colour is the wide picture, and how wide is it?", answer="blue", image=WIDE, row=1, meta={}
        ),
    ]
    params = SamplingParams(num_samples=2, max_new_tokens=12)
    assert (LeanDecoder.of(model) is not None) == (arch != "gemma3")
    outputs = []
    for sampler in ("lean", "generate"):
        torch.manual_seed(3)
        with caplog.at_level(logging.INFO, logger="vigos.rollout.hf"):
            outputs.append(HFGenerateRollout(processor, params, sampler=sampler)(model, examples))
    assert outputs[0] == outputs[1]
    said = sum("sampling with generate" in r.getMessage() for r in caplog.records)
    assert said == (1 if arch == "gemma3" else 0)
    ends, vision = set(end_token_ids(processor.tokenizer)), set(vision_token_ids(processor))
    for ids in outputs[0]:
        assert 0 < len(ids) <= 12 and not vision & set(ids)
        assert all(i not in ends for i in ids[:-1])


def test_vigos_serve_samples_and_scores_what_the_model_does_in_process(family_dirs, tmp_path):
    """`vigos serve` on each family: a served teacher's prompt log-probabilities are the local model's; the
    server-rollout client gets, per request seed, the tokens the in-process rollout samples (Gemma 3), or is
    refused up front where the chat template cannot continue the pre-fill as the trainer renders it."""
    from vigos.models.loading import load_model_and_processor
    from vigos.rollout.served_teacher import ServedTeacherClient
    from vigos.rollout.vllm_server import RolloutEngineError, VLLMServerRollout, request_seeds
    from vigos.serve.server import PolicyServer, running

    params = SamplingParams(max_new_tokens=8, num_samples=2, min_new_tokens=2)
    examples = [
        Example(question="What colour?", answer="red", image=RED, row=0, meta={}),
        Example(question="Which is wider?", answer="second", image=[RED, WIDE], row=1, meta={}),
    ]
    for arch, path in family_dirs.items():
        model, processor = load_model_and_processor(str(path))
        model.eval()
        with running(PolicyServer(model, processor, model_name="tiny")) as url:
            image = encode_image(processor, RED)
            ids = tokenize_prompt(processor, render_prompt(processor, "What colour?", "<description>", 1), image)
            ids += processor.tokenizer(" A red square.", add_special_tokens=False)["input_ids"]
            logprobs = ServedTeacherClient(url, option="test").prompt_logprobs(ids, [RED], 3)
            batch = collate_contexts([Context(ids, [], image)], pad_token_id=processor.tokenizer.pad_token_id)
            with torch.no_grad():
                local = torch.log_softmax(model(**batch).logits[0].float(), -1)
            for position in range(1, len(ids)):
                top = local[position - 1].topk(3)
                for token, value in zip(top.indices.tolist(), top.values.tolist()):
                    assert logprobs[position][token] == pytest.approx(value, abs=1e-5), (arch, position)

            if arch != "gemma3":
                # These templates open a continued assistant turn unlike their generation prompt.
                with pytest.raises(RolloutEngineError, match="rollout_engine: hf"):
                    VLLMServerRollout(processor, params, student_spec(), url=url, sync_dir=tmp_path / arch)
                continue
            rollout = VLLMServerRollout(processor, params, student_spec(), url=url, sync_dir=tmp_path / arch)
            torch.manual_seed(3)
            served = rollout(model, examples)
            torch.manual_seed(3)
            expected = []
            for example, seed in zip(examples, request_seeds(len(examples))):
                torch.manual_seed(seed)
                expected.extend(HFGenerateRollout(processor, params)(model, [example]))
            assert served == expected, arch


def test_make_tiny_from_the_command_line(tmp_path, capsys):
    assert main(["make-tiny", "--arch", "gemma3", "--out", str(tmp_path / "g")]) == 0
    assert "wrote a tiny gemma3" in capsys.readouterr().out
    assert json.loads((tmp_path / "g" / "config.json").read_text())["model_type"] == "gemma3"
    assert main(["make-tiny", "--arch", "idefics3", "--vocab", "qwen", "--out", str(tmp_path / "i")]) == 2
    assert "vocab='trained'" in capsys.readouterr().err
    assert main(["make-tiny", "--arch", "gemma2", "--out", str(tmp_path / "x")]) == 2
    assert "choose one of" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("arch", FAMILY_ARCHS)
def test_train_export_and_eval_from_the_command_line(arch, family_dirs, tmp_path, monkeypatch, capsys):
    """`vigos train` (2 steps, TensorBoard), `vigos export` and `vigos eval` on a two-image benchmark."""
    from vigos.eval.fixtures import write_fixture

    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    run, merged = tmp_path / "run", tmp_path / "merged"
    train = ["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--model_name_or_path", str(family_dirs[arch])]
    assert main([*train, "--output_dir", str(run), "--max_steps", "2", "--report_to", "tensorboard"]) == 0
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "valid_rate" in r] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in steps if "loss" in r)
    assert list((run / "runs").rglob("events.out.tfevents.*"))
    assert main(["export", "--adapter", str(run), "--out", str(merged)]) == 0
    data = tmp_path / "bench"
    write_fixture("mmmu", data, n=2)
    args = ["eval", "--model", str(merged), "--benchmarks", "mmmu", "--data-dir", str(data)]
    args += ["--out-dir", str(tmp_path / "eval"), "--k", "2", "--max-new-tokens", "8", "--no-progress"]
    assert main([*args, "--engine", "hf"]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert "mmmu" in json.dumps(summary)
    capsys.readouterr()
