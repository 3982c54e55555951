"""The two evaluation protocols ``vigos eval`` runs, and what each does.

``official`` reads each benchmark as its authors publish it and grades as
their scorers do: MM-Vet's 0-1 partial credit from an LLM judge, ViLP's
synonym and plural normalization, MathVista's hint and precision, CV-Bench's
own overall score, MMMU's several accepted letters, an option's text accepted
as the option. Its figures compare with the official leaderboards.

``paper`` reproduces the ViGOS release's own evaluation (METHOD.md): the
release's re-packaged copies (rows of ``problem``, ``images``, ``answer``),
ViLP from its ``train`` split with a one-word instruction, CV-Bench with the
dataset's ``prompt`` field, answers taken only from ``\\boxed{}``, and every
item graded by one LLM-judge call that sees the question and the extracted
answers of all samples. Its figures compare with the paper's table.

A run records its protocol in ``run.json`` (a resumed run keeps it),
``summary.json`` and the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DEFAULT_PROTOCOL", "PROTOCOLS", "check_protocol", "mixed_protocols", "protocol_note"]

PROTOCOLS = ("official", "paper")
DEFAULT_PROTOCOL = "official"

_NOTES = {
    "official": "each benchmark's own prompt fields and scorer; comparable with the official leaderboards",
    "paper": (
        "the ViGOS release's protocol (its re-packaged copies, \\boxed{} answers only, one judge call per item "
        "over all samples); comparable with the paper's table"
    ),
}


def check_protocol(value: Any) -> str:
    """``value`` when it names a protocol; a :class:`ValueError` naming the option otherwise."""
    if value not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {value!r}")
    return str(value)


def protocol_note(protocol: str) -> str:
    """One line on what ``protocol`` does and which published numbers it compares with."""
    return _NOTES[check_protocol(protocol)]


def mixed_protocols(summaries: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str | None:
    """A warning when the runs were evaluated under different protocols (their figures do not compare), else None.

    A summary written before protocols existed counts as ``official``, the grading it had.
    """
    found = [str(summary.get("protocol") or DEFAULT_PROTOCOL) for summary in summaries]
    if len(set(found)) < 2:
        return None
    listed = ", ".join(f"{name}: {protocol}" for name, protocol in zip(names, found, strict=True))
    return (
        f"The runs were evaluated under different protocols ({listed}); their figures are not comparable: "
        "the protocols read different copies, prompts and graders."
    )
