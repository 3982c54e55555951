"""Load (image(s), question, reference answer) rows and turn them into examples, read when needed.

Sources: a hub id, a directory written by ``save_to_disk``, a parquet file or a
directory of parquet files, or a JSONL/JSON file whose image field holds paths
relative to it. A field mapping names the question, image(s) and answer
columns. One pass over the rows (:mod:`vigos.validation`) finds the bad ones
(no image, unreadable, tiny or too many images, empty question or answer,
prompt too long), to skip or to stop at per ``bad_rows``, and keeps only the
index of the good ones; :class:`LazyExamples` reads and decodes a row when a
batch asks for it. Nothing here knows about models or losses: the prompt
length comes in as a callable.
"""
from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageOps

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger("vigos.data")

BAD_ROW_MODES = ("skip", "error")
IMAGES_PER_ROW = ("all", "first")
SKIP_REASONS = (
    "missing image",
    "unreadable image",
    "tiny image",
    "too many images",
    "empty question",
    "question not text",
    "empty answer",
    "answer not text",
    "prompt too long",
    "prompt failed",
)
_SAVED_DATASET_MARKERS = ("dataset_dict.json", "state.json")
_DATA_FILE_KINDS = (("parquet", (".parquet",)), ("json", (".jsonl", ".json")))


@dataclass
class Example:
    """One (image(s), question, reference answer) example.

    ``image`` is one RGB image or a list of a row's RGB images, in order
    (``images`` is always the list); ``row`` is the row's index in the source
    dataset (for messages); ``meta`` holds the row's other fields that are
    JSON-able.
    """

    question: str
    answer: str
    image: Image.Image | list[Image.Image]
    row: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def images(self) -> list[Image.Image]:
        """The example's images, in order (one or more)."""
        return list(self.image) if isinstance(self.image, (list, tuple)) else [self.image]


class DataError(ValueError):
    """A dataset that cannot be used as configured; the message says what to set or fix."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A local dataset path that does not exist."""


class BadRowError(DataError):
    """A row that cannot be used; the message names the row, the field and what to do."""

    def __init__(self, message: str, *, row: int | None = None, field: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.row = row
        self.field = field
        self.reason = reason


class MissingImageError(ValueError):
    """No image where one should be: None, an empty list, or a path that does not exist."""


class UnreadableImageError(ValueError):
    """Image data that Pillow cannot decode."""


@dataclass
class DataReport:
    """What validation kept and skipped.

    ``total`` counts the rows checked (fewer than the source when ``limit``
    stopped reading early); ``skipped`` maps a reason from ``SKIP_REASONS`` to
    its count; ``several_images`` counts kept rows whose image field held more
    than one image (all of them are used, or the first with
    ``images_per_row="first"``).
    """

    total: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples_of_skips: list[str] = field(default_factory=list)
    several_images: int = 0
    stopped_at_limit: int | None = None
    images_per_row: str = "all"

    def summary(self) -> str:
        """One line for the log."""
        line = f"{self.kept} of {self.total} rows kept"
        if self.skipped:
            reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items()))
            line += f"; skipped {sum(self.skipped.values())} ({reasons})"
        if self.several_images:
            used = "all are used" if self.images_per_row == "all" else "the first is used: images_per_row=first"
            line += f"; {self.several_images} with several images ({used})"
        if self.stopped_at_limit is not None:
            line += f"; stopped at limit={self.stopped_at_limit}"
        return line


def _looks_like_path(source: str) -> bool:
    # A hub id is "name" or "owner/name"; anything else path-shaped is meant to be local.
    suffixes = tuple(suffix for _, kind in _DATA_FILE_KINDS for suffix in kind) + (".arrow",)
    return (
        source.startswith((".", "/", "~", "\\"))
        or source.count("/") > 1
        or "\\" in source
        or (len(source) > 1 and source[1] == ":")
        or source.lower().endswith(suffixes)
    )


def _first_line(error: BaseException) -> str:
    """``Type: first line of message`` of an error and of the error that caused it."""
    parts = []
    while error is not None and len(parts) < 2:
        text = str(error).strip().splitlines()
        parts.append(f"{type(error).__name__}: {text[0]}" if text else type(error).__name__)
        error = error.__cause__ or error.__context__
    return "; caused by ".join(parts)


def _hub_unreachable(error: BaseException | None) -> bool:
    while error is not None:
        name = type(error).__name__
        if isinstance(error, (ConnectionError, TimeoutError)) or "Offline" in name or "Connect" in name:
            return True
        error = error.__cause__ or error.__context__
    return False


def _bad_json_line(path: Path) -> str | None:
    """Where a JSON/JSONL file stops being a list of objects, for a message; None when it is fine."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, list):
        bad = next((i for i, row in enumerate(whole) if not isinstance(row, dict)), None)
        return None if bad is None else f"entry {bad} is a {type(whole[bad]).__name__}, not an object"
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            return f"line {number} is not valid JSON ({error.msg} at column {error.colno})"
        if not isinstance(row, dict):
            return f"line {number} is a {type(row).__name__}, not an object"
    return None


def _load_data_files(kind: str, files: list[str], source: str) -> datasets.Dataset:
    import datasets

    try:
        return datasets.load_dataset(kind, data_files=files, split="train")
    except Exception as error:  # datasets wraps parse errors in a generic builder error; name the file and line
        where = next((f"{Path(f).name}: {bad}" for f in files if kind == "json" and (bad := _bad_json_line(Path(f)))),
                     _first_line(error))
        raise DataError(f"could not read dataset {source!r}: {where}") from None


def _split_files(directory: Path) -> tuple[str, dict[str, list[str]]] | None:
    """The data-file kind of a directory and its files per split (by the hub's file-naming rules)."""
    from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns

    try:
        by_split = DataFilesDict.from_patterns(get_data_patterns(str(directory)), base_path=str(directory))
    except EmptyDatasetError:
        return None
    for kind, suffixes in _DATA_FILE_KINDS:
        found = {str(split): [f for f in files if f.lower().endswith(suffixes)] for split, files in by_split.items()}
        found = {split: files for split, files in found.items() if files}
        if found:
            return kind, found
    return None


def load_rows(source: str, *, split: str = "train") -> datasets.Dataset:
    """Load the rows of a dataset as a ``datasets.Dataset``.

    ``source`` is a directory written by ``Dataset.save_to_disk`` or
    ``DatasetDict.save_to_disk`` (``split`` picks from a DatasetDict), a
    ``.parquet`` file or a directory of parquet files (splits by the hub's
    file-naming rules, e.g. ``data/train-00000-of-00001.parquet``), a
    ``.jsonl``/``.json`` file, or else a hub id. Raises
    :class:`DatasetNotFoundError` for a local path that does not exist and
    :class:`DataError` for anything else that cannot be loaded.
    """
    import datasets

    path = Path(source).expanduser()
    if path.is_dir():
        if any((path / marker).exists() for marker in _SAVED_DATASET_MARKERS):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DataError(f"dataset {source!r} has no split {split!r}; it has {', '.join(loaded)} "
                                    "(set dataset_split)")
                return loaded[split]
            return loaded
        found = _split_files(path)
        if found is None:
            held = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
            raise DataError(f"dataset directory {source!r} holds no saved dataset (save_to_disk), parquet or JSONL "
                            f"files; it holds: {held}")
        kind, by_split = found
        if split not in by_split:
            raise DataError(f"dataset {source!r} has no split {split!r}; its {kind} files form the splits "
                            f"{', '.join(by_split)} (set dataset_split)")
        return _load_data_files(kind, sorted(by_split[split]), source)
    if path.is_file():
        kind = next((k for k, suffixes in _DATA_FILE_KINDS if path.suffix.lower() in suffixes), None)
        if kind is None:
            raise DataError(f"dataset file {source!r} is not parquet, JSONL or JSON; convert it or name a "
                            "save_to_disk directory")
        if split != "train":
            logger.warning("dataset_split %r ignored: %s is a single file, one split", split, source)
        return _load_data_files(kind, [str(path)], source)
    if _looks_like_path(source):
        raise DatasetNotFoundError(f"dataset path {source!r} not found (resolved to {path.absolute()})")
    try:
        return datasets.load_dataset(source, split=split)
    except Exception as error:  # the hub client raises many kinds; one clear line for all
        why = "the hub is unreachable" if _hub_unreachable(error) else "loading it from the hub failed"
        raise DataError(f"could not load dataset {source!r}: not a local file or directory and {why} "
                        f"({_first_line(error)})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    # Transparent pixels go on white, as the HF image processors do: a plain
    # convert("RGB") turns a transparent diagram background black.
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _decoded(image: Image.Image) -> Image.Image:
    """A new image, fully decoded, EXIF-upright, RGB; decoding errors become :class:`UnreadableImageError`."""
    try:
        image.load()
        return _to_rgb(ImageOps.exif_transpose(image))  # exif_transpose always returns a new image
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ... on bad data
        raise UnreadableImageError(f"unreadable image ({type(error).__name__}: {error})") from None


def resolve_image(value: Any, *, base_dir: Path | None = None) -> Image.Image:
    """An RGB PIL image from the value of an image field.

    ``value`` is a PIL image, a datasets image dict (``{"bytes": ..., "path":
    ...}``), a path (relative paths resolve against ``base_dir``), raw bytes,
    or a non-empty list of those (the first is used). Raises
    :class:`MissingImageError` or :class:`UnreadableImageError` (both
    ``ValueError``) with the reason.
    """
    if isinstance(value, (list, tuple)):
        if not value:
            raise MissingImageError("the image list is empty")
        value = value[0]
    if value is None:
        raise MissingImageError("no image")
    if isinstance(value, Mapping):
        if value.get("bytes"):
            value = value["bytes"]
        elif value.get("path"):
            value = value["path"]
        else:
            raise MissingImageError("the image holds neither bytes nor a path")
    if isinstance(value, Image.Image):
        return _decoded(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        buffer = io.BytesIO(bytes(value))
        try:
            opened = Image.open(buffer)
        except Exception as error:  # not an image format Pillow knows, or a truncated header
            # Pillow names the buffer by its repr, a memory address: name its size, so messages stay the same.
            detail = str(error).replace(repr(buffer), f"({len(buffer.getbuffer())} bytes)")
            raise UnreadableImageError(f"unreadable image bytes ({type(error).__name__}: {detail})") from None
        return _decoded(opened)
    if isinstance(value, (str, os.PathLike)):
        if not str(value).strip():
            raise MissingImageError("the image path is empty")
        path = Path(value).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.exists():
            looked = "" if str(path) == str(value) else f" (looked for {path})"
            raise MissingImageError(f"image file {str(value)!r} not found{looked}")
        if not path.is_file():
            raise UnreadableImageError(f"image path {str(value)!r} is not a file")
        try:
            with Image.open(path) as opened:
                return _decoded(opened)
        except UnreadableImageError:
            raise
        except Exception as error:  # not an image format Pillow knows, or no permission
            raise UnreadableImageError(f"unreadable image file {str(value)!r} ({type(error).__name__}: {error})") from None
    raise UnreadableImageError(f"cannot read an image from a {type(value).__name__}")


def row_image_values(value: Any, images_per_row: str = "all") -> list[Any]:
    """The undecoded images of a row's image field, in order: every item of a list (only the first with
    ``images_per_row="first"``), or the one value that is not a list. Raises :class:`MissingImageError` for an
    empty list."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise MissingImageError("the image list is empty")
    return values[:1] if images_per_row == "first" else values


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


class RowReader:
    """Raw rows of a ``datasets.Dataset`` by index, as python values with their media columns left undecoded.

    Iterating a Dataset decodes its Image columns, and one bad image then
    raises from inside ``datasets`` for the whole loop; reading raw arrow rows
    lets :func:`resolve_image` judge each image on its own. Json columns (mixed
    types in a JSONL column) still need decoding into python values. Pickles as
    the Dataset does: a memory-mapped one as its file paths.
    """

    def __init__(self, rows: datasets.Dataset):
        import datasets
        from datasets.features.features import require_decoding

        json_type = getattr(datasets, "Json", None)
        self.features = rows.features
        self.json_columns = frozenset(name for name, feature in self.features.items()
                                      if json_type and isinstance(feature, json_type))
        self.media_columns = frozenset(name for name, feature in self.features.items()
                                       if require_decoding(feature) and name not in self.json_columns)
        self._table = rows.with_format("arrow")

    def rows(self, start: int, stop: int) -> list[dict]:
        """Rows ``start`` to ``stop`` (exclusive), in order, read as one arrow slice."""
        from datasets.features.features import decode_nested_example

        return [{name: decode_nested_example(self.features[name], value) if name in self.json_columns else value
                 for name, value in raw.items()}
                for raw in self._table[start:stop].to_pylist()]


class LazyExamples(torch.utils.data.Dataset):
    """The kept rows of a dataset as :class:`Example`, each read and decoded only when asked for.

    Holds the Dataset (its Arrow table is memory-mapped, so the OS pages it in
    and out) and ``kept``, the source indices of the rows to use, in order;
    ``dataset[i]`` reads row ``kept[i]`` and decodes its images, and keeps
    nothing once it is returned, so memory does not grow with rows or images.
    The rows are taken as validated (:func:`vigos.validation.validate_rows`):
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
    ):
        self.kept = np.asarray(kept, dtype=np.int64)
        self.question_field = question_field
        self.image_field = image_field
        self.answer_field = answer_field
        self.images_per_row = images_per_row
        self.base_dir = base_dir
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
            images = [resolve_image(value, base_dir=self.base_dir)
                      for value in row_image_values(row.get(self.image_field), self.images_per_row)]
        except (MissingImageError, UnreadableImageError) as error:
            raise BadRowError(f"row {row_index} (field {self.image_field!r}): {error} — the row passed validation, "
                              "so the image changed since: fix it, or clear the validation cache to check the rows "
                              "again", row=row_index, field=self.image_field) from None
        meta = {name: value for name, value in row.items() if name not in self._not_meta and _jsonable(value)}
        return Example(question=question, answer=answer, image=images[0] if len(images) == 1 else images,
                       row=row_index, meta=meta)


def prepare_lazy_examples(
    rows: datasets.Dataset,
    *,
    question_field: str = "question",
    image_field: str = "image",
    answer_field: str = "answer",
    images_per_row: str = "all",
    base_dir: Path | None = None,
    **checks: Any,
) -> tuple[LazyExamples, DataReport]:
    """Validate ``rows`` (:func:`vigos.validation.validate_rows`, which takes ``checks``: ``bad_rows``,
    ``min_image_side``, ``max_prompt_length``, ``prompt_length``, ``max_images_per_row``, ``limit``,
    ``num_proc``, ``cache_dir``, ...) and give the kept rows as :class:`LazyExamples`."""
    from .validation import validate_rows  # deferred: vigos.validation imports this module

    kept, report = validate_rows(rows, question_field=question_field, image_field=image_field,
                                 answer_field=answer_field, images_per_row=images_per_row, base_dir=base_dir, **checks)
    return LazyExamples(rows, kept, question_field=question_field, image_field=image_field, answer_field=answer_field,
                        images_per_row=images_per_row, base_dir=base_dir), report


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


def load_examples(source: str, *, split: str = "train", lazy: bool = False,
                  **options: Any) -> tuple[list[Example] | LazyExamples, DataReport]:
    """:func:`load_rows` then :func:`prepare_examples`, or :func:`prepare_lazy_examples` when ``lazy``.

    ``base_dir`` (where relative image paths resolve) defaults to the
    directory of a JSONL/parquet file, or to the dataset directory itself.
    """
    rows = load_rows(source, split=split)
    path = Path(source).expanduser()
    options.setdefault("base_dir", path.parent if path.is_file() else path if path.is_dir() else None)
    return (prepare_lazy_examples if lazy else prepare_examples)(rows, **options)
