"""Tests for vigos.grading.answers: answer extraction, normalization, option letters, correctness."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigos.grading import answers as grading
from vigos.grading.answers import (
    GRADERS,
    extract_answer,
    extract_boxed,
    get_grader,
    is_correct,
    normalize_answer,
    option_letter,
)

ANIMALS = ["cat", "dog", "bird", "fish"]
COUNTS = ["A. 3", "B. 4", "C. 5", "D. 6"]
COLOURS = ["(A) red", "(B) green", "(C) blue"]


def whole(description: str, reasoning: str, answer: str) -> str:
    """A completion in the ViGOS format (the student prompt pre-fills ``<description>``)."""
    return f"<description> {description} </description>\n<think> {reasoning} </think>\n\\boxed{{{answer}}}"


# (id, response, reference, options, expected verdict)
CASES = [
    # nested braces, fractions, roots
    ("frac-vs-decimal", r"So \boxed{\frac{1}{2}}.", "0.5", None, True),
    ("decimal-vs-frac", r"\boxed{0.75}", r"\frac{3}{4}", None, True),
    ("dfrac", r"\boxed{\dfrac{3}{4}}", r"\frac{3}{4}", None, True),
    ("slash-frac", r"\boxed{1/4}", "0.25", None, True),
    ("neg-frac-inside", r"\boxed{\frac{-5}{2}}", "-2.5", None, True),
    ("decimal-not-third", r"\boxed{0.3}", "1/3", None, False),
    ("six-places-third", r"\boxed{0.333333}", r"\frac{1}{3}", None, True),
    ("sqrt-decimal", r"\boxed{\sqrt{2}}", "1.41421356", None, True),
    ("sqrt-simplified", r"\boxed{2\sqrt{2}}", r"\sqrt{8}", None, True),
    ("sqrt-wrong", r"\boxed{\sqrt{3}}", r"\sqrt{2}", None, False),
    ("frac-sqrt", r"\boxed{\frac{\sqrt{2}}{2}}", r"\frac{1}{\sqrt{2}}", None, True),
    ("pi-over-two", r"\boxed{\frac{\pi}{2}}", r"\frac{\pi}{2}", None, True),
    ("equation-vs-value", r"\boxed{x = 3}", "3", None, True),
    ("tuple", r"\boxed{(1, 2)}", "(1,2)", None, True),
    ("set-order", r"\boxed{\{1, 2\}}", r"\{2, 1\}", None, True),
    ("expression-wrong", r"\boxed{x+1}", "x+2", None, False),
    ("scientific", r"\boxed{1.5e3}", "1500", None, True),
    # negative numbers and unicode minus
    ("unicode-minus-ref", r"\boxed{-5}", "−5", None, True),
    ("unicode-minus-pred", r"\boxed{−2.5}", "-5/2", None, True),
    ("sign-matters", r"\boxed{5}", "-5", None, False),
    # units
    ("units-plain", r"\boxed{12 cm}", "12", None, True),
    ("units-dollar", r"\boxed{$12$ cm}", "12", None, True),
    ("units-text", r"\boxed{12\text{ cm}}", "12 cm", None, True),
    ("units-squared", r"\boxed{12 \mathrm{cm}^2}", "12", None, True),
    ("units-superscript", r"\boxed{12 cm²}", "12", None, True),
    ("units-wrong-number", r"\boxed{13 cm}", "12", None, False),
    ("counted-noun", r"\boxed{3 apples}", "3", None, True),
    ("number-word", r"\boxed{three}", "3", None, True),
    # degrees
    ("degrees-circ", r"\boxed{30^\circ}", "30", None, True),
    ("degrees-sign", r"\boxed{30°}", "30 degrees", None, True),
    ("degrees-braced", r"\boxed{45^{\circ}}", "30°", None, False),
    # percent
    ("percent-vs-number", r"\boxed{25\%}", "25", None, True),
    ("percent-vs-fraction", r"\boxed{25%}", "0.25", None, True),
    ("fraction-vs-percent-ref", r"\boxed{0.5}", "50%", None, True),
    ("no-sign-no-scaling", r"\boxed{0.25}", "25", None, False),
    # thousands separators
    ("thousands", r"\boxed{1,000}", "1000", None, True),
    ("thousands-latex", r"\boxed{1{,}234{,}567}", "1234567", None, True),
    ("thousands-wrong", r"\boxed{1,500}", "15000", None, False),
    # empty, unclosed and several boxes
    ("empty-box", r"I am not sure. \boxed{}", "5", None, False),
    ("unclosed-box-only", r"The answer is \boxed{5", "5", None, False),
    ("unclosed-box-in-text", r"It is clearly \boxed{5", "5", None, False),
    ("unclosed-after-closed", r"\boxed{5} but maybe \boxed{7", "5", None, True),
    ("last-box-wins", r"First \boxed{3}, on reflection \boxed{4}.", "4", None, True),
    ("earlier-box-loses", r"First \boxed{3}, on reflection \boxed{4}.", "3", None, False),
    ("fbox", r"\fbox{7}", "7", None, True),
    # answer cues
    ("answer-colon-letter", "The cat is left of the dog.\nAnswer: C", "C", ANIMALS, True),
    ("answer-is-paren", "Comparing both, the answer is (B).", "B", ANIMALS, True),
    ("answer-bold", "**Answer:** 42", "42", None, True),
    ("final-answer-noun", "Final answer: 7 apples", "7", None, True),
    ("answer-wrong", "Answer: 8", "7", None, False),
    ("no-answer", "I cannot tell from the image.", "red", None, False),
    # lone letters
    ("lone-letter", "B", "B", ANIMALS, True),
    ("lone-letter-paren", "(C)", "C", ANIMALS, True),
    ("lone-letter-wrong", "D.", "A", ANIMALS, False),
    ("lone-letter-last-line", "Looking at the picture.\nB", "B", ANIMALS, True),
    ("boxed-letter-with-text", r"\boxed{B) dog}", "B", ANIMALS, True),
    ("letter-beyond-options", r"\boxed{E}", "B", ANIMALS, False),
    ("letter-no-options", r"\boxed{(B)}", "B", None, True),
    # option text instead of the letter
    ("option-text", r"\boxed{dog}", "B", ANIMALS, True),
    ("option-text-case", r"\boxed{Dog.}", "B", ANIMALS, True),
    ("option-text-article", r"\boxed{a dog}", "B", ANIMALS, True),
    ("option-text-wrong", r"\boxed{bird}", "B", ANIMALS, False),
    ("reference-as-text", r"\boxed{B}", "dog", ANIMALS, True),
    ("labelled-options-number", r"\boxed{4}", "B", COUNTS, True),
    ("labelled-options-decimal", r"\boxed{4.0}", "B", COUNTS, True),
    ("labelled-options-text", r"\boxed{\text{Blue}}", "C", COLOURS, True),
    # yes / no
    ("yes", r"\boxed{Yes}", "yes", None, True),
    ("no-period", r"\boxed{No.}", "no", None, True),
    ("no-with-reason", r"\boxed{No, the ball is red.}", "no", None, True),
    ("yes-vs-no", r"\boxed{no}", "yes", None, False),
    ("no-is-not-on", r"\boxed{on}", "no", None, False),
    # colour words
    ("colour-case", r"\boxed{Red}", "red", None, True),
    ("colour-shout", r"\boxed{RED!}", "red", None, True),
    ("colour-text", r"\boxed{\text{red}}", "Red", None, True),
    ("colour-textbf", r"\boxed{\textbf{Blue}}", "blue", None, True),
    ("colour-markdown", r"\boxed{**green**}", "Green", None, True),
    ("colour-wrong", r"\boxed{green}", "red", None, False),
    ("colour-extra-words", r"\boxed{The red one}", "red", None, False),
    # unicode
    ("unicode-pi", r"\boxed{π}", r"\pi", None, True),
    ("unicode-half", r"\boxed{½}", "0.5", None, True),
    ("fullwidth-digit", r"\boxed{３}", "3", None, True),
    ("unicode-root", r"\boxed{√2}", r"\sqrt{2}", None, True),
    ("accented-word", r"\boxed{café}", "Café", None, True),
    # whole completions in the ViGOS format
    ("whole-mc", whole("A grey cat sits on a red mat.", "The animal is a cat, option A.", "A"), "A", ANIMALS, True),
    (
        "whole-math",
        whole("A right triangle with legs 3 and 4.", r"By Pythagoras c = \sqrt{9+16} = 5.", r"5\text{ cm}"),
        "5",
        None,
        True,
    ),
    (
        "whole-colour-prior",
        whole("A banana coloured blue.", "The text prior says yellow but the image shows blue.", r"\text{Blue}"),
        "blue",
        None,
        True,
    ),
    (
        "whole-wrong",
        whole("Two apples and one pear.", r"Counting apples and pears: \boxed{2} fruits? No, 3.", "3"),
        "2",
        None,
        False,
    ),
    (
        "whole-nested-frac",
        whole("A pie chart with one half shaded.", r"The shaded part is \frac{1}{2}.", r"\frac{1}{2}"),
        "50%",
        None,
        True,
    ),
]


def test_case_table_is_large_and_unique() -> None:
    assert len(CASES) >= 60
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("response", "reference", "options", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_grading_table(response: str, reference: str, options: list[str] | None, expected: bool) -> None:
    prediction = extract_answer(response, options)
    assert is_correct(prediction, reference, options=options) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no box here", None),
        (r"\boxed{}", ""),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{a{b{c}}d}", "a{b{c}}d"),
        (r"\boxed {7}", "7"),
        (r"\fbox{x}", "x"),
        (r"\boxed{1} then \boxed{2}", "2"),
        (r"\boxed{1} then \boxed{2", "1"),
        (r"\boxed{2", None),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed{\}}", r"\}"),
        (r"\boxed{\boxed{3}}", r"\boxed{3}"),
        (r"} stray { braces \boxed{4} }", "4"),
        (r"\boxedx{5}", None),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "options", "expected"),
    [
        (r"\boxed{ 5 }", None, "5"),
        (r"Answer: 3 \boxed{}", None, ""),
        ("The answer is 12.", None, "12"),
        ("Answer: 1. Wait. The answer is 2.", None, "2"),
        ("Final Answer: The final answer is 5.", None, "5"),
        ("The answer is:\n\n  C", None, "C"),
        ("It answered nothing", None, None),
        ("B", None, None),
        ("b", ANIMALS, "B"),
        ("[D]", ANIMALS, "D"),
        ("I pick\n  (A).  ", ANIMALS, "A"),
        ("Z", ANIMALS, None),
        ("A cat", ANIMALS, None),
    ],
)
def test_extract_answer(text: str, options: list[str] | None, expected: str | None) -> None:
    assert extract_answer(text, options) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  Red. ", "red"),
        (r"$\text{Blue}$", "blue"),
        (r"\left( 1, 2 \right)", "( 1, 2 )"),
        ("1,000,000", "1000000"),
        ("−7", "-7"),
        ("The Eiffel Tower", "eiffel tower"),
        ("an apple", "apple"),
        ("a", "a"),
        ("Seven", "7"),
        (r"30^{\circ}", "30°"),
        (r"50\%", "50%"),
        ("5!", "5!"),
        ("«yes»", "«yes»"),
        ('"yes"', "yes"),
        (r"\boxed{\textbf{Cat}}", "cat"),
        ("ＡＢＣ", "abc"),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("answer", "options", "expected"),
    [
        ("B", ANIMALS, "B"),
        ("(b)", ANIMALS, "B"),
        ("B.", ANIMALS, "B"),
        ("B) dog", ANIMALS, "B"),
        ("(C) bird", ANIMALS, "C"),
        ("Option D", ANIMALS, "D"),
        ("Fish", ANIMALS, "D"),
        ("E", ANIMALS, None),
        ("horse", ANIMALS, None),
        ("5", COUNTS, "C"),
        ("five", COUNTS, "C"),
        ("B. 4", COUNTS, "B"),
        ("green", COLOURS, "B"),
        ("cat", [], None),
    ],
)
def test_option_letter(answer: str, options: list[str], expected: str | None) -> None:
    assert option_letter(answer, options) == expected


def test_kinds_differ_where_they_should() -> None:
    assert is_correct("0.5", r"\frac{1}{2}", kind="math")
    assert not is_correct("0.5", r"\frac{1}{2}", kind="exact")
    assert is_correct("Red.", "red", kind="exact")
    assert is_correct("(B)", "B", kind="multiple_choice")
    assert is_correct("B. cat", "B")
    assert not is_correct("C", "B", kind="multiple_choice")
    # A free-form reference under multiple choice is graded on its text.
    assert is_correct("12", "12.0", options=ANIMALS, kind="multiple_choice")


def test_none_and_odd_inputs_are_wrong_not_errors() -> None:
    assert not is_correct(None, "5")
    assert not is_correct("", "")
    assert not is_correct("5", None)  # type: ignore[arg-type]
    assert is_correct(5, "5")  # type: ignore[arg-type]
    assert not is_correct("\x00\ud800", "}{", options=["", "\\"])


def test_unknown_kind_and_grader_name_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown grading kind 'fuzzy'; choose one of auto, multiple_choice"):
        is_correct("1", "1", kind="fuzzy")
    with pytest.raises(ValueError, match=r"unknown grader 'telepathy'; choose one of auto, .*exact"):
        get_grader("telepathy")


def test_registry_serves_every_grader_benchmarks_name() -> None:
    from vigos.eval.items import DEFAULT_GRADERS

    assert set(DEFAULT_GRADERS) <= set(GRADERS)
    assert get_grader("multiple_choice")("dog", "B", ANIMALS)
    assert get_grader("math")(r"\frac{1}{2}", "0.5", None)
    assert not get_grader("exact")(r"\frac{1}{2}", "0.5", None)
    assert get_grader("judge")("Yes.", "yes", None)


# --- properties -----------------------------------------------------------------------------------

_PLAIN = st.text(alphabet=st.characters(blacklist_characters="{}\\"), max_size=6)
_ATOM = _PLAIN | st.sampled_from([r"\frac", r"\{", r"\}", "\\\\", r"\boxed", r"\text", "é", "∑", "🙂", " "])
_PAYLOAD = st.recursive(
    _ATOM, lambda inner: st.lists(inner | inner.map(lambda s: "{" + s + "}"), max_size=4).map("".join), max_leaves=12
)


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=30),
    earlier=st.none() | _PAYLOAD,
    payload=_PAYLOAD,
    suffix=st.text(alphabet=st.characters(blacklist_characters="}"), max_size=30),
    command=st.sampled_from([r"\boxed", r"\fbox", r"\boxed "]),
)
def test_extract_boxed_returns_the_last_payload(
    prefix: str, earlier: str | None, payload: str, suffix: str, command: str
) -> None:
    earlier_box = "" if earlier is None else rf"\boxed{{{earlier}}} "
    text = f"{prefix}{earlier_box}{command}{{{payload}}}{suffix}"
    assert extract_boxed(text) == payload


_BOXY_TEXT = st.lists(
    st.text(max_size=5) | st.sampled_from([r"\boxed{", r"\fbox{", "{", "}", "\\", r"\{", r"\}", "\n"]), max_size=20
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=_BOXY_TEXT, options=st.none() | st.lists(st.text(max_size=8), max_size=5))
def test_extraction_never_raises(text: str, options: list[str] | None) -> None:
    boxed = extract_boxed(text)
    assert boxed is None or boxed in text
    answer = extract_answer(text, options)
    assert answer is None or isinstance(answer, str)


_ANSWERISH = st.text(max_size=20) | st.sampled_from(
    ["0", "-1", "1/2", r"\frac{1}{0}", "50%", "1,000", r"\sqrt{-1}", "x=", "^^", r"\boxed{", "(B)", "yes", "1e999999"]
)


@settings(max_examples=200, deadline=None)
@given(
    prediction=st.none() | _ANSWERISH,
    reference=_ANSWERISH,
    options=st.none() | st.lists(_ANSWERISH, max_size=5),
    kind=st.sampled_from(grading.KINDS),
)
def test_is_correct_never_raises(prediction: str | None, reference: str, options: list[str] | None, kind: str) -> None:
    assert isinstance(is_correct(prediction, reference, options=options, kind=kind), bool)


@settings(max_examples=200, deadline=None)
@given(
    answer=st.text(alphabet=st.characters(categories=("Lu", "Ll", "Nd")), min_size=1, max_size=12)
    | st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True),
    kind=st.sampled_from(grading.KINDS),
)
def test_is_correct_is_reflexive_for_simple_answers(answer: str, kind: str) -> None:
    assert is_correct(answer, answer, kind=kind)
    assert option_letter(answer, [answer, answer + "x"]) is not None
