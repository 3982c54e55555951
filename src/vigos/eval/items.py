"""What a benchmark is and what it yields: :class:`Benchmark`, :class:`EvalItem`, its rows."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from vigos.eval.sources import BenchmarkDataError, Row, find_files, option_letter, read_rows

DEFAULT_PROMPT_TEMPLATE = "{question}\n{options}"
# Grader names assumed until `vigos.grading.answers` exists to be asked (see _known_graders).
DEFAULT_GRADERS = ("auto", "multiple_choice", "math", "exact", "judge")
ANSWER_FORMATS = ("auto", "letter", "text", "index")
_TEMPLATE_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = r"[a-z0-9][a-z0-9._\-]*"


def format_options(options: Sequence[str]) -> str:
    """Options as lines ``A. first`` / ``B. second`` / ..."""
    return "\n".join(f"{option_letter(i)}. {text}" for i, text in enumerate(options))


@dataclass
class EvalItem:
    """One evaluation question: an image, a question and its reference answer.

    ``answer`` is an option letter for multiple-choice items. ``grader`` names
    an entry of ``vigos.grading.answers.GRADERS``. ``conflict`` is set for ViLP only:
    True where the image contradicts the text prior (ViLP "Score"), False
    where it agrees (ViLP "Prior"). ``prompt_template`` places the question
    and the option lines; it uses ``{question}`` and ``{options}`` only.
    """

    benchmark: str
    id: str
    question: str
    image: Image.Image | list[Image.Image]  # several: each its own image, in order
    answer: str
    options: list[str] | None = None
    category: str | None = None
    split: str | None = None
    conflict: bool | None = None
    grader: str = "auto"
    meta: dict[str, Any] = field(default_factory=dict)
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE

    def prompt_question(self) -> str:
        """The question text with the options listed ``A. ...`` one per line."""
        values = {"question": self.question, "options": format_options(self.options) if self.options else ""}
        return _TEMPLATE_FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), self.prompt_template).rstrip()


@dataclass
class Benchmark:
    """A named suite and the adapter that reads its local copy.

    ``loader(benchmark, folder)`` yields items lazily from the benchmark's
    folder, so ``load(limit=...)`` stops reading early. ``folder`` is the
    sub-directory of ``data_dir`` that holds the copy (default: ``name``).
    """

    name: str
    description: str
    expected_layout: str
    loader: Callable[[Benchmark, Path], Iterable[EvalItem]] = field(repr=False)
    folder: str = ""

    def local_dir(self, data_dir: str | Path) -> Path:
        """Where this benchmark's local copy lives under ``data_dir``."""
        return Path(data_dir) / (self.folder or self.name)

    def load(self, data_dir: str | Path, limit: int | None = None) -> list[EvalItem]:
        """Read up to ``limit`` items (all when None) from ``data_dir/<folder>/``."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a positive number of items or None, got {limit}")
        root = self.local_dir(data_dir)
        if not root.is_dir():
            raise BenchmarkDataError(
                f"{self.name}: local copy not found: {root} does not exist.\nExpected layout: {self.expected_layout}"
            )
        items = list(itertools.islice(self.loader(self, root), limit))
        if not items:
            raise BenchmarkDataError(f"{self.name}: {root} holds no rows.\nExpected layout: {self.expected_layout}")
        return items


def _sources(benchmark: Benchmark, root: Path, patterns: Sequence[str]) -> list[Path]:
    return find_files(root, patterns, what=benchmark.name, layout=benchmark.expected_layout)


def _rows(
    benchmark: Benchmark,
    files: Sequence[Path],
    *,
    split: str,
    base_dir: Path,
    prefix: str = "",
    root: Path | None = None,
    allow_outside: bool = False,
) -> Iterator[Row]:
    """The rows of ``files``; their image paths resolve against ``base_dir`` and must stay inside ``root``
    (default ``base_dir``) unless ``allow_outside``."""
    layout = benchmark.expected_layout
    for where, data in read_rows(files, split=split, layout=layout):
        yield Row(
            prefix + where,
            data,
            base_dir=base_dir,
            benchmark=benchmark.name,
            layout=layout,
            root=root,
            allow_outside=allow_outside,
        )
