"""What a benchmark is and what it yields: :class:`Benchmark`, :class:`EvalItem`, its rows."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from vigos.data.rows import BAD_ROW_MODES
from vigos.eval.sources import BenchmarkDataError, Row, find_files, option_letter, read_rows

DEFAULT_PROMPT_TEMPLATE = "{question}\n{options}"
# Grader names assumed until `vigos.grading.answers` exists to be asked (see _known_graders).
DEFAULT_GRADERS = ("auto", "multiple_choice", "math", "exact", "judge", "vilp")
ANSWER_FORMATS = ("auto", "letter", "text", "index")
_TEMPLATE_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = r"[a-z0-9][a-z0-9._\-]*"

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class BadRow:
    """A source row that yields no item: where it is (file and row) and what is wrong with it."""

    where: str
    problem: str


def per_row(rows: Iterable[Row], build: Callable[[Row], EvalItem | list[EvalItem]]) -> Iterator[EvalItem | BadRow]:
    """The items ``build`` makes of each row, in order; a row it fails on (:class:`BenchmarkDataError`: a missing
    field, an answer outside its options, a broken image) becomes a :class:`BadRow` and the next row is read."""
    for row in rows:
        try:
            made = build(row)
        except BenchmarkDataError as error:
            yield BadRow(row.where, str(error))
            continue
        yield from [made] if isinstance(made, EvalItem) else made


@dataclass
class Benchmark:
    """A named suite and the adapter that reads its local copy.

    ``loader(benchmark, folder)`` yields items lazily from the benchmark's
    folder, so ``load(limit=...)`` stops reading early; it yields a
    :class:`BadRow` for a row it cannot make an item of (:func:`per_row`). ``folder`` is the
    sub-directory of ``data_dir`` that holds the copy (default: ``name``).
    """

    name: str
    description: str
    expected_layout: str
    loader: Callable[[Benchmark, Path], Iterable[EvalItem | BadRow]] = field(repr=False)
    folder: str = ""

    def local_dir(self, data_dir: str | Path) -> Path:
        """Where this benchmark's local copy lives under ``data_dir``."""
        return Path(data_dir) / (self.folder or self.name)

    def load(self, data_dir: str | Path, limit: int | None = None, *, bad_rows: str = "error") -> list[EvalItem]:
        """Read up to ``limit`` items (all when None) from ``data_dir/<folder>/`` (bad rows as in :meth:`read`)."""
        return self.read(data_dir, limit, bad_rows=bad_rows)[0]

    def read(
        self, data_dir: str | Path, limit: int | None = None, *, bad_rows: str = "error"
    ) -> tuple[list[EvalItem], list[BadRow]]:
        """Up to ``limit`` items (all when None) from ``data_dir/<folder>/``, and the bad rows met on the way.

        ``bad_rows="error"`` raises :class:`BenchmarkDataError` at the first bad row, naming it; ``"skip"``
        leaves it out with a warning (it is returned), as training data's ``bad_rows`` does. A copy whose
        rows are all bad fails either way, naming the first.
        """
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a positive number of items or None, got {limit}")
        if bad_rows not in BAD_ROW_MODES:
            raise ValueError(f"bad_rows must be one of {', '.join(BAD_ROW_MODES)}, got {bad_rows!r}")
        root = self.local_dir(data_dir)
        if not root.is_dir():
            raise BenchmarkDataError(
                f"{self.name}: local copy not found: {root} does not exist.\nExpected layout: {self.expected_layout}"
            )
        items: list[EvalItem] = []
        bad: list[BadRow] = []
        for entry in self.loader(self, root):
            if isinstance(entry, BadRow):
                if bad_rows == "error":
                    raise BenchmarkDataError(f"{entry.problem}\nTo leave such rows out, use --bad-rows skip.")
                logger.warning("%s: skipping a bad row: %s", self.name, entry.problem.split("\n", 1)[0])
                bad.append(entry)
                continue
            items.append(entry)
            if limit is not None and len(items) == limit:
                break
        if not items and bad:
            raise BenchmarkDataError(f"{self.name}: every row read is bad; the first: {bad[0].problem}")
        if not items:
            raise BenchmarkDataError(f"{self.name}: {root} holds no rows.\nExpected layout: {self.expected_layout}")
        return items, bad


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
