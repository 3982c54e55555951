"""Load (image, question, reference answer) rows and turn them into validated examples.

Sources: a hub id, a directory written by ``save_to_disk``, a parquet file or
directory, or a JSONL/JSON file whose image field holds paths relative to it.
A field mapping names the question, image and answer columns. Each bad row
(no image, unreadable or tiny image, empty question or answer, prompt too
long) is skipped and counted, or stops the run with a message naming the row,
per ``bad_rows``. Nothing here knows about models or losses.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image

logger = logging.getLogger("vigos.data")

BAD_ROW_MODES = ("skip", "error")


@dataclass
class Example:
    """One training or evaluation example."""

    question: str
    answer: str
    image: Image.Image
    row: int = 0
    meta: dict = field(default_factory=dict)


class DataError(ValueError):
    """A dataset that cannot be used as configured; the message says what to set or fix."""


class BadRowError(DataError):
    """A row that cannot be used, with the row, the field and what to do."""


@dataclass
class DataReport:
    """What validation kept and skipped."""

    total: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples_of_skips: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the log."""
        if not self.skipped:
            return f"{self.kept} of {self.total} rows kept"
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items()))
        return f"{self.kept} of {self.total} rows kept; skipped {sum(self.skipped.values())} ({reasons})"


def load_rows(source: str, *, split: str = "train") -> Any:
    """Load a dataset (``datasets.Dataset``) from a local path or a hub id."""
    import datasets

    path = Path(source)
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists() or (path / "state.json").exists():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DataError(f"dataset {source!r} has no split {split!r}; it has {', '.join(loaded)} (set dataset_split)")
                return loaded[split]
            return loaded
        parquet = sorted(str(p) for p in path.rglob("*.parquet"))
        if parquet:
            return datasets.load_dataset("parquet", data_files=parquet, split="train")
        jsonl = sorted(str(p) for p in path.glob("*.jsonl"))
        if jsonl:
            return datasets.load_dataset("json", data_files=jsonl, split="train")
        raise DataError(f"dataset directory {source!r} holds no saved dataset, parquet or JSONL files")
    if path.suffix in (".parquet", ".jsonl", ".json"):
        if not path.exists():
            raise FileNotFoundError(f"dataset file {source!r} not found")
        kind = "parquet" if path.suffix == ".parquet" else "json"
        return datasets.load_dataset(kind, data_files=str(path), split="train")
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise FileNotFoundError(f"dataset path {source!r} not found")
    try:
        return datasets.load_dataset(source, split=split)
    except Exception as error:  # the hub client raises many kinds; one clear line for all
        raise DataError(
            f"could not load dataset {source!r}: not a local file or directory, and loading it from the hub "
            f"failed ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from None


def resolve_image(value: Any, *, base_dir: Path | None = None) -> Image.Image:
    """An RGB PIL image from a PIL image, a datasets image dict, a path, bytes, or a list of those (first)."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("the image list is empty")
        value = value[0]
    if value is None:
        raise ValueError("no image")
    if isinstance(value, dict):
        if value.get("bytes"):
            value = value["bytes"]
        elif value.get("path"):
            value = value["path"]
        else:
            raise ValueError("the image holds neither bytes nor a path")
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, (bytes, bytearray)):
            image = Image.open(io.BytesIO(value))
        elif isinstance(value, str):
            path = Path(value)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            if not path.exists():
                raise ValueError(f"image file {str(path)!r} not found")
            image = Image.open(path)
        else:
            raise ValueError(f"cannot read an image from a {type(value).__name__}")
        image.load()
    except (OSError, SyntaxError) as error:
        raise ValueError(f"unreadable image ({error})") from None
    return image.convert("RGB")


def _row_problem(
    row: dict,
    *,
    question_field: str,
    image_field: str,
    answer_field: str,
    min_image_side: int,
    base_dir: Path | None,
) -> tuple[str, str, str] | Example:
    """The example of a row, or (reason, field, message) when the row is bad."""
    question = row.get(question_field)
    if question is None or not str(question).strip():
        return "empty question", question_field, "the question is empty"
    answer = row.get(answer_field)
    if answer is None or not str(answer).strip():
        return "empty answer", answer_field, "the answer is empty"
    try:
        image = resolve_image(row.get(image_field), base_dir=base_dir)
    except ValueError as error:
        reason = "missing image" if "not found" in str(error) or "no image" in str(error) or "empty" in str(error) else "unreadable image"
        return reason, image_field, str(error)
    if min(image.size) < min_image_side:
        return "tiny image", image_field, f"the image is {image.size[0]}x{image.size[1]}, under min_image_side={min_image_side}"
    meta = {k: v for k, v in row.items() if k not in (question_field, image_field, answer_field) and _jsonable(v)}
    return Example(question=str(question).strip(), answer=str(answer).strip(), image=image, meta=meta)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def prepare_examples(
    rows: Any,
    *,
    question_field: str = "question",
    image_field: str = "image",
    answer_field: str = "answer",
    bad_rows: str = "skip",
    min_image_side: int = 28,
    max_prompt_length: int | None = None,
    prompt_length: Callable[[str, Image.Image], int] | None = None,
    base_dir: Path | None = None,
    limit: int | None = None,
) -> tuple[list[Example], DataReport]:
    """Validate ``rows`` into examples; bad rows are skipped and counted or raise :class:`BadRowError`."""
    if bad_rows not in BAD_ROW_MODES:
        raise DataError(f"bad_rows must be one of {', '.join(BAD_ROW_MODES)}; got {bad_rows!r}")
    columns = list(getattr(rows, "column_names", None) or (rows[0].keys() if len(rows) else []))
    for option, name in (("question_field", question_field), ("image_field", image_field), ("answer_field", answer_field)):
        if columns and name not in columns:
            raise DataError(f"the dataset has no column {name!r} (set {option}); its columns are: {', '.join(columns)}")
    report = DataReport()
    skipped: Counter[str] = Counter()
    examples: list[Example] = []
    for index, row in enumerate(rows):
        if limit is not None and len(examples) >= limit:
            break
        report.total += 1
        found = _row_problem(row, question_field=question_field, image_field=image_field, answer_field=answer_field,
                             min_image_side=min_image_side, base_dir=base_dir)
        if isinstance(found, Example) and max_prompt_length is not None and prompt_length is not None:
            length = prompt_length(found.question, found.image)
            if length > max_prompt_length:
                found = ("prompt too long", question_field,
                         f"the prompt is {length} tokens, over max_prompt_length={max_prompt_length}")
        if isinstance(found, Example):
            found.row = index
            examples.append(found)
            continue
        reason, field_name, message = found
        text = f"row {index} (field {field_name!r}): {message}"
        if bad_rows == "error":
            raise BadRowError(f"{text} — fix the row or set bad_rows: skip")
        skipped[reason] += 1
        if len(report.examples_of_skips) < 5:
            report.examples_of_skips.append(text)
    report.kept = len(examples)
    report.skipped = dict(skipped)
    logger.info("data: %s", report.summary())
    for text in report.examples_of_skips:
        logger.info("skipped %s", text)
    return examples, report


class ExampleDataset(torch.utils.data.Dataset):
    """A list of :class:`Example` as a torch dataset (what the trainer iterates)."""

    def __init__(self, examples: list[Example]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]


def collate_examples(batch: list[Example]) -> list[Example]:
    """Keep a batch as a list of examples: prompts are built after the rollout, per teacher."""
    return list(batch)


def load_examples(source: str, *, split: str = "train", **prepare_kwargs: Any) -> tuple[list[Example], DataReport]:
    """:func:`load_rows` then :func:`prepare_examples`; relative image paths resolve against a file's directory."""
    rows = load_rows(source, split=split)
    path = Path(source)
    prepare_kwargs.setdefault("base_dir", path.parent if path.is_file() else path if path.is_dir() else None)
    return prepare_examples(rows, **prepare_kwargs)
