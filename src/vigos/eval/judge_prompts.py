"""The two judge requests besides the plain yes/no verdict, each with the parser of its reply.

- MM-Vet partial credit (``official`` protocol): as MM-Vet's own grader does,
  the judge compares an answer with the ground truth, in which ``<AND>``
  joins parts that are all needed and ``<OR>`` alternatives of which one
  suffices, and gives a correctness score from 0.0 to 1.0, guided by worked
  examples. The prompt's words and examples are ours.
- One call per item (``paper`` protocol): as the ViGOS release's evaluation
  does, the judge sees the question, the reference and the extracted final
  answers of all samples at once, and gives a verdict for each.

A reply that does not parse is asked again by :class:`vigos.eval.judge.JudgeClient`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "ITEM_FORM",
    "ITEM_TOKENS_PER_ATTEMPT",
    "SCORE_FORM",
    "item_prompt",
    "parse_item_verdicts",
    "parse_score",
    "score_prompt",
]

SCORE_SYSTEM_PROMPT = (
    "You grade answers to open-ended questions about images. You reply with a single number from 0.0 to 1.0 "
    "and nothing else."
)
SCORE_USER_PROMPT = (
    "Compare the candidate answer with the ground truth and score its correctness from 0.0 (wrong) to 1.0 "
    "(fully right); an answer that is partly right scores in between, by how much of the ground truth it gets "
    "right. In the ground truth, <AND> joins parts that are all needed and <OR> joins alternatives of which any "
    "one is enough. Wording does not matter, only content.\n\n"
    "Worked examples (question | ground truth | candidate answer | score):\n"
    "How many apples are on the table? | 4 | four | 1.0\n"
    "How many apples are on the table? | 4 | 5 | 0.0\n"
    "Which two animals are in the picture? | cat <AND> dog | a cat | 0.5\n"
    "Which two animals are in the picture? | cat <AND> dog | a dog and a cat | 1.0\n"
    "What colour is the car? | blue <OR> navy | it is navy blue | 1.0\n"
    "What is written on the sign? | Keep off the grass | keep off | 0.4\n"
    "Why is the road wet? | It has been raining. | Someone washed the road. | 0.0\n"
    "How does the price change over the years shown? | It rises until 2020, then falls. | It rises every year. "
    "| 0.3\n\n"
    "Now score this one.\n"
    "Question: {question}\n"
    "Ground truth: {reference}\n"
    "Candidate answer: {response}\n"
    "Score:"
)
SCORE_FORM = "a score: a number from 0.0 to 1.0"

ITEM_SYSTEM_PROMPT = (
    "You check the final answers of several attempts at one exam question against its reference answer. You reply "
    "with one line per attempt, 'N: yes' or 'N: no', and nothing else."
)
ITEM_USER_PROMPT = (
    "Question:\n{question}\n\n"
    "Reference answer:\n{reference}\n\n"
    "Final answers of {k} attempts:\n{answers}\n\n"
    "For each attempt, is its final answer the same answer as the reference answer? Differences in wording, "
    "formatting, units or equivalent forms of the same value do not matter; a choice letter counts as the option "
    "it names; an attempt without an answer is wrong. Reply with {k} lines, '1: yes' or '1: no', then '2: ...', "
    "and so on."
)
ITEM_FORM = "one 'N: yes' or 'N: no' line for each attempt"
# A verdict line is a few tokens; room for some more, so a judge that adds a word is not cut off.
ITEM_TOKENS_PER_ATTEMPT = 8
NO_ANSWER = "(no answer in \\boxed{})"

_THINKING = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?|\.\d+)")
_ITEM_LINE = re.compile(r"^\W*(\d+)\**\s*[:.)\-]\s*\**\s*(yes|no)\b", re.IGNORECASE | re.MULTILINE)


def score_prompt(question: str, reference: str, response: str) -> tuple[str, str]:
    """The (system, user) prompts asking for MM-Vet's 0-1 correctness score of ``response``."""
    return SCORE_SYSTEM_PROMPT, SCORE_USER_PROMPT.format(question=question, reference=reference, response=response)


def parse_score(reply: str) -> float | None:
    """The first number in the reply (after any ``<think>`` block) when it lies in [0, 1], else ``None``."""
    match = _NUMBER.search(_THINKING.sub(" ", reply))
    if match is None:
        return None
    score = float(match.group(1))
    return score if 0.0 <= score <= 1.0 else None


def item_prompt(question: str, reference: str, answers: Sequence[str | None]) -> tuple[str, str]:
    """The (system, user) prompts asking for a verdict on each of ``answers`` (``None``: the sample gave none)."""
    listed = "\n".join(f"{n}. {NO_ANSWER if answer is None else answer}" for n, answer in enumerate(answers, 1))
    user = ITEM_USER_PROMPT.format(question=question, reference=reference, k=len(answers), answers=listed)
    return ITEM_SYSTEM_PROMPT, user


def parse_item_verdicts(reply: str, k: int) -> list[bool] | None:
    """The verdicts of attempts 1..``k`` from lines ``N: yes``/``N: no`` (the first line for each N counts),
    or ``None`` when an attempt has no verdict or a line names an attempt beyond ``k``."""
    verdicts: dict[int, bool] = {}
    for match in _ITEM_LINE.finditer(_THINKING.sub(" ", reply)):
        number = int(match.group(1))
        if not 1 <= number <= k:
            return None
        verdicts.setdefault(number, match.group(2).lower() == "yes")
    if len(verdicts) != k:
        return None
    return [verdicts[number] for number in range(1, k + 1)]
