"""Fidelity on Qwen's real vocabulary: every teacher reads exactly the student's text, and the loss and the
LoRA gradients (the vision tower's included) equal a plain per-row computation in float64.

Qwen's byte-level BPE merges across our tags (``>\\n``, `` </``, ``<th``/``ink``), which a locally trained
vocabulary hides. The expected values are computed the obvious way, row by row: the processor encodes each
prompt with its image, the model returns full logits, the KL comes from ``F.kl_div``, and where a teacher
starts reading the student's tokens is found from the tokenizer's own character offsets. Nothing of
vigos's span parser, teacher contexts or chunked loss is reused.
"""

from __future__ import annotations

import unicodedata

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from plain import clipped, kl, plain_logits
from vigos import prompts
from vigos.data.rows import Example
from vigos.method.teachers import make_teacher_policy
from vigos.models.modeling import encode_image
from vigos.models.tiny import QWEN_ARCHS
from vigos.training.config import ViGOSConfig
from vigos.training.recipe import apply_lora, score_completions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=QWEN_ARCHS)
def family(request):
    """(arch, processor, float64 model with a random LoRA adapter on the release's module names)."""
    path = request.getfixturevalue("qwen_vocab_dirs")[request.param]
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float64)
    cfg = ViGOSConfig(output_dir="unused", report_to="none", lora_r=4, lora_alpha=8, lora_dropout=0.0)
    model = apply_lora(model, cfg)
    torch.manual_seed(0)
    with torch.no_grad():  # a live adapter, so that the student differs from the adapter-off teachers
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)
    return request.param, processor, model, ViGOSConfig(output_dir="unused", report_to="none").build_scorer(processor)


def example(colour=(200, 30, 30)) -> Example:
    return Example(question="What colour is the square?", answer="red", image=Image.new("RGB", (112, 112), colour))


def completion_text(
    gaps: list[str], description: str = "A red square", reasoning: str = "It is red", answer: str = "red"
) -> str:
    """A valid completion with ``gaps[i]`` written around each tag and inside the box."""
    g = gaps
    return (
        f"{g[0]}{description}{g[1]}</description>{g[2]}<think>{g[3]}{reasoning}{g[4]}</think>{g[5]}"
        f"\\boxed{{{g[6]}{answer}{g[7]}}}"
    )


def student_ids(processor, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    encoding = processor.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return encoding["input_ids"], encoding["offset_mapping"]


def where_teachers_read(text: str, offsets: list[tuple[int, int]]) -> dict[str, tuple[int, int, int]]:
    """From character offsets alone: (first token the teacher reads, first supervised, end) per teacher.

    The release's rule: a token that carries any character of a tag belongs to the tag.
    """
    d = text.index("</description>")
    t = text.index("<think>", d)
    close = text.index("}", text.index("\\boxed{", t))
    description_end = max((i for i, (s, e) in enumerate(offsets) if e <= d), default=-1) + 1
    opening = next(i for i, (s, e) in enumerate(offsets) if s <= t < e)
    reasoning = [i for i, (s, e) in enumerate(offsets) if s >= t + len("<think>") and s <= close]
    return {"perception": (0, 0, description_end), "reasoning": (opening, reasoning[0], reasoning[-1] + 1)}


def test_ids_in_the_padded_embedding_rows_stand_for_no_text(family):
    """Qwen checkpoints pad the vocabulary (151,665 tokens) to 151,936 embedding rows, and a sampler can draw
    one of the padding ids: it carries no text, so the spans around it are as without it."""
    _, processor, model, scorer = family
    padding = model.get_output_embeddings().weight.shape[0] - 1
    assert padding >= len(processor.tokenizer)
    ids, _ = student_ids(processor, completion_text([" ", " ", "\n", "\n", " ", "\n", "", ""]))
    plain = scorer.parser.parse(ids)
    padded = scorer.parser.parse([padding] + ids)
    assert padded.valid and padded.answer == plain.answer == "red"
    assert padded.description_span == (0, plain.description_span[1] + 1)
    assert padded.reasoning_span == tuple(i + 1 for i in plain.reasoning_span)


def rendered(processor, user_text: str, prefill: str, image_tokens: int) -> str:
    content = [{"type": "image"}] + ([{"type": "text", "text": user_text}] if user_text else [])
    text = processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
    return text.replace(processor.image_token, processor.image_token * image_tokens) + prefill


GAP = st.text(alphabet=" \n\t.", max_size=3)
WORDS = st.text(alphabet="abcxyz ABC019é数学🙂,", min_size=1, max_size=12).filter(lambda s: s.strip())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gaps=st.lists(GAP, min_size=8, max_size=8), description=WORDS, reasoning=WORDS)
def test_each_teacher_reads_its_prompt_then_exactly_the_students_text(family, gaps, description, reasoning):
    arch, processor, model, scorer = family
    text = unicodedata.normalize("NFC", completion_text(gaps, description, reasoning))
    ids, offsets = student_ids(processor, text)
    cfg = ViGOSConfig(output_dir="unused", report_to="none")
    spans = scorer.parser.parse_batch([ids])
    expected = where_teachers_read(text, offsets)
    description_ok = expected["perception"][2] > 0
    assert spans[0].valid == description_ok, (text, spans[0])
    if not description_ok:  # the description has no whole token (it merged into the tag): invalid, as in the release
        return
    image = encode_image(processor, example().image)
    jobs = scorer.teacher_contexts([example()], [ids], [image], spans)
    question = example().question
    user_texts = {
        "perception": cfg.perception_prompt,
        "reasoning": prompts.render_template(cfg.reasoning_prompt, question=question, answer="red"),
    }
    for name in ("perception", "reasoning"):
        (job,) = jobs[name]
        reads, first, end = expected[name]
        decoded = processor.tokenizer.decode(
            job.context.prompt_ids + job.context.appended_ids, skip_special_tokens=False
        )
        assert (
            decoded
            == rendered(processor, user_texts[name], "", image.num_tokens)
            + text[offsets[reads][0] : offsets[end - 1][1]]
        )
        assert job.context.appended_ids == ids[reads:end]
        # The position arithmetic: position `first` of the teacher's sequence predicts the first supervised token.
        sequence = job.context.prompt_ids + job.context.appended_ids
        assert sequence[job.first + 1 : job.first + 1 + job.count] == ids[first:end]
    # What comes before <think> in the reasoning teacher's view is at most the gap and the `>` of
    # </description> that the opening token carries (`><` is one token).
    (job,) = jobs["reasoning"]
    assert processor.tokenizer.decode(job.context.appended_ids).lstrip(" \n\t.>").startswith("<think>")


def test_real_bpe_merges_across_our_tags(family):
    """What the fix is for: Qwen's vocabulary writes `>\\n` as one token, so the token after `<think` is shared
    by the tag and the reasoning's first newline, and ` </` joins the description's last space to the tag."""
    arch, processor, _, scorer = family
    tokenizer = processor.tokenizer
    assert len(tokenizer(">\n", add_special_tokens=False)["input_ids"]) == 1
    assert len(tokenizer(" </", add_special_tokens=False)["input_ids"]) == 1
    text = completion_text(["", " ", "\n", "\n", "\n", "\n", "", ""])
    ids, offsets = student_ids(processor, text)
    spans = scorer.parser.parse(ids)
    description = tokenizer.decode(ids[slice(*spans.description_span)])
    assert description == "A red square"  # the space before </description> rides with the tag's token
    reasoning = tokenizer.decode(ids[slice(*spans.reasoning_span)])
    # Qwen3's <think> is one added token, so the newline after it is a whole token of the reasoning;
    # in the Qwen2 families `>\n` carries the tag's last character and the newline together.
    assert reasoning.startswith("\nIt is red" if arch == "qwen3_vl" else "It is red")
    assert reasoning.endswith("\\boxed{red}")
    assert text[offsets[spans.think_token][0] :].startswith("<think>")


COMPLETIONS = [
    ["", " ", "\n", "\n", "\n", "\n", "", ""],  # newlines around every tag: `>\n` merges
    [" ", "", "", " ", " ", " ", " ", " "],  # no gaps at the description's end, spaces elsewhere
    ["\n", " ", " ", "", "", "\n\n", "", ""],
]
INVALID = "A red square </description> It is red \\boxed{red}"


def plain_loss(model, processor, rows, texts, cfg):
    """The ViGOS loss the plain way: each row and teacher on its own, every term's mean over its tokens."""
    question = rows[0].question
    student_text = prompts.render_template(cfg.student_prompt, question=question)
    reasoning_text = prompts.render_template(cfg.reasoning_prompt, question=question, answer="red")
    reference_text = prompts.render_template(cfg.reference_prompt, question=question, answer="red")
    sums = {"perception": 0.0, "reasoning": 0.0, "reference": 0.0}
    counts = dict.fromkeys(sums, 0)
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for row, text in zip(rows, texts):
        ids, offsets = student_ids(processor, text)
        ids = ids + [eos]  # the end-of-sequence token is the last one an invalid rollout's teacher supervises
        student = plain_logits(model, processor, row.image, student_text, "<description>", ids)
        if text == INVALID:
            with model.disable_adapter(), torch.no_grad():
                teacher = plain_logits(model, processor, row.image, reference_text, "<description>", ids)
            sums["reference"] = sums["reference"] + clipped(kl(student, teacher), cfg.token_loss_clip, 0, None).sum()
            counts["reference"] += len(ids)
            continue
        reads = where_teachers_read(text, offsets)
        _, _, d1 = reads["perception"]
        think, r0, r1 = reads["reasoning"]
        with model.disable_adapter(), torch.no_grad():
            perception = plain_logits(model, processor, row.image, "", "", ids[:d1])
            reasoning = plain_logits(model, processor, row.image, reasoning_text, "", ids[think:r1])[r0 - think :]
        sums["perception"] = (
            sums["perception"]
            + clipped(kl(perception, student[:d1]), cfg.token_loss_clip, -1, cfg.description_end_clip).sum()
        )
        counts["perception"] += d1
        sums["reasoning"] = (
            sums["reasoning"]
            + clipped(kl(reasoning, student[r0:r1]), cfg.token_loss_clip, 0, cfg.reasoning_start_clip).sum()
        )
        counts["reasoning"] += r1 - r0
    terms = {name: sums[name] / counts[name] for name in sums}
    return terms["perception"] + terms["reasoning"] + 2.0 * terms["reference"], terms


def test_loss_and_lora_gradients_equal_a_plain_per_row_computation_in_float64(family):
    arch, processor, model, _ = family
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    vision_lora = [n for n in lora if "visual" in n]
    # The release's module names reach into Qwen2.5-VL's vision MLP; the other families name theirs otherwise.
    assert bool(vision_lora) == (arch == "qwen2_5_vl")
    texts = [completion_text(g) for g in COMPLETIONS] + [INVALID]
    rows = [example(), example((30, 200, 30)), example((30, 30, 200)), example()]
    # Clips above most tokens' values and below some: both sides of the min are exercised.
    cfg = ViGOSConfig(
        output_dir="unused",
        report_to="none",
        loss_chunk_size=7,
        token_loss_clip=3.0,
        description_end_clip=0.5,
        reasoning_start_clip=5.0,
    )
    model.train()
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    completions = [student_ids(processor, text)[0] + [eos] for text in texts]
    out = score_completions(
        model, processor, rows, completions, teacher=make_teacher_policy("fixed", model), config=cfg
    )
    assert [s.valid for s in out.spans] == [True, True, True, False]
    ours = torch.autograd.grad(out.loss, list(lora.values()))
    expected_loss, expected_terms = plain_loss(model, processor, rows, texts, cfg)
    reference = torch.autograd.grad(expected_loss, list(lora.values()))
    for name, value in expected_terms.items():
        torch.testing.assert_close(out.terms[name].detach(), value.detach(), rtol=1e-9, atol=1e-12, msg=name)
    torch.testing.assert_close(out.loss.detach(), expected_loss.detach(), rtol=1e-9, atol=1e-12)
    for (name, _), grad, expected in zip(lora.items(), ours, reference):
        torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12, msg=name)
    if vision_lora:
        grads = dict(zip(lora, ours))
        assert all(grads[n].abs().sum() > 0 for n in vision_lora if "lora_A" in n or "lora_B" in n)
