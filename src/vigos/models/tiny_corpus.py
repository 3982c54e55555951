"""The text the tiny models' tokenizer is trained on: chat turns, the method's tags and prompts, and plain words."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from vigos.prompts import FORMAT_INSTRUCTION, REASONING_PROMPT, REFERENCE_PROMPT, render_template

if TYPE_CHECKING:
    pass


_COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white", "grey")
_SHAPES = ("circle", "square", "triangle", "star", "rectangle", "diamond", "heart", "ring", "cross", "dot", "line")
_OBJECTS = (
    "leaf",
    "banana",
    "apple",
    "lemon",
    "sky",
    "grass",
    "carrot",
    "cherry",
    "sun",
    "wheel",
    "car",
    "tree",
    "flower",
    "house",
    "ball",
    "cup",
    "book",
    "clock",
    "bird",
    "fish",
    "cat",
    "dog",
    "clover",
    "bicycle",
)
_PLACES = (
    "on the left",
    "on the right",
    "at the top",
    "at the bottom",
    "in the center",
    "in the top left corner",
    "in the bottom right corner",
    "next to the circle",
    "above the square",
)
_NUMBER_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
)

# The prompts a model sees (the method's, with the reference answer as {a}, and two benchmark styles), so
# that their words are few tokens each, as in a real vocabulary.
_INSTRUCTIONS = (
    FORMAT_INSTRUCTION,
    render_template(REASONING_PROMPT, question="", answer="{a}").strip(),
    render_template(REFERENCE_PROMPT, question="", answer="{a}").strip(),
    "Answer with the option's letter from the given choices directly.",
    "Answer the question using a single word or phrase.",
)


def _plural(noun: str) -> str:
    irregular = {"leaf": "leaves", "cherry": "cherries", "sky": "skies", "fish": "fish", "cross": "crosses"}
    return irregular.get(noun, noun + "s")


def builtin_corpus() -> list[str]:
    """The built-in training text of the tokenizer: prompts and outputs in the method's format.

    Deterministic. Sentences about images (colours, shapes, objects, counts,
    positions), digits and arithmetic, LaTeX, and completions laid out exactly
    as a model writes them, so common words and the format tags end up as few
    tokens each.
    """
    rng = random.Random(0)
    lines: list[str] = []
    for i in range(600):
        colour, shape, obj, place = (
            rng.choice(_COLOURS),
            rng.choice(_SHAPES),
            rng.choice(_OBJECTS),
            rng.choice(_PLACES),
        )
        n, a, b = rng.randint(1, 12), rng.randint(0, 99), rng.randint(1, 99)
        things = _plural(shape) if n > 1 else shape
        kind = i % 6
        if kind == 0:
            question = f"What colour is the {obj} in the image?"
            output = (
                f"<description> A {colour} {obj} {place}. </description>\n"
                f"<think> The {obj} in the image is {colour}, so the answer is {colour}. </think>\n"
                f"\\boxed{{{colour}}}"
            )
        elif kind == 1:
            question = f"How many {_plural(shape)} are there in the image?"
            output = (
                f"<description> There are {_NUMBER_WORDS[n]} {colour} {things} {place}. </description>\n"
                f"<think> I count the {_plural(shape)}: {', '.join(str(k) for k in range(1, n + 1))}. "
                f"There are {n} of them. </think>\n\\boxed{{{n}}}"
            )
        elif kind == 2:
            question = f"What is the sum of the two numbers shown? Compute {a} + {b}."
            output = (
                f"<description> The image shows the numbers {a} and {b} written in {colour}. </description>\n"
                f"<think> We add them: {a} + {b} = {a + b}. </think>\n\\boxed{{{a + b}}}"
            )
        elif kind == 3:
            question = f"What fraction of the {_plural(shape)} are {colour}?"
            output = (
                f"<description> A grid of {b} {_plural(shape)}; {a % b} of them are {colour}. </description>\n"
                f"<think> The fraction is \\frac{{{a % b}}}{{{b}}}. Since {a} \\times {b} = {a * b} and "
                f"{a * b} - {b} = {a * b - b}, we keep \\frac{{{a % b}}}{{{b}}}. </think>\n"
                f"\\boxed{{\\frac{{{a % b}}}{{{b}}}}}"
            )
        elif kind == 4:
            question = f"Which shape is {place}? A. {shape} B. {_SHAPES[(i + 3) % len(_SHAPES)]} C. {obj}"
            output = (
                f"<description> A {colour} {shape} {place} and a {obj} below it. </description>\n"
                f"<think> The shape {place} is a {shape}, which is option A. </think>\n\\boxed{{A}}"
            )
        else:
            usual = _COLOURS[n % len(_COLOURS)]
            verdict = "yes" if colour == usual else "no"
            question = f"Is the {obj} {usual}? {_plural(obj).capitalize()} are usually {usual}."
            output = (
                f"<description> The {obj} is {colour} and the background is white. </description>\n"
                f"<think> The image shows a {colour} {obj}, whatever the usual colour is. "
                f"So the answer is {verdict}. </think>\n\\boxed{{{verdict}}}"
            )
        lines.append(f"{question}\n{_INSTRUCTIONS[i % len(_INSTRUCTIONS)].replace('{a}', colour)}")
        lines.append(output)
    lines.append(" ".join(str(k) for k in range(200)) + " 0.5 3.14 25% 1/2 x^2 \\sqrt{2} \\pi \\cdot \\leq \\geq")
    return lines
