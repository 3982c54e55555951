"""Load (image, question, reference answer) rows and turn them into validated examples.

Sources: a hub id, a directory written by ``save_to_disk``, a parquet file or a
directory of parquet files, or a JSONL/JSON file whose image field holds paths
relative to it. A field mapping names the question, image and answer columns.
Each bad row (no image, unreadable or tiny image, empty question or answer,
prompt too long) is skipped and counted, or stops the run with a message naming
the row, per ``bad_rows``. Nothing here knows about models or losses: the
prompt length comes in as a callable.
"""

from __future__ import annotations

import difflib
import io
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from PIL import Image, ImageOps

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger("vigos.data")

BAD_ROW_MODES = ("skip", "error")
SKIP_REASONS = (
    "missing image",
    "unreadable image",
    "tiny image",
    "empty question",
    "question not text",
    "empty answer",
    "answer not text",
    "prompt too long",
    "prompt failed",
)
_SAVED_DATASET_MARKERS = ("dataset_dict.json", "state.json")
_DATA_FILE_KINDS = (("parquet", (".parquet",)), ("json", (".jsonl", ".json")))
_SHOWN_SKIPS = 5
_PROGRESS_EVERY = 5000
_BATCH_ROWS = 256


@dataclass
class Example:
    """One (image, question, reference answer) example.

    ``image`` is RGB; ``row`` is the row's index in the source dataset (for
    messages); ``meta`` holds the row's other fields that are JSON-able.
    """

    question: str
    answer: str
    image: Image.Image
    row: int = 0
    meta: dict = field(default_factory=dict)


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
    than one image (the first is used).
    """

    total: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples_of_skips: list[str] = field(default_factory=list)
    several_images: int = 0
    stopped_at_limit: int | None = None

    def summary(self) -> str:
        """One line for the log."""
        line = f"{self.kept} of {self.total} rows kept"
        if self.skipped:
            reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items()))
            line += f"; skipped {sum(self.skipped.values())} ({reasons})"
        if self.several_images:
            line += f"; {self.several_images} with several images (the first is used)"
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
        try:
            opened = Image.open(io.BytesIO(bytes(value)))
        except Exception as error:  # not an image format Pillow knows, or a truncated header
            raise UnreadableImageError(f"unreadable image bytes ({type(error).__name__}: {error})") from None
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


@dataclass
class _Bad:
    reason: str
    field: str
    message: str
    fix: str = "fix the row"


def _text(value: Any, *, field_name: str, what: str) -> str | _Bad:
    """The stripped text of a question or answer; numbers become their ``str``."""
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return _Bad(f"empty {what}", field_name, f"the {what} is empty")
    if not isinstance(value, str):
        return _Bad(f"{what} not text", field_name, f"the {what} is a {type(value).__name__}, not text")
    return value.strip()


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _check_columns(rows: datasets.Dataset, fields: dict[str, str]) -> None:
    columns = list(rows.column_names)
    for option, name in fields.items():
        if name not in columns:
            close = difflib.get_close_matches(name, columns, n=1)
            hint = f" — did you mean {close[0]!r}?" if close else ""
            raise DataError(f"the dataset has no column {name!r} (set {option}); its columns are: "
                            f"{', '.join(columns)}{hint}")


def _row_decoder(rows: datasets.Dataset) -> tuple[Callable[[dict], dict], set[str]]:
    """A function turning a raw arrow row into python values, and the media columns it leaves raw.

    Iterating a Dataset decodes its Image columns, and one bad image then
    raises from inside ``datasets`` for the whole loop; reading raw rows lets
    :func:`resolve_image` judge each image on its own. Json columns (mixed
    types in a JSONL column) still need decoding into python values.
    """
    import datasets
    from datasets.features.features import decode_nested_example, require_decoding

    json_type = getattr(datasets, "Json", None)
    features = rows.features
    json_columns = {name for name, feature in features.items() if json_type and isinstance(feature, json_type)}
    media = {name for name, feature in features.items() if require_decoding(feature) and name not in json_columns}

    def decode(raw: dict) -> dict:
        return {name: decode_nested_example(features[name], value) if name in json_columns else value
                for name, value in raw.items()}

    return decode, media


def _raw_rows(rows: datasets.Dataset) -> Iterator[tuple[int, dict]]:
    """(index, raw row) in order, read in arrow batches so no column is decoded."""
    table = rows.with_format("arrow")
    for start in range(0, len(rows), _BATCH_ROWS):
        yield from enumerate(table[start:start + _BATCH_ROWS].to_pylist(), start=start)


def _check_row(
    row: dict,
    *,
    question_field: str,
    image_field: str,
    answer_field: str,
    min_image_side: int,
    max_prompt_length: int | None,
    prompt_length: Callable[[str, Image.Image], int] | None,
    base_dir: Path | None,
    not_meta: set[str],
) -> Example | _Bad:
    """The example of a row, or why it is bad. Text first: it is cheap, decoding an image is not."""
    question = _text(row.get(question_field), field_name=question_field, what="question")
    if isinstance(question, _Bad):
        return question
    answer = _text(row.get(answer_field), field_name=answer_field, what="answer")
    if isinstance(answer, _Bad):
        return answer
    try:
        image = resolve_image(row.get(image_field), base_dir=base_dir)
    except MissingImageError as error:
        return _Bad("missing image", image_field, str(error))
    except UnreadableImageError as error:
        return _Bad("unreadable image", image_field, str(error))
    if min(image.size) < min_image_side:
        return _Bad("tiny image", image_field,
                    f"the image is {image.width}x{image.height}, under min_image_side={min_image_side}",
                    "fix the row, lower min_image_side")
    if max_prompt_length is not None and prompt_length is not None:
        try:
            length = prompt_length(question, image)
        except Exception as error:  # e.g. a processor refusing an extreme aspect ratio: a row problem, not a crash
            return _Bad("prompt failed", image_field, f"building the prompt failed ({_first_line(error)})")
        if length > max_prompt_length:
            return _Bad("prompt too long", question_field,
                        f"the prompt is {length} tokens, over max_prompt_length={max_prompt_length}",
                        "fix the row, raise max_prompt_length")
    meta = {name: value for name, value in row.items() if name not in not_meta and _jsonable(value)}
    return Example(question=question, answer=answer, image=image, meta=meta)


def prepare_examples(
    rows: datasets.Dataset,
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
    """Validate ``rows`` into examples, in row order.

    A field missing from the dataset raises :class:`DataError` at once,
    listing the columns. A bad row (reasons in ``SKIP_REASONS``) is skipped and
    counted when ``bad_rows="skip"``, or raises :class:`BadRowError` naming the
    row, the field and the fix when ``bad_rows="error"``. The prompt length is
    checked only when both ``max_prompt_length`` and ``prompt_length`` (question,
    image → tokens) are given. ``limit`` stops after that many kept examples.
    Logs :meth:`DataReport.summary` on the ``vigos.data`` logger.
    """
    import datasets

    if bad_rows not in BAD_ROW_MODES:
        raise DataError(f"bad_rows must be one of {', '.join(BAD_ROW_MODES)}; got {bad_rows!r}")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1 (or None for all rows); got {limit}")
    if isinstance(rows, datasets.DatasetDict):
        raise DataError(f"got a DatasetDict with splits {', '.join(rows)}; pass one split (set dataset_split)")
    if not isinstance(rows, datasets.Dataset):
        raise DataError(f"rows must be a datasets.Dataset (see load_rows); got a {type(rows).__name__}")
    _check_columns(rows, {"question_field": question_field, "image_field": image_field, "answer_field": answer_field})
    decode, media = _row_decoder(rows)
    not_meta = {question_field, image_field, answer_field} | media
    report = DataReport()
    skipped: Counter[str] = Counter()
    examples: list[Example] = []
    for index, raw in _raw_rows(rows):
        if limit is not None and len(examples) >= limit:
            report.stopped_at_limit = limit
            break
        report.total += 1
        row = decode(raw)
        found = _check_row(row, question_field=question_field, image_field=image_field, answer_field=answer_field,
                           min_image_side=min_image_side, max_prompt_length=max_prompt_length,
                           prompt_length=prompt_length, base_dir=base_dir, not_meta=not_meta)
        if isinstance(found, Example):
            found.row = index
            images = row[image_field]
            report.several_images += isinstance(images, list) and len(images) > 1
            examples.append(found)
        else:
            text = f"row {index} (field {found.field!r}): {found.message}"
            if bad_rows == "error":
                raise BadRowError(f"{text} — {found.fix} or set bad_rows: skip",
                                  row=index, field=found.field, reason=found.reason)
            skipped[found.reason] += 1
            if len(report.examples_of_skips) < _SHOWN_SKIPS:
                report.examples_of_skips.append(text)
        if report.total % _PROGRESS_EVERY == 0:
            logger.info("checked %d of %d rows (%d kept)", report.total, len(rows), len(examples))
    report.kept = len(examples)
    report.skipped = dict(skipped)
    level = logging.WARNING if skipped else logging.INFO
    logger.log(level, "data: %s", report.summary())
    for text in report.examples_of_skips:
        logger.log(level, "skipped %s", text)
    return examples, report


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
    rollout, from the raw question, answer and PIL image, so there is nothing
    to stack here; torch's default collator would also fail on PIL images.
    """
    return list(batch)


def load_examples(source: str, *, split: str = "train", **prepare_kwargs: Any) -> tuple[list[Example], DataReport]:
    """:func:`load_rows` then :func:`prepare_examples`.

    ``base_dir`` (where relative image paths resolve) defaults to the
    directory of a JSONL/parquet file, or to the dataset directory itself.
    """
    rows = load_rows(source, split=split)
    path = Path(source).expanduser()
    prepare_kwargs.setdefault("base_dir", path.parent if path.is_file() else path if path.is_dir() else None)
    return prepare_examples(rows, **prepare_kwargs)
