"""Span parsing on token ids, checked against a plain-text reference parse."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from vigos.method.spans import SpanParser, span_mask
from vigos.models.tiny import build_tokenizer


@pytest.fixture(scope="module", params=["trained", "qwen2_5_vl", "qwen3_vl"])
def tokenizer(request):
    """Our locally trained vocabulary, and Qwen's real one (in Qwen3-VL `<think>` and `</think>` are added
    tokens of their own)."""
    if request.param == "trained":
        return build_tokenizer()
    return AutoTokenizer.from_pretrained(request.getfixturevalue("qwen_vocab_dirs")[request.param])


@pytest.fixture(scope="module")
def parser(tokenizer):
    return SpanParser(tokenizer)


def reference_parse(text: str):
    """METHOD.md's rule on characters: (valid, description chars, chars after <think> through the box, answer)."""
    d = text.find("</description>")
    if d < 0:
        return False, None, None, None
    t = text.find("<think>", d + len("</description>"))
    if t < 0:
        return False, None, None, None
    c = text.find("</think>", t + len("<think>"))
    if c < 0:
        return False, None, None, None
    b = text.find("\\boxed{", c + len("</think>"))
    if b < 0:
        return False, None, None, None
    depth, end = 1, None
    for i in range(b + len("\\boxed{"), len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            end = i
            break
    if end is None:
        return False, None, None, None
    return True, (0, d), (t + len("<think>"), end + 1), text[b + len("\\boxed{") : end]


def whole_tokens_before(offsets, end):
    """The release's description: tokens that end at or before the tag's first character."""
    return [i for i, (s, e) in enumerate(offsets) if e <= end]


def reasoning_tokens(offsets, chars):
    """The release's reasoning: tokens that start at or after the end of <think>, through the one
    holding the box's closing brace."""
    a, b = chars
    return [i for i, (s, e) in enumerate(offsets) if s >= a and s < b]


def check_against_reference(tokenizer, parser, text):
    # Qwen's vocabulary normalizes to NFC first (a combining mark can fold into a tag's `>`); so does the rule.
    text = unicodedata.normalize("NFC", text)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
    spans = parser.parse(ids)
    # A completion ends at its first end-of-sequence token (kept in its length); the rule reads the text
    # before it. Hypothesis does write "<|im_end|>" inside a text piece.
    eos = [i for i, token in enumerate(ids) if token in parser.eos_token_ids]
    length = eos[0] + 1 if eos else len(ids)
    valid, description, reasoning, answer = reference_parse(text[: offsets[eos[0]][0]] if eos else text)
    if valid:
        described, reasoned = whole_tokens_before(offsets, description[1]), reasoning_tokens(offsets, reasoning)
        valid = bool(described) and bool(reasoned)
    assert spans.valid == valid, (text, spans)
    assert spans.length == length
    if valid:
        assert list(range(*spans.description_span)) == described
        assert list(range(*spans.reasoning_span)) == reasoned
        assert spans.answer == answer
        opening = text.find("<think>", description[1] + len("</description>"))
        assert offsets[spans.think_token][0] <= opening < offsets[spans.think_token][1]
    else:
        assert spans.description_span is None and spans.reasoning_span is None


def test_valid_completion(tokenizer, parser):
    text = " A red leaf. </description>\n<think> The leaf is red. </think>\n\\boxed{red}"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    spans = parser.parse(ids + [tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.pad_token_id])
    assert spans.valid and spans.reason == "ok" and spans.answer == "red"
    assert spans.length == len(ids) + 1  # the EOS counts, the padding does not
    assert tokenizer.decode(ids[slice(*spans.description_span)]).strip().startswith("A red leaf.")
    reasoning = tokenizer.decode(ids[slice(*spans.reasoning_span)])
    assert reasoning.startswith(" The leaf is red.") and reasoning.endswith("\\boxed{red}")
    check_against_reference(tokenizer, parser, text)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("just some words", "no </description>"),
        (" a cat </description> \\boxed{1}", "no <think> after </description>"),
        (" a cat </description><think> so", "no </think> after <think>"),
        (" a cat </description><think> so </think>", "no \\boxed{} after </think>"),
        (" a cat </description><think> so </think> \\boxed{\\frac{1}{2}", "unclosed \\boxed{"),
        ("</description><think> so </think> \\boxed{2}", "no whole token in the description"),
        (" <think> x </think> a </description> \\boxed{2}", "no <think> after </description>"),
    ],
)
def test_invalid_completions(tokenizer, parser, text, reason):
    spans = parser.parse(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert not spans.valid and spans.reason == reason
    check_against_reference(tokenizer, parser, text)


def test_tagless_and_nested_box(tokenizer, parser):
    assert parser.parse(tokenizer("no tags at all", add_special_tokens=False)["input_ids"]).tagless
    text = " x </description><think> y </think> \\boxed{\\frac{\\sqrt{2}}{2}} trailing"
    spans = parser.parse(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert spans.valid and spans.answer == "\\frac{\\sqrt{2}}{2}" and not spans.tagless


def test_span_mask():
    mask = span_mask([(1, 3), None, (0, 1)], 4)
    assert mask.tolist() == [[False, True, True, False], [False] * 4, [True, False, False, False]]


PIECES = st.sampled_from(
    ["</description>", "<think>", "</think>", "\\boxed{", "{", "}", "<description>", "\\frac{1}{2}", " ", "\n"]
)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(PIECES, TEXT), max_size=14))
def test_random_tag_placements_match_reference(tokenizer, parser, pieces):
    check_against_reference(tokenizer, parser, "".join(pieces))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    description=TEXT.filter(lambda s: s != ""),
    reasoning=TEXT,
    payload=st.recursive(
        TEXT.map(lambda s: s.replace("{", "").replace("}", "")),
        lambda inner: inner.map(lambda s: "{" + s + "}"),
        max_leaves=4,
    ),
    between=st.sampled_from(["", "\n", " ok "]),
)
def test_well_formed_completions_are_valid(tokenizer, parser, description, reasoning, payload, between):
    text = f"{description}</description>{between}<think>{reasoning}</think>{between}\\boxed{{{payload}}}"
    valid, *_ = reference_parse(text)
    assert valid
    check_against_reference(tokenizer, parser, text)
