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

# The instructions carry what the public release's prompts ask for, in our own
# words: a self-contained description that leads to the answer without stating
# it, reasoning that checks itself, and a short boxed answer.
FORMAT_INSTRUCTION = (
    "First look at the image and describe it inside <description> </description>. The description must stand on "
    "its own: a reader who cannot see the image should be able to answer the question from it alone, so give every "
    "visual detail the question depends on, but do not state the final answer. "
    "Then reason step by step inside <think> </think>, checking each step and correcting any mistake you find. "
    "Finally put the final answer, a single word or phrase, inside \\boxed{}."
)

# The reference answer or solution, set apart so that a teacher can tell it from the problem.
REFERENCE_BLOCK = "\n\n--- reference solution ---\n{answer}\n--- end of reference solution ---\n\n"

STUDENT_PROMPT = "{question}\n\n" + FORMAT_INSTRUCTION
# The perception teacher sees the image alone: no text and no pre-fill (the release's choice).
PERCEPTION_PROMPT = ""
PERCEPTION_PREFILL = ""
REASONING_PROMPT = (
    "{question}"
    + REFERENCE_BLOCK
    + "Read the reference solution until you understand why it is right. Then solve the problem yourself, step by "
    "step, and reach the same final answer through your own reasoning; do not copy or reword the reference "
    "solution. Write your reasoning inside <think> </think>, then put the final answer, a single word or phrase, "
    "inside \\boxed{}."
)
REFERENCE_PROMPT = (
    "{question}"
    + REFERENCE_BLOCK
    + "Read the reference solution until you understand why it is right, then answer the problem in your own "
    "words. Begin with the visual evidence: " + FORMAT_INSTRUCTION[0].lower() + FORMAT_INSTRUCTION[1:]
)

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
    """One context: a user-turn template (shown after the row's images) and the assistant pre-fill."""

    template: str
    prefill: str

    def text(self, question: str, answer: str | None = None) -> str:
        """The user-turn text for one row."""
        return render_template(self.template, question=question, answer=answer)


def student_spec(prompt: str = STUDENT_PROMPT) -> PromptSpec:
    """The student's context: ``prompt`` (with ``{question}``) and the ``<description>`` pre-fill that every
    rollout starts from. The one place the student's spec is built."""
    return PromptSpec(prompt, DESCRIPTION_OPEN)


def chat_messages(user_text: str, images: int = 1) -> list[dict[str, Any]]:
    """One user turn in the content-list form that Qwen-VL chat templates take: ``images`` image items,
    then the text. An empty ``user_text`` adds no text item, so a turn can hold the images alone."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(images)]
    if user_text:
        content.append({"type": "text", "text": user_text})
    return [{"role": "user", "content": content}]


def render_prompt(processor: Any, user_text: str, prefill: str, images: int = 1) -> str:
    """The full prompt string: chat template, assistant header, then the pre-fill.

    Each image appears as the family's placeholder; the processor expands it
    to the image's token count when the string is encoded with the images.
    """
    rendered = processor.apply_chat_template(
        chat_messages(user_text, images), tokenize=False, add_generation_prompt=True
    )
    return rendered + prefill
