"""Final-answer extraction and correctness, for training metrics and evaluation.

A model's answer is the content of its last ``\\boxed{...}``; :func:`extract_answer`
falls back to "Answer: X" cues and lone option letters. :func:`is_correct` then
compares the answer with the reference by one of four kinds:

- ``multiple_choice``: both sides map to an option letter (``"B"``, ``"(B)"``,
  ``"B) cat"``, or the option's own text); the letters must agree.
- ``math``: normalized string match, then an exact comparison of plain numbers,
  then math-verify for anything LaTeX-shaped (``\\frac``, ``\\sqrt``, ``x=3``...).
- ``exact``: normalized string match only.
- ``auto``: ``multiple_choice`` when options are given or the reference is a
  lone capital letter, else ``math``.

Decisions where benchmarks disagree, taken here once:

- Units and counted nouns after a number are ignored: ``"12 cm"``, ``"$12$ cm"``,
  ``"12\\text{ cm}"``, ``"30°"``, ``"30^\\circ"`` and ``"3 apples"`` all read as the
  bare number; the number decides (``"5 cm"`` matches ``"5 m"``).
- Percentages: when exactly one side carries ``%``, ``"50%"`` matches both ``50``
  and ``0.5`` (benchmarks often drop the sign, and the value is the same); when
  both carry it, the numbers before the signs must agree. ``"0.5"`` never
  matches ``"50"``.
- Plain numbers compare exactly as rationals (``"1/2"``, ``"0.5"``,
  ``"\\frac{1}{2}"``); when a decimal is involved, a difference below 1e-6 is
  equal, as math-verify's rounding to six places does (``0.333333`` = 1/3,
  ``0.333`` != 1/3).
- A yes/no reference accepts a prediction that opens with that word and a
  punctuation mark (``"No, it is not."``).
- Number words from zero to twenty read as digits (``"three"`` = ``"3"``).
- Word answers never reach math-verify, which would read ``"no"`` and ``"on"``
  as the same product of two symbols: only strings with a digit, a LaTeX
  command or a math operator on both sides go there.
- An empty answer (``\\boxed{}``) is never correct.

math-verify runs in a child process that is killed when a comparison hangs
(:mod:`vigos.grading.mathverify`).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import unicodedata
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import NamedTuple

from vigos.grading import mathverify
from vigos.grading.vilp import vilp_equal

__all__ = [
    "GRADERS",
    "KINDS",
    "MATH_TIMEOUT_S",
    "extract_answer",
    "extract_boxed",
    "get_grader",
    "is_correct",
    "normalize_answer",
    "option_letter",
]

logger = logging.getLogger(__name__)

MATH_TIMEOUT_S = 5.0
KINDS = ("auto", "multiple_choice", "math", "exact")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# --- extraction -------------------------------------------------------------------------------

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
# A backslash escapes the next character, so ``\{`` and ``\}`` are literal braces.
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)
_ANSWER_CUE = re.compile(r"\b(?:final\s+answer|answer)\b[\s*]*(?:is\b[\s*]*:?|:)", re.IGNORECASE)
_LONE_LETTER = re.compile(r"[\[(]?([A-Za-z])[\])]?[.:]?")


def _matching_braces(text: str) -> dict[int, int]:
    """Position of each balanced ``{`` mapped to the position of its ``}``."""
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for token in _BRACE_TOKEN.finditer(text):
        if token.group() == "{":
            stack.append(token.start())
        elif token.group() == "}" and stack:
            pairs[stack.pop()] = token.start()
    return pairs


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) whose braces balance.

    Nested braces are kept (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``) and
    escaped braces ``\\{ \\}`` do not count. A box nested inside another box is
    part of the outer box's content. An unclosed ``\\boxed{`` is ignored. Returns
    ``None`` when there is no closed box and ``""`` for ``\\boxed{}``.
    """
    if not isinstance(text, str) or ("\\boxed" not in text and "\\fbox" not in text):
        return None
    pairs = _matching_braces(text)
    answer = None
    covered_until = -1
    for opener in _BOX_OPEN.finditer(text):
        brace = opener.end() - 1
        close = pairs.get(brace)
        if brace < covered_until or close is None:
            continue
        answer = text[brace + 1 : close]
        covered_until = close
    return answer


def _cue_answer(text: str, cue_end: int) -> str:
    """The answer after a cue: the rest of its line, or the next line when that is empty."""
    rest = text[cue_end:].lstrip(" \t*").lstrip()
    return rest.split("\n", 1)[0].strip().strip("*").strip().rstrip(".").strip()


def extract_answer(text: str, options: Sequence[str] | None = None) -> str | None:
    """The final answer of a model response, or ``None`` when it gives none.

    In order: the last ``\\boxed{}`` (even when empty); the last "Answer: X" /
    "The answer is X" / "Final answer: X" (the rest of that line, trailing period
    dropped); and, when ``options`` are given, a lone option letter (``"B"``,
    ``"(B)"``, ``"B."``) forming the whole response or its last line, returned as
    the capital letter.
    """
    if not isinstance(text, str):
        return None
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed.strip()
    for cue in reversed(list(_ANSWER_CUE.finditer(text))):
        answer = _cue_answer(text, cue.end())
        if answer:
            return answer
    if options:
        lines = [line for line in text.splitlines() if line.strip()]
        for candidate in (text, lines[-1] if lines else ""):
            letter = _LONE_LETTER.fullmatch(_strip_markup(candidate).strip())
            if letter and _LETTERS.find(letter.group(1).upper()) < len(options):
                return letter.group(1).upper()
    return None


# --- normalization ------------------------------------------------------------------------------

# Superscripts become ``^2`` before NFKC would flatten ``cm²`` into ``cm2``.
_BEFORE_NFKC = str.maketrans({"²": "^2", "³": "^3"})
_AFTER_NFKC = str.maketrans(
    {
        "\u2212": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2010": "-",
        "\u2011": "-",
        "\u2044": "/",
        "\u00f7": "/",
        "\u00d7": "\\times ",
        "\u22c5": "\\cdot ",
        "\u03c0": "\\pi ",
        "\u221a": "\\sqrt",
        "\u221e": "\\infty ",
        "\u3002": ".",
        "\u201c": '"',
        "\u201d": '"',
        "\u2018": "'",
        "\u2019": "'",
    }
)
_TEXT_WRAPPER = re.compile(
    r"\\(?:text|textbf|textit|textrm|texttt|mathrm|mathbf|mathit|mathsf|mbox|operatorname)\s*\{([^{}]*)\}"
)
_LATEX_REPLACEMENTS = (
    (re.compile(r"\\(?:left|right)(?![A-Za-z])|\\displaystyle"), ""),
    (re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree"), "°"),
    (re.compile(r"\\[dt]frac"), r"\\frac"),
    (re.compile(r"\\%"), "%"),
    (re.compile(r"\\[,;:! ]|\\q?quad|~"), " "),
    (re.compile(r"\{,\}"), ","),
    (re.compile(r"\*\*|__|`"), ""),
)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_ARTICLE = re.compile(r"^(?:the|a|an)\s+")
_TRAILING = re.compile(r"(?:[.,;:?]|(?<=[^\W\d_])!)+$")
_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}


def _strip_markup(text: str) -> str:
    """The answer without its presentation: box, ``$``, ``\\text{}``, spacing, unicode forms."""
    text = str(text)
    boxed = extract_boxed(text)
    if boxed is not None:
        text = boxed
    text = unicodedata.normalize("NFKC", text.translate(_BEFORE_NFKC)).translate(_AFTER_NFKC)
    text = text.replace("\\$", "").replace("$", "")
    previous = None
    while previous != text:
        previous, text = text, _TEXT_WRAPPER.sub(r"\1", text)
    for pattern, replacement in _LATEX_REPLACEMENTS:
        text = pattern.sub(replacement, text)
    return text.strip()


def normalize_answer(text: str) -> str:
    """A canonical form of an answer for string comparison.

    Lower-cases; drops a surrounding ``\\boxed{}``, ``$...$``, ``\\text{}``-like
    wrappers, ``\\left``/``\\right``, LaTeX spacing and markdown emphasis; unifies
    unicode minus signs, dashes and NFKC forms; writes ``^\\circ`` as ``°`` and
    ``\\%`` as ``%``; removes thousands separators (``1,000`` -> ``1000``), a
    leading article, trailing punctuation and repeated whitespace; and turns a
    number word from zero to twenty into digits.
    """
    text = _strip_markup(text).lower()
    text = _THOUSANDS.sub("", text)
    text = " ".join(text.split())
    text = _TRAILING.sub("", text).strip().strip("\"'").strip()
    text = _ARTICLE.sub("", text)
    return _NUMBER_WORDS.get(text, text)


# --- plain numbers ------------------------------------------------------------------------------

_NOT_UNITS = {"pi", "sqrt", "times", "plus", "minus", "and", "or", "over", "divided", "to", "of"}
_NUMBER = re.compile(
    r"""
    (?:[€£¥]\s*)?
    (?P<sign>[-+])?\s*
    (?:
        \\frac\{\s*(?P<frac_num>-?\d+)\s*\}\{\s*(?P<frac_den>\d+)\s*\}
      | (?P<num>\d+)\s*/\s*(?P<den>\d+)
      | (?P<decimal>(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?)
    )
    \s*(?P<percent>%)?
    \s*(?P<unit>
        °\s*[cf]?
      | (?:(?:square|sq\.?|cubic)\s+)?[a-zμ]{2,}(?:\s+[a-zμ]{2,}){0,2}(?:\^?[23])?(?:\s*/\s*[a-z]+)?
      | [mgslh](?:\^?[23])?(?:/[a-z]+)?
    )?
    """,
    re.VERBOSE,
)


class _Number(NamedTuple):
    value: Fraction
    decimal: bool
    percent: bool


def _parse_number(normalized: str) -> _Number | None:
    """A plain number, fraction or percentage, with any unit after it ignored."""
    match = _NUMBER.fullmatch(normalized)
    if match is None or (match["unit"] and _NOT_UNITS.intersection(match["unit"].split())):
        return None
    if match["frac_den"] is not None or match["den"] is not None:
        numerator = int(match["frac_num"] or match["num"])
        denominator = int(match["frac_den"] or match["den"])
        if denominator == 0:
            return None
        value = Fraction(numerator, denominator)
    else:
        decimal = match["decimal"]
        exponent = decimal.partition("e")[2]
        # A huge exponent would make Fraction build a gigantic integer.
        if exponent and abs(int(exponent)) > 400:
            return None
        value = Fraction(decimal)
    if match["sign"] == "-":
        value = -value
    is_decimal = match["decimal"] is not None and ("." in match["decimal"] or "e" in match["decimal"])
    return _Number(value, is_decimal, match["percent"] is not None)


def _numbers_equal(a: _Number, b: _Number) -> bool:
    a_values = [a.value, a.value / 100] if a.percent and not b.percent else [a.value]
    b_values = [b.value, b.value / 100] if b.percent and not a.percent else [b.value]
    tolerance = Fraction(1, 10**6) if (a.decimal or b.decimal) else Fraction(0)
    return any(abs(x - y) <= tolerance for x in a_values for y in b_values)


# --- options ------------------------------------------------------------------------------------

_LETTER_FORMS = (
    _LONE_LETTER,
    re.compile(r"[\[(]([A-Z])[\])]\s*\S.*", re.DOTALL),
    re.compile(r"([A-Z])[.):]\s+\S.*", re.DOTALL),
    re.compile(r"(?i:option|choice)\s*[\[(]?([A-Za-z])[\])]?(?:[.:]|\s.*)?", re.DOTALL),
)


def _choice_letter(text: str, n_options: int) -> str | None:
    """The letter ``text`` names by form alone (``B``, ``(B)``, ``B) cat``, ``Option B``)."""
    for form in _LETTER_FORMS:
        match = form.fullmatch(text)
        if match:
            letter = match.group(1).upper()
            return letter if _LETTERS.index(letter) < n_options else None
    return None


def _option_text(option: str, index: int) -> str:
    """An option without its own ``A.`` / ``(A)`` label, normalized."""
    letter = _LETTERS[index]
    return normalize_answer(re.sub(rf"^\s*(?:[\[(]{letter}[\])]|{letter}[.:)])\s*", "", str(option)))


def option_letter(answer: str, options: Sequence[str]) -> str | None:
    """The letter (``"A"``, ``"B"``, ...) of the option ``answer`` names, or ``None``.

    ``answer`` may be a letter in any usual form (``"B"``, ``"(b)"``, ``"B."``,
    ``"B) cat"``, ``"Option B"``), the text of an option (compared after
    :func:`normalize_answer`; options may carry their own ``"B. "`` label), or a
    number equal to exactly one numeric option (``"4.0"`` names option ``"4"``).
    A letter beyond the options, or text matching no option, gives ``None``.
    """
    if not isinstance(answer, str) or not options:
        return None
    n_options = min(len(options), len(_LETTERS))
    letter = _choice_letter(_strip_markup(answer), n_options)
    if letter is not None:
        return letter
    normalized = normalize_answer(answer)
    if not normalized:
        return None
    texts = [_option_text(option, index) for index, option in enumerate(options[:n_options])]
    for index, text in enumerate(texts):
        if text == normalized:
            return _LETTERS[index]
    number = _parse_number(normalized)
    if number is None:
        return None
    matches = [
        index
        for index, text in enumerate(texts)
        if (option_number := _parse_number(text)) is not None and _numbers_equal(number, option_number)
    ]
    return _LETTERS[matches[0]] if len(matches) == 1 else None


# --- math-verify --------------------------------------------------------------------------------

_MATHY = re.compile(r"\d|\\[A-Za-z]|[\^=<>+*/]")
_MAX_MATH_CHARS = 2000


def _for_math_verify(answer: str) -> str:
    """The answer as math-verify should see it, or ``""`` when it must not see it."""
    answer = _strip_markup(answer)
    # math-verify would pull "5" out of a leftover unclosed "\boxed{5" in any text.
    if "\\boxed" in answer or "\\fbox" in answer:
        return ""
    # Degrees are units here: math-verify cannot parse "°" inside a box.
    return answer.replace("°", "")


def _math_equal(gold: str, pred: str, timeout_s: float) -> bool:
    gold, pred = _for_math_verify(gold), _for_math_verify(pred)
    if not gold or not pred or max(len(gold), len(pred)) > _MAX_MATH_CHARS:
        return False
    verdict = mathverify.compare(gold, pred, timeout_s)
    if verdict is not None:
        return verdict
    on_main_thread = threading.current_thread() is threading.main_thread()
    return mathverify._math_verify_equal(gold, pred, max(1, math.ceil(timeout_s)) if on_main_thread else None)


# --- correctness --------------------------------------------------------------------------------


def _text_equal(pred: str, ref: str) -> bool:
    if pred == ref or pred.replace(" ", "") == ref.replace(" ", ""):
        return True
    return ref in ("yes", "no") and re.match(rf"{ref}[,.;:!]", pred) is not None


def _grade_exact(pred: str, ref: str, options: Sequence[str] | None, timeout_s: float) -> bool:
    p, r = normalize_answer(pred), normalize_answer(ref)
    return bool(p) and p == r


def _grade_math(pred: str, ref: str, options: Sequence[str] | None, timeout_s: float) -> bool:
    p, r = normalize_answer(pred), normalize_answer(ref)
    if not p or not r:
        return False
    if _text_equal(p, r):
        return True
    p_number, r_number = _parse_number(p), _parse_number(r)
    if p_number is not None and r_number is not None:
        return _numbers_equal(p_number, r_number)
    if _MATHY.search(p) and _MATHY.search(r):
        return _math_equal(ref, pred, timeout_s)
    return False


def _grade_multiple_choice(pred: str, ref: str, options: Sequence[str] | None, timeout_s: float) -> bool:
    if options:
        ref_letter, pred_letter = option_letter(ref, options), option_letter(pred, options)
    else:
        ref_letter = _choice_letter(_strip_markup(ref), len(_LETTERS))
        pred_letter = _choice_letter(_strip_markup(pred), len(_LETTERS))
    if ref_letter is not None:
        return pred_letter == ref_letter
    # The reference names no option (a free-form answer): grade the text itself.
    return _grade_math(pred, ref, None, timeout_s)


def _is_letter(answer: str) -> bool:
    match = _LONE_LETTER.fullmatch(_strip_markup(answer))
    return match is not None and match.group(1).isupper()


def _grade_auto(pred: str, ref: str, options: Sequence[str] | None, timeout_s: float) -> bool:
    # A lone capital letter is an option label whose options live in the question text.
    if options or _is_letter(ref):
        return _grade_multiple_choice(pred, ref, options, timeout_s)
    return _grade_math(pred, ref, options, timeout_s)


_KIND_GRADERS = {
    "auto": _grade_auto,
    "multiple_choice": _grade_multiple_choice,
    "math": _grade_math,
    "exact": _grade_exact,
}


def is_correct(
    prediction: str | None,
    reference: str,
    *,
    options: Sequence[str] | None = None,
    kind: str = "auto",
    math_timeout_s: float = MATH_TIMEOUT_S,
) -> bool:
    """Whether an extracted answer matches the reference.

    ``prediction`` is an answer as :func:`extract_answer` returns it (``None``,
    no answer, is wrong). ``kind`` is one of ``auto``, ``multiple_choice``,
    ``math`` or ``exact`` (see the module docstring for what each accepts).
    ``math_timeout_s`` bounds one math-verify comparison; past it the answer
    counts as wrong. Never raises on odd text; an unknown ``kind`` is a
    ``ValueError``.
    """
    grade = _KIND_GRADERS.get(kind)
    if grade is None:
        raise ValueError(f"unknown grading kind {kind!r}; choose one of {', '.join(KINDS)}")
    if prediction is None or reference is None:
        return False
    option_texts = [str(option) for option in options] if options else None
    return grade(str(prediction), str(reference), option_texts, math_timeout_s)


GraderFn = Callable[[str | None, str, Sequence[str] | None], bool]


def _make_grader(name: str, kind: str, doc: str) -> GraderFn:
    def grader(prediction: str | None, reference: str, options: Sequence[str] | None = None) -> bool:
        return is_correct(prediction, reference, options=options, kind=kind)

    grader.__name__ = grader.__qualname__ = f"grade_{name}"
    grader.__doc__ = doc
    return grader


def _grade_vilp(prediction: str | None, reference: str, options: Sequence[str] | None = None) -> bool:
    """ViLP's own comparison: synonyms, plurals and number words made canonical (:mod:`vigos.grading.vilp`)."""
    return vilp_equal(prediction, reference)


GRADERS: dict[str, GraderFn] = {
    "auto": _make_grader("auto", "auto", "Multiple choice when options are given, else math."),
    "multiple_choice": _make_grader("multiple_choice", "multiple_choice", "Option letters must agree."),
    "math": _make_grader("math", "math", "Strings, plain numbers, then math-verify."),
    "exact": _make_grader("exact", "exact", "Normalized string equality."),
    # The LLM judge itself lives with the evaluation runner; this is the rule verdict
    # it starts from, and the whole verdict when no judge is configured.
    "judge": _make_grader("judge", "auto", "Rule-based verdict for items an LLM judge may overrule."),
    "vilp": _grade_vilp,
}


def get_grader(name: str) -> GraderFn:
    """The grader registered as ``name``: ``grader(prediction, reference, options) -> bool``."""
    try:
        return GRADERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown grader {name!r}; choose one of {', '.join(GRADERS)}") from None
