"""The lean sampler against Hugging Face ``generate`` and against the model's full forward pass."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import LoraConfig, get_peft_model
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from vigos.data.rows import Example
from vigos.models.modeling import collate_contexts
from vigos.models.tiny import make_tiny
from vigos.rollout.hf import HFGenerateRollout, SamplingParams, student_contexts
from vigos.rollout.sampler import LeanDecoder, SamplingFilters, filter_scores
from vigos.training.recipe import language_lora_targets

ARCHS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


@pytest.fixture(
    scope="module", params=[(arch, vocab) for vocab in ("trained", "qwen") for arch in ARCHS], ids=lambda p: "-".join(p)
)
def arch_model(request, tmp_path_factory):
    """Each family on our trained vocabulary and on Qwen's real one (151,936 embedding rows)."""
    arch, vocab = request.param
    if vocab == "qwen":
        path = request.getfixturevalue("qwen_vocab_dirs")[arch]
    else:
        path = make_tiny(arch, tmp_path_factory.mktemp("sampler") / arch)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    return model, processor


def _examples() -> list[Example]:
    # Different question lengths and image sizes: the prompt batch is left-padded.
    return [
        Example(
            question="What colour is the square?",
            answer="red",
            image=Image.new("RGB", (112, 112), (200, 30, 30)),
            row=0,
            meta={},
        ),
        Example(
            question="Leaves are green. What colour is the leaf shown in this picture?",
            answer="blue",
            image=Image.new("RGB", (56, 84), (20, 40, 220)),
            row=1,
            meta={},
        ),
        # A row with two images: both go into its prompt, in order.
        Example(
            question="Which of the two pictures is green?",
            answer="the second",
            image=[Image.new("RGB", (112, 56), (200, 30, 30)), Image.new("RGB", (56, 56), (30, 200, 30))],
            row=2,
            meta={},
        ),
    ]


def _sample(model, processor, params: SamplingParams, sampler: str, seed: int) -> list[list[int]]:
    torch.manual_seed(seed)
    return HFGenerateRollout(processor, params, sampler=sampler)(model, _examples())


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.1, top_p=0.95, top_k=20, max_new_tokens=24, num_samples=2),
        SamplingParams(temperature=0.7, top_p=0.8, top_k=0, max_new_tokens=16, min_new_tokens=16, num_samples=3),
        SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=20, num_samples=1),
    ],
)
def test_lean_sampler_draws_the_tokens_generate_draws(arch_model, params):
    model, processor = arch_model
    for seed in (0, 1):
        lean = _sample(model, processor, params, "lean", seed)
        reference = _sample(model, processor, params, "generate", seed)
        assert lean == reference
        assert len(lean) == len(_examples()) * params.num_samples


def test_lean_sampler_stops_each_row_at_its_end_of_sequence(arch_model):
    model, processor = arch_model
    tokenizer = processor.tokenizer
    eos = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    # A flat distribution over a small vocabulary ends some rows early and others not.
    params = SamplingParams(temperature=50.0, top_p=1.0, top_k=0, max_new_tokens=60, num_samples=4)
    for seed in range(3):
        lean = _sample(model, processor, params, "lean", seed)
        assert lean == _sample(model, processor, params, "generate", seed)
        for completion in lean:
            ends = [i for i, token in enumerate(completion) if token in eos]
            assert ends in ([], [len(completion) - 1])


def test_greedy_lean_decoding_follows_the_full_forward_pass(arch_model):
    """Independent of ``generate``: every greedy token is the argmax of the model's full forward pass over
    the prompt and the tokens before it, so the cache, positions and masks of the lean loop are right."""
    model, processor = arch_model
    params = SamplingParams(temperature=1.0, top_p=1.0, top_k=1, max_new_tokens=12, num_samples=2)
    rollout = HFGenerateRollout(processor, params)
    completions = rollout(model, _examples())
    prompts = student_contexts(processor, _examples(), rollout.prompt)
    for index, completion in enumerate(completions):
        prompt = prompts[index // params.num_samples]
        prompt.appended_ids = completion
        batch = collate_contexts([prompt], pad_token_id=rollout.pad_token_id)
        with torch.no_grad():
            logits = model(**batch).logits[0, len(prompt.prompt_ids) - 1 : -1]
        suppressed = torch.tensor(rollout.suppressed_ids)
        logits[:, suppressed] = -float("inf")
        assert logits.argmax(-1).tolist() == completion


def test_lean_sampler_with_lora_matches_generate_on_the_adapted_model(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.1,
        target_modules=language_lora_targets(
            ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        ),
    )
    model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.train()  # the rollout switches dropout off itself
    params = SamplingParams(max_new_tokens=20, num_samples=2)
    torch.manual_seed(5)
    lean = HFGenerateRollout(processor, params)(model, _examples())
    torch.manual_seed(5)
    unmerged = HFGenerateRollout(processor, params, merge_lora=False, sampler="generate")(model, _examples())
    torch.manual_seed(5)
    with model.disable_adapter():
        base = HFGenerateRollout(processor, params)(model, _examples())
    assert lean == unmerged
    assert lean != base
    assert model.training


def test_each_prompt_is_prefilled_once_for_all_its_samples(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    encoded_images = []
    model.model.visual.register_forward_hook(
        lambda _m, args, kwargs, _o: encoded_images.append(len(kwargs["grid_thw"])), with_kwargs=True
    )
    HFGenerateRollout(processor, SamplingParams(max_new_tokens=5, num_samples=4))(model, _examples())
    assert encoded_images == [4]  # three prompts (four images), twelve samples, one vision pass over the four


def test_models_the_lean_loop_does_not_cover_fall_back_to_generate(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    dora = get_peft_model(model, LoraConfig(r=4, use_dora=True, target_modules=language_lora_targets(["q_proj"])))
    params = SamplingParams(max_new_tokens=10, num_samples=2)
    assert _sample(dora, processor, params, "lean", 2) == _sample(dora, processor, params, "generate", 2)
    assert LeanDecoder.of(torch.nn.Linear(2, 2)) is None


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    temperature=st.sampled_from([0.5, 1.0, 1.1]),
    top_k=st.sampled_from([0, 1, 3, 20, 64]),
    top_p=st.sampled_from([0.3, 0.95, 1.0]),
    step=st.integers(0, 4),
    ties=st.booleans(),
)
def test_filters_equal_generates_logits_processors(seed, temperature, top_k, top_p, step, ties):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(3, 40, generator=generator)
    if ties:  # equal scores at the top-k and top-p boundaries
        scores = scores.round()
    filters = SamplingFilters(temperature, top_k, top_p, min_new_tokens=3, eos_token_ids=(2, 0), suppressed_ids=(5, 7))
    processors = LogitsProcessorList(
        [MinNewTokensLengthLogitsProcessor(10, 3, [2, 0]), SuppressTokensLogitsProcessor([5, 7])]
    )
    if temperature != 1.0:
        processors.append(TemperatureLogitsWarper(temperature))
    if top_k:
        processors.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p))
    input_ids = torch.zeros(3, 10 + step, dtype=torch.long)
    torch.testing.assert_close(filter_scores(scores, step, filters), processors(input_ids, scores), rtol=0, atol=0)


def test_decoder_weights_are_plain_tensors_outside_autograd(tiny_model_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=language_lora_targets(["q_proj", "up_proj"])))
    decoder = LeanDecoder.of(lora)
    assert decoder is not None
    assert not any(t.requires_grad for layer in decoder.layers for t in (layer.qkv, layer.gate_up, layer.down, layer.o))
    assert not decoder.head_weight.requires_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_norm_folded_into_the_next_product_equals_norm_then_product(tiny_model_dir, dtype):
    """The decode loop's RMSNorm (weight and sqrt(H) folded into the next product) against the model's
    own norm and projection: equal to float32 rounding in float32; in bfloat16 no further from the
    float32 result than the model's own bfloat16 computation is (up to a factor for rounding order)."""
    from vigos.rollout.sampler import _fused, _root_eps, _unit_rms

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    block = model.model.language_model.layers[0]
    norm, mlp = block.post_attention_layernorm, block.mlp
    x = torch.randn(5, norm.weight.shape[0], generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():
        exact = torch.cat([mlp.gate_proj(norm(x)), mlp.up_proj(norm(x))], dim=-1)
        model.to(dtype)
        weight, _ = _fused(mlp.gate_proj, mlp.up_proj, norm=norm)
        folded = _unit_rms(x.to(dtype), _root_eps(norm, x.shape[-1], x.device)) @ weight
        models_own = torch.cat([mlp.gate_proj(norm(x.to(dtype))), mlp.up_proj(norm(x.to(dtype)))], dim=-1)
    assert folded.dtype == dtype
    if dtype == torch.float32:
        torch.testing.assert_close(folded, exact, rtol=1e-5, atol=1e-5)
    else:
        ours_error = (folded.float() - exact).abs().max()
        models_error = (models_own.float() - exact).abs().max()
        assert ours_error <= 2 * models_error + 1e-6
