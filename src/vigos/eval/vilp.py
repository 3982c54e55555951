"""ViLP: its published rows (three images per question) as items, and how its official scorer compares answers.

Each row of ViLP/ViLP (split ``train``, the only one) holds a question that states a text prior, and three
images with their one-word answers: ``image1`` agrees with the prior, ``image2`` and ``image3`` contradict it.
ViLP-F keeps the stated prior in the question, ViLP-P drops it (its first sentence).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from vigos.eval.items import BadRow, Benchmark, EvalItem, _rows, _sources, per_row
from vigos.eval.sources import Row

__all__ = ["VILP_PROMPT", "load_vilp"]

# The official evaluation (ViLP-team/ViLP test_gpt.py, lmms-eval vilp) asks for one word.
VILP_PROMPT = "Please answer with one word: {question}"


def _without_fact(question: str) -> str:
    """ViLP-P: the question with its first sentence (the stated prior) removed."""
    fact, _, rest = question.partition(".")
    return rest.strip() if rest.strip() else fact.strip()


def load_vilp(benchmark: Benchmark, root: Path, *, with_fact: bool) -> Iterator[EvalItem | BadRow]:
    files = _sources(benchmark, root, ("ViLP.parquet", "*.parquet", "data/*.parquet"))
    counter = itertools.count()

    def build(row: Row) -> list[EvalItem]:
        index = next(counter)
        published = row.text("question")
        question = VILP_PROMPT.format(question=published if with_fact else _without_fact(published))
        question_id = row.get("question_id", index)
        # image1/answer1 follow the text prior; image2 and image3 contradict it.
        return [
            EvalItem(
                benchmark.name,
                f"{question_id}-{k}",
                question,
                row.image(f"image{k}"),
                row.text(f"answer{k}"),
                split="conflict" if k != 1 else "agree",
                conflict=k != 1,
                grader="vilp",
                meta={"question_id": question_id, "image_index": k, "published_question": published},
            )
            for k in (1, 2, 3)
        ]

    return per_row(_rows(benchmark, files, split="train", base_dir=root), build)
