"""The prompt of the student and of each teacher, and how they render.

Every prompt is one user turn (the image, then a text) rendered through the
processor's own chat template, followed by the assistant header and a
pre-fill. The student's completion tokens are appended to a teacher's prompt
as token ids, never re-tokenized, so the teacher scores exactly the tokens the
student sampled.

Templates are plain text with two named fields, ``{question}`` and
``{answer}``. Only those two names are substituted, so LaTeX braces such as
``\\boxed{}`` need no escaping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DESCRIPTION_OPEN = "<description>"
DESCRIPTION_CLOSE = "</description>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
BOXED_OPEN = "\\boxed{"

FORMAT_INSTRUCTION = (
    "First describe what the image shows inside <description> </description>. "
    "Then think step by step inside <think> </think>. "
    "Finally put the final answer inside \\boxed{}."
)

STUDENT_PROMPT = "{question}\n" + FORMAT_INSTRUCTION
PERCEPTION_PROMPT = "Describe what the image shows."
REASONING_PROMPT = "{question}\nThe correct answer is {answer}. Explain step by step how to reach it."
REFERENCE_PROMPT = "{question}\nThe correct answer is {answer}.\n" + FORMAT_INSTRUCTION

TEMPLATE_FIELDS = ("question", "answer")
_FIELD = re.compile(r"\{(question|answer)\}")


def render_template(template: str, *, question: str, answer: str | None = None) -> str:
    """Substitute ``{question}`` and ``{answer}`` in ``template``.

    Raises ``ValueError`` when the template asks for the answer but none is
    given (the student must never see the reference answer).
    """
    values = {"question": question, "answer": answer}

    def substitute(match: re.Match[str]) -> str:
        value = values[match.group(1)]
        if value is None:
            raise ValueError(f"prompt template needs {{{match.group(1)}}} but no value was given: {template!r}")
        return value

    return _FIELD.sub(substitute, template)


def template_fields(template: str) -> set[str]:
    """The named fields a template uses."""
    return set(_FIELD.findall(template))


@dataclass(frozen=True)
class PromptSpec:
    """One context: a user-turn template (with an image) and the assistant pre-fill."""

    template: str
    prefill: str
    with_image: bool = True

    def text(self, question: str, answer: str | None = None) -> str:
        """The user-turn text for one row."""
        return render_template(self.template, question=question, answer=answer)


def chat_messages(user_text: str, with_image: bool = True) -> list[dict[str, Any]]:
    """One user turn in the content-list form that Qwen-VL chat templates take."""
    content: list[dict[str, Any]] = [{"type": "image"}] if with_image else []
    content.append({"type": "text", "text": user_text})
    return [{"role": "user", "content": content}]


def render_prompt(processor: Any, user_text: str, prefill: str, with_image: bool = True) -> str:
    """The full prompt string: chat template, assistant header, then the pre-fill.

    The image appears as the family's placeholder; the processor expands it
    to the image's token count when the string is encoded with the image.
    """
    rendered = processor.apply_chat_template(
        chat_messages(user_text, with_image), tokenize=False, add_generation_prompt=True
    )
    return rendered + prefill
