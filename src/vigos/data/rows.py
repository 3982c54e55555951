"""Load (image(s), question, reference answer) rows and turn them into examples, read when needed.

Sources: a hub id, a directory written by ``save_to_disk``, a parquet file or a
directory of parquet files, or a JSONL/JSON file whose image field holds paths
relative to it (paths that lead outside its folder are refused unless
``allow_image_paths_outside``). A field mapping names the question, image(s)
and answer columns. One pass over the rows (:mod:`vigos.data.validation`) finds the
bad ones (text that is not UTF-8, no image, an image path outside the folder,
unreadable, tiny or too many images, empty question or answer, prompt too
long), to skip or to stop at per ``bad_rows``, and keeps only the index of the
good ones; :class:`LazyExamples` reads and decodes a row when a
batch asks for it. Nothing here knows about models or losses: the prompt
length comes in as a callable.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

# Image decoding lives in vigos.data.images; the names stay importable from here, where callers have found them.
from vigos.data.utf8 import NotUtf8, NotUtf8Error, arrow_rows, marked_copy, not_utf8
from vigos.errors import DataError

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

BAD_ROW_MODES = ("skip", "error")
IMAGES_PER_ROW = ("all", "first")
SKIP_REASONS = (
    "text not UTF-8",
    "missing image",
    "unreadable image",
    "image outside folder",
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


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A local dataset path that does not exist."""


class BadRowError(DataError):
    """A row that cannot be used; the message names the row, the field and what to do."""

    def __init__(self, message: str, *, row: int | None = None, field: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.row = row
        self.field = field
        self.reason = reason


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


def _parquet_read_options() -> dict[str, Any]:
    """``load_dataset`` options that make the parquet builder read one row group at a time.

    pyarrow's default ``pre_buffer=True`` fetches every row group of a file
    the builder asks for at once: with images embedded that holds a whole
    shard (about 400 MB for a hub shard of 2,000 one-megapixel rows) in
    memory while the shard is converted to Arrow.
    """
    import pyarrow.dataset

    return {"fragment_scan_options": pyarrow.dataset.ParquetFragmentScanOptions(pre_buffer=False)}


def _load_data_files(kind: str, files: list[str], source: str) -> datasets.Dataset:
    import datasets
    import pyarrow

    options = _parquet_read_options() if kind == "parquet" else {}
    try:
        rows = datasets.load_dataset(kind, data_files=files, split="train", **options)
    except Exception as error:  # datasets wraps parse errors in a generic builder error; name the file and line
        where = next(
            (f"{Path(f).name}: {bad}" for f in files if kind == "json" and (bad := _bad_json_line(Path(f)))), None
        )
        copies = _utf8_copies(files, source) if kind == "json" and where is None else None
        if copies is None:
            raise DataError(f"could not read dataset {source!r}: {where or _first_line(error)}") from None
    else:
        if kind != "json":
            return rows
        try:
            rows.data.table.validate(full=True)  # every string UTF-8?
            return rows
        except pyarrow.ArrowInvalid:
            copies = _utf8_copies(files, source)
            if copies is None:
                return rows
    try:
        return datasets.load_dataset("json", data_files=copies, split="train")
    except Exception as error:  # the copies are UTF-8 JSON lines, as the files were: no row's fault
        raise DataError(
            f"could not read dataset {source!r} (read from copies with the text that is not UTF-8 "
            f"marked): {_first_line(error)}"
        ) from None


def _utf8_copies(files: list[str], source: str) -> list[str] | None:
    """The files with each one holding text that is not UTF-8 replaced by its marked copy
    (:func:`vigos.data.utf8.marked_copy`); None when every file is UTF-8."""
    import datasets

    cache = Path(datasets.config.HF_DATASETS_CACHE) / "vigos-utf8"
    try:
        copies = [marked_copy(Path(f), cache) for f in files]
    except NotUtf8Error as error:
        raise DataError(f"could not read dataset {source!r}: {error}") from None
    if not any(copies):
        return None
    for copy, original in zip(copies, files):
        if copy is not None:
            logger.warning(
                "data: %s holds text that is not UTF-8; reading it from %s, where that text is marked, "
                "so its rows are bad rows",
                original,
                copy,
            )
    return [str(copy or original) for copy, original in zip(copies, files)]


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
    ``.jsonl``/``.json`` file, or else a hub id. A JSONL file with text that
    is not UTF-8 is read from a copy in which that text is marked
    (:mod:`vigos.data.utf8`), so that its rows come out as bad rows, with their line.
    Raises :class:`DatasetNotFoundError` for a local path that does not exist
    and :class:`DataError` for anything else that cannot be loaded.
    """
    import datasets

    path = Path(source).expanduser()
    if path.is_dir():
        if any((path / marker).exists() for marker in _SAVED_DATASET_MARKERS):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DataError(
                        f"dataset {source!r} has no split {split!r}; it has {', '.join(loaded)} (set dataset_split)"
                    )
                return loaded[split]
            return loaded
        found = _split_files(path)
        if found is None:
            held = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
            raise DataError(
                f"dataset directory {source!r} holds no saved dataset (save_to_disk), parquet or JSONL "
                f"files; it holds: {held}"
            )
        kind, by_split = found
        if split not in by_split:
            raise DataError(
                f"dataset {source!r} has no split {split!r}; its {kind} files form the splits "
                f"{', '.join(by_split)} (set dataset_split)"
            )
        return _load_data_files(kind, sorted(by_split[split]), source)
    if path.is_file():
        kind = next((k for k, suffixes in _DATA_FILE_KINDS if path.suffix.lower() in suffixes), None)
        if kind is None:
            raise DataError(
                f"dataset file {source!r} is not parquet, JSONL or JSON; convert it or name a save_to_disk directory"
            )
        if split != "train":
            logger.warning("dataset_split %r ignored: %s is a single file, one split", split, source)
        return _load_data_files(kind, [str(path)], source)
    if _looks_like_path(source):
        raise DatasetNotFoundError(f"dataset path {source!r} not found (resolved to {path.absolute()})")
    try:
        from datasets.packaged_modules.parquet.parquet import ParquetConfig

        builder = datasets.load_dataset_builder(source)
        options = _parquet_read_options() if isinstance(builder.config, ParquetConfig) else {}
        return datasets.load_dataset(source, split=split, **options)
    except Exception as error:  # the hub client raises many kinds; one clear line for all
        why = "the hub is unreachable" if _hub_unreachable(error) else "loading it from the hub failed"
        raise DataError(
            f"could not load dataset {source!r}: not a local file or directory and {why} ({_first_line(error)})"
        ) from None


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
    types in a JSONL column) still need decoding into python values. A text
    value whose bytes are not UTF-8 comes as :class:`NotUtf8`, for the checks
    to make its row a bad row. Pickles as the Dataset does: a memory-mapped one
    as its file paths.
    """

    def __init__(self, rows: datasets.Dataset):
        import datasets
        from datasets.features.features import require_decoding

        json_type = getattr(datasets, "Json", None)
        self.features = rows.features
        self.json_columns = frozenset(
            name for name, feature in self.features.items() if json_type and isinstance(feature, json_type)
        )
        self.media_columns = frozenset(
            name
            for name, feature in self.features.items()
            if require_decoding(feature) and name not in self.json_columns
        )
        self._table = rows.with_format("arrow")

    def rows(self, start: int, stop: int) -> list[dict]:
        """Rows ``start`` to ``stop`` (exclusive), in order, read as one arrow slice."""
        return [
            {name: self._value(name, value) for name, value in raw.items()}
            for raw in arrow_rows(self._table[start:stop])
        ]

    def _value(self, name: str, value: Any) -> Any:
        from datasets.features.features import decode_nested_example

        if isinstance(value, NotUtf8):
            return value
        if name in self.json_columns:
            value = decode_nested_example(self.features[name], value)
        return not_utf8(value)
