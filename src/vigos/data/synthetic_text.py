"""The synthetic world's language: questions, canonical descriptions, and whether a text states a value."""

from __future__ import annotations

import re

from vigos.data.synthetic_kinds import SCENE_COLOURS, ObjectKind
from vigos.data.synthetic_render import Scene, check_scene

QUESTION_TYPES = ("colour", "count")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

_POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}


def count_word(count: int) -> str:
    """``2`` -> ``"two"`` (digits beyond the table stay digits)."""
    return NUMBER_WORDS[count] if 0 <= count < len(NUMBER_WORDS) else str(count)


def describe_scene(scene: Scene, *, state_count: bool = False) -> str:
    """The canonical true description: ``"A small red leaf on the left."``.

    With ``state_count`` a single object is "One ..." rather than "A ...", so
    that the description of a count example always states the count.
    """
    kind = check_scene(scene)
    if scene.count == 1 and not state_count:
        head = f"A {scene.size} {scene.colour} {kind.noun}"
    else:
        noun = kind.noun if scene.count == 1 else kind.plural
        head = f"{count_word(scene.count).capitalize()} {scene.size} {scene.colour} {noun}"
    text = f" The text reads {scene.text}." if scene.text is not None else ""
    return f"{head} {_POSITION_PHRASES[scene.position]}.{text}"


def make_question(kind: ObjectKind, question_type: str) -> str:
    """The question: the kind's prior statement, then the ask."""
    if question_type == "colour":
        return f"{kind.prior_statement} What colour is the {kind.noun} in the image?"
    if question_type == "count":
        if kind.count_statement is None:
            raise ValueError(f"object kind {kind.name!r} has no count prior, so it cannot take count questions")
        return f"{kind.count_statement} How many {kind.plural} are in the image?"
    raise ValueError(f"question_type {question_type!r} is not one of {QUESTION_TYPES}")


def mentions_attribute(text: str, value: str) -> bool:
    """Whether ``text`` states ``value`` as a whole word, ignoring case.

    Word boundaries are strict: "reddish" does not state "red", "red-orange"
    states both "red" and "orange". A count is stated by its digit or its
    word ("2" and "two" mention each other). Several words in ``value`` match
    across any whitespace. This is a test of mention, not of truth: "not red"
    mentions "red".
    """
    needle = value.strip().lower()
    if not needle:
        raise ValueError("mentions_attribute needs a non-empty attribute value")
    options = {needle}
    if needle.isdecimal() and needle.isascii() and int(needle) < len(NUMBER_WORDS):
        options.add(NUMBER_WORDS[int(needle)])
    if needle in NUMBER_WORDS:
        options.add(str(NUMBER_WORDS.index(needle)))
    for option in options:
        words = r"\s+".join(re.escape(part) for part in option.split())
        if re.search(rf"(?<!\w){words}(?!\w)", text, flags=re.IGNORECASE):
            return True
    return False


def states_unshown_colour(text: str, shown: str) -> bool:
    """Whether ``text`` states a colour the image does not show: any scene colour (the palette or the
    obscured grey) other than ``shown``, the colour of the object drawn. A description that says "green"
    of a grey leaf is ungrounded, however well it agrees with the answer."""
    return any(name != shown and mentions_attribute(text, name) for name in SCENE_COLOURS)
