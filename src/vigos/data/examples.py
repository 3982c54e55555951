"""Training examples from validated rows: read and decoded when a batch needs them, or all at once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vigos.data.images import ImagePathOutsideError as ImagePathOutsideError
from vigos.data.images import MissingImageError as MissingImageError
from vigos.data.images import UnreadableImageError as UnreadableImageError
from vigos.data.images import decode_image_bytes as decode_image_bytes
from vigos.data.images import resolve_image as resolve_image
from vigos.data.images import row_image_values as row_image_values
from vigos.data.images import to_rgb as to_rgb
from vigos.data.rows import BadRowError, DataReport, Example, RowReader, _jsonable, load_rows

if TYPE_CHECKING:
    import datasets
logger = logging.getLogger(__name__)


class LazyExamples(torch.utils.data.Dataset):
    """The kept rows of a dataset as :class:`Example`, each read and decoded only when asked for.

    Holds the Dataset (its Arrow table is memory-mapped, so the OS pages it in
    and out) and ``kept``, the source indices of the rows to use, in order;
    ``dataset[i]`` reads row ``kept[i]`` and decodes its images, and keeps
    nothing once it is returned, so memory does not grow with rows or images.
    The rows are taken as validated (:func:`vigos.data.validation.validate_rows`):
    a row that no longer reads (e.g. an image file deleted since) raises
    :class:`BadRowError`. Pickles small for DataLoader workers.
    """

    def __init__(
        self,
        rows: datasets.Dataset,
        kept: Sequence[int] | np.ndarray,
        *,
        question_field: str = "question",
        image_field: str = "image",
        answer_field: str = "answer",
        images_per_row: str = "all",
        base_dir: Path | None = None,
        allow_image_paths_outside: bool = False,
    ):
        self.kept = np.asarray(kept, dtype=np.int64)
        self.question_field = question_field
        self.image_field = image_field
        self.answer_field = answer_field
        self.images_per_row = images_per_row
        self.base_dir = base_dir
        self.allow_image_paths_outside = allow_image_paths_outside
        self._reader = RowReader(rows)
        self._not_meta = {question_field, image_field, answer_field} | self._reader.media_columns

    def __len__(self) -> int:
        return len(self.kept)

    def __getitem__(self, index: int) -> Example:
        row_index = int(self.kept[index])
        row = self._reader.rows(row_index, row_index + 1)[0]
        # Validation passed the text (a string, or a number kept as its str); only image files can change since.
        question, answer = (str(row[name]).strip() for name in (self.question_field, self.answer_field))
        try:
            images = [
                resolve_image(value, base_dir=self.base_dir, allow_image_paths_outside=self.allow_image_paths_outside)
                for value in row_image_values(row.get(self.image_field), self.images_per_row)
            ]
        except (MissingImageError, UnreadableImageError) as error:
            raise BadRowError(
                f"row {row_index} (field {self.image_field!r}): {error} — the row passed validation, "
                "so the image changed since: fix it, or clear the validation cache to check the rows "
                "again",
                row=row_index,
                field=self.image_field,
            ) from None
        meta = {name: value for name, value in row.items() if name not in self._not_meta and _jsonable(value)}
        return Example(
            question=question, answer=answer, image=images[0] if len(images) == 1 else images, row=row_index, meta=meta
        )


def prepare_lazy_examples(
    rows: datasets.Dataset,
    *,
    question_field: str = "question",
    image_field: str = "image",
    answer_field: str = "answer",
    images_per_row: str = "all",
    base_dir: Path | None = None,
    allow_image_paths_outside: bool = False,
    **checks: Any,
) -> tuple[LazyExamples, DataReport]:
    """Validate ``rows`` (:func:`vigos.data.validation.validate_rows`, which takes ``checks``: ``bad_rows``,
    ``min_image_side``, ``max_prompt_length``, ``prompt_length``, ``max_images_per_row``, ``limit``,
    ``num_proc``, ``cache_dir``, ...) and give the kept rows as :class:`LazyExamples`. Image paths resolve
    against ``base_dir`` and must stay inside it unless ``allow_image_paths_outside``."""
    from vigos.data.validation import validate_rows  # deferred: vigos.validation imports this module

    kept, report = validate_rows(
        rows,
        question_field=question_field,
        image_field=image_field,
        answer_field=answer_field,
        images_per_row=images_per_row,
        base_dir=base_dir,
        allow_image_paths_outside=allow_image_paths_outside,
        **checks,
    )
    return LazyExamples(
        rows,
        kept,
        question_field=question_field,
        image_field=image_field,
        answer_field=answer_field,
        images_per_row=images_per_row,
        base_dir=base_dir,
        allow_image_paths_outside=allow_image_paths_outside,
    ), report


def prepare_examples(rows: datasets.Dataset, **options: Any) -> tuple[list[Example], DataReport]:
    """Validate ``rows`` into examples held in memory, in row order: :func:`prepare_lazy_examples` (same
    options), every kept row then read and decoded. For small datasets (tests, demos, evaluation samples);
    training reads its rows lazily."""
    examples, report = prepare_lazy_examples(rows, **options)
    return [examples[i] for i in range(len(examples))], report


class ExampleDataset(torch.utils.data.Dataset):
    """A list of :class:`Example` as a torch dataset; ``dataset[i]`` is the i-th Example."""

    def __init__(self, examples: Sequence[Example]):
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]


def collate_examples(batch: list[Example]) -> list[Example]:
    """Keep a batch as a list of :class:`Example`.

    The trainer builds each prompt (student and every teacher) only after the
    rollout, from the raw question, answer and PIL images, so there is nothing
    to stack here; torch's default collator would also fail on PIL images.
    """
    return list(batch)


def load_examples(
    source: str, *, split: str = "train", lazy: bool = False, **options: Any
) -> tuple[list[Example] | LazyExamples, DataReport]:
    """:func:`load_rows` then :func:`prepare_examples`, or :func:`prepare_lazy_examples` when ``lazy``.

    ``base_dir`` (where relative image paths resolve, and the folder every
    image path must stay inside unless ``allow_image_paths_outside=True``)
    defaults to the directory of a JSONL/parquet file, or to the dataset
    directory itself (the working directory for a hub id).
    """
    rows = load_rows(source, split=split)
    path = Path(source).expanduser()
    options.setdefault("base_dir", path.parent if path.is_file() else path if path.is_dir() else None)
    return (prepare_lazy_examples if lazy else prepare_examples)(rows, **options)
