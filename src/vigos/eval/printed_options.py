"""Options printed inside a question's text, read back so that an answer may name an option by its text.

MathVerse prints ``Choices:`` then ``A:50°`` lines, MMSI-Bench one line
``Options: A: left, B: right, ...``, RealWorldQA ``A. ...`` lines. Their items
keep the question as published (the options stay where the authors put them)
and carry the options read here in ``meta["options"]`` for grading only, so
that "the left one" counts as the option it is, as an option letter does.
"""

from __future__ import annotations

import re

__all__ = ["options_for_grading", "printed_options"]

# A label opens a line, or follows ", ", ": " or "; " (one-line lists): "A:", "A.", "A)", "(A)".
_LABEL = re.compile(r"(?:^|(?<=, )|(?<=: )|(?<=; ))\(?([A-Z])(?:\)|[.:])[ \t]*", re.MULTILINE)


def printed_options(text: str) -> list[str] | None:
    """The options of the last run of labels ``A``, ``B``, ... (two at least) in ``text``, in order; ``None`` when
    there is none. An option runs to the next label, the last one to the end of its line."""
    labels = list(_LABEL.finditer(text))
    best: list[re.Match[str]] = []
    run: list[re.Match[str]] = []
    for label in labels:
        letter = label.group(1)
        if letter == "A":
            run = [label]
        elif run and ord(letter) == ord(run[-1].group(1)) + 1:
            run.append(label)
        else:
            continue
        if len(run) >= 2:
            best = list(run)
    if not best:
        return None
    options = []
    for here, after in zip(best, best[1:] + [None]):
        end = after.start() if after is not None else _line_end(text, here.end())
        options.append(text[here.end() : end].strip().rstrip(",;").strip())
    return options if all(options) else None


def _line_end(text: str, start: int) -> int:
    end = text.find("\n", start)
    return len(text) if end < 0 else end


def options_for_grading(question: str, answer: str) -> list[str] | None:
    """:func:`printed_options` of ``question`` when they include the option letter ``answer``, else ``None`` (a
    list read wrong must not make the reference itself unreadable)."""
    options = printed_options(question)
    if options is None or len(answer) != 1 or not "A" <= answer <= chr(ord("A") + len(options) - 1):
        return None
    return options
