"""Reading a benchmark's local copy: find its files, read its rows, decode its images.

A local copy is what a hub snapshot or an unpacked release leaves on disk:
parquet shards written by ``datasets`` (images as ``{"bytes", "path"}``
structs or raw bytes), a directory saved with ``Dataset.save_to_disk``, or
JSON/JSONL rows whose image fields are file paths. Images decode as training
data's do (:mod:`vigos.data.images`: 8-bit RGB, EXIF-upright, 16-bit scaled), and an
image path must resolve inside the benchmark's folder unless it allows paths
outside. Every failure (a missing or undecodable image, a decompression bomb,
text that is not UTF-8) raises :class:`BenchmarkDataError` with a message that
names the file, row and field at fault and repeats the layout the benchmark
expects: evaluation has no rows to skip, a benchmark is scored whole.
:class:`Row` gives that for field access, and normalises options and answers to
option letters.
"""

from __future__ import annotations

import ast
import base64
import binascii
import json
import re
import string
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from vigos.data.images import UnreadableImageError, decode_image, decode_image_bytes, is_inside
from vigos.data.utf8 import NotUtf8, arrow_rows

SAVED_DATASET_MARKERS = ("dataset_dict.json", "state.json")
TABLE_SUFFIXES = (".parquet", ".jsonl", ".json")
# A pasted-in base64 image is long; a relative file name is not.
_MIN_BASE64_CHARS = 64
_TILE_GAP = 8
_LETTER = re.compile(r"\(?([A-Za-z])\)?\.?")


class BenchmarkDataError(ValueError):
    """A benchmark's local copy is missing, incomplete or malformed."""


def is_saved_dataset(path: Path) -> bool:
    """True when ``path`` is a directory written by ``save_to_disk``."""
    return path.is_dir() and any((path / marker).is_file() for marker in SAVED_DATASET_MARKERS)


def _listing(root: Path, limit: int = 12) -> str:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    if not entries:
        return "(empty)"
    shown = ", ".join(entries[:limit])
    return shown + (f", ... ({len(entries) - limit} more)" if len(entries) > limit else "")


def find_files(root: Path, patterns: Sequence[str], *, what: str, layout: str) -> list[Path]:
    """The files (or saved-dataset directories) under ``root`` matching the first pattern that matches.

    ``root`` itself counts when it is a saved dataset. Patterns are globs
    relative to ``root`` (or absolute) and are tried in order, so a benchmark
    can accept the layouts of several releases. Files found are not resolved:
    a hub snapshot in the HF cache is a folder of symlinks into its blobs.
    """
    if not root.is_dir():
        raise BenchmarkDataError(f"{what}: directory {root} does not exist.\nExpected layout: {layout}")
    if is_saved_dataset(root):
        return [root]
    for pattern in patterns:
        hits = sorted(p for p in _glob(root, pattern) if p.suffix in TABLE_SUFFIXES or is_saved_dataset(p))
        if hits:
            return hits
    raise BenchmarkDataError(
        f"{what}: no file matching {' or '.join(repr(p) for p in patterns)} under {root} "
        f"(it holds: {_listing(root)}).\nExpected layout: {layout}"
    )


def _glob(root: Path, pattern: str) -> Iterator[Path]:
    # Path.glob refuses an absolute pattern; a benchmark YAML with allow_paths_outside may give one.
    if Path(pattern).is_absolute():
        anchor = Path(Path(pattern).anchor)
        return anchor.glob(str(Path(pattern).relative_to(anchor)))
    return root.glob(pattern)


def read_rows(paths: Sequence[Path], *, split: str, layout: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, row)`` for every row of every path, lazily and in order.

    ``where`` names the file and row index for error messages. ``split``
    picks the split of a saved ``DatasetDict`` (a dict with one split is used
    whatever its name).
    """
    for path in paths:
        if path.is_dir():
            yield from _read_saved(path, split=split, layout=layout)
        elif path.suffix == ".parquet":
            yield from _read_parquet(path)
        elif path.suffix == ".jsonl":
            yield from _read_jsonl(path)
        elif path.suffix == ".json":
            yield from _read_json(path)
        else:
            raise BenchmarkDataError(f"{path}: unsupported file type {path.suffix!r}; use parquet, jsonl or json.")


def _read_parquet(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several unrelated types for a bad file
        raise BenchmarkDataError(f"{path}: not a readable parquet file ({error}).") from error
    index = 0
    # Small batches so that a `limit` stops reading early on multi-GB shards.
    for batch in parquet.iter_batches(batch_size=32):
        for row in arrow_rows(batch):
            yield f"{path.name} row {index}", row
            index += 1


def _not_utf8(path: Path, line: int, raw: bytes, error: UnicodeDecodeError) -> BenchmarkDataError:
    around = raw[max(0, error.start - 20) : error.end + 20]
    return BenchmarkDataError(
        f"{path.name} line {line}: bytes that are not UTF-8 ({around!r}); save the file as UTF-8."
    )


def _read_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise _not_utf8(path, line_number, raw, error) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise BenchmarkDataError(f"{path.name} line {line_number}: invalid JSON ({error.msg}).") from error
            if not isinstance(row, dict):
                raise BenchmarkDataError(
                    f"{path.name} line {line_number}: expected a JSON object, got {type(row).__name__}."
                )
            yield f"{path.name} line {line_number}", row


def _read_json(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise _not_utf8(path, raw.count(b"\n", 0, error.start) + 1, raw, error) from None
    except json.JSONDecodeError as error:
        raise BenchmarkDataError(f"{path.name}: invalid JSON ({error.msg} at line {error.lineno}).") from error
    # Releases use either a list of rows or a mapping from row id to row (MM-Vet).
    if isinstance(data, list):
        keyed = [(str(i), row) for i, row in enumerate(data)]
    elif isinstance(data, dict):
        keyed = [(str(key), row) for key, row in data.items()]
    else:
        raise BenchmarkDataError(f"{path.name}: expected a list of rows or a mapping of id to row.")
    for key, row in keyed:
        if not isinstance(row, dict):
            raise BenchmarkDataError(f"{path.name} entry {key}: expected a JSON object, got {type(row).__name__}.")
        yield f"{path.name} entry {key}", {"__key__": key, **row}


def _read_saved(path: Path, *, split: str, layout: str) -> Iterator[tuple[str, dict[str, Any]]]:
    from datasets import DatasetDict, load_from_disk

    from vigos.data.rows import RowReader  # deferred: it brings torch

    data = load_from_disk(str(path))
    if isinstance(data, DatasetDict):
        if split in data:
            data = data[split]
        elif len(data) == 1:
            data = next(iter(data.values()))
        else:
            raise BenchmarkDataError(
                f"{path}: saved DatasetDict has no split {split!r} (it has {sorted(data)}).\nExpected layout: {layout}"
            )
    # Raw rows: iterating the Dataset would decode its images inside datasets, where a bad one (a decompression
    # bomb) raises with no row named; to_image decodes each and names its row.
    reader = RowReader(data)
    for start in range(0, len(data), 32):
        for offset, row in enumerate(reader.rows(start, min(start + 32, len(data)))):
            yield f"{path.name} row {start + offset}", row


def to_image(
    value: Any, *, base_dir: Path, where: str, field: str, root: Path | None = None, allow_outside: bool = False
) -> Image.Image:
    """Decode one image field value into an 8-bit RGB ``PIL.Image`` (:mod:`vigos.data.images`).

    Accepts a PIL image, a ``{"bytes", "path"}`` struct (the ``datasets``
    Image feature), raw encoded bytes, a file path (absolute or relative to
    ``base_dir``) or a base64 string. A path must resolve, symlinks followed,
    inside ``root`` (default ``base_dir``) unless ``allow_outside``.
    """
    folder = root if root is not None else base_dir
    if isinstance(value, Image.Image):
        try:
            return decode_image(value)
        except UnreadableImageError as error:
            raise BenchmarkDataError(
                f"{where}: image field {field!r} holds an image that cannot be decoded ({error})."
            ) from None
    if isinstance(value, dict):
        if value.get("bytes"):
            return _decode_bytes(value["bytes"], where=where, field=field)
        if value.get("path"):
            return _open_path(
                value["path"], base_dir=base_dir, where=where, field=field, root=folder, allow_outside=allow_outside
            )
        raise BenchmarkDataError(f"{where}: image field {field!r} holds neither bytes nor a path.")
    if isinstance(value, bytes | bytearray | memoryview):
        return _decode_bytes(bytes(value), where=where, field=field)
    if isinstance(value, str) and value.strip():
        candidate = Path(value) if Path(value).is_absolute() else base_dir / value
        if candidate.is_file() or len(value) < _MIN_BASE64_CHARS:
            return _open_path(
                value, base_dir=base_dir, where=where, field=field, root=folder, allow_outside=allow_outside
            )
        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error as error:
            raise BenchmarkDataError(
                f"{where}: image field {field!r}: no file {candidate} exists and the value is not base64 image data."
            ) from error
        return _decode_bytes(raw, where=where, field=field)
    raise BenchmarkDataError(f"{where}: image field {field!r} is empty or of unsupported type {type(value).__name__}.")


def _decode_bytes(raw: bytes, *, where: str, field: str) -> Image.Image:
    try:
        return decode_image_bytes(raw)
    except UnreadableImageError as error:  # not an image, truncated, or a decompression bomb
        raise BenchmarkDataError(
            f"{where}: image field {field!r} holds bytes that are not an image Pillow can decode ({error})."
        ) from None


def _open_path(value: str, *, base_dir: Path, where: str, field: str, root: Path, allow_outside: bool) -> Image.Image:
    path = Path(value) if Path(value).is_absolute() else base_dir / value
    if not allow_outside:
        try:
            inside = is_inside(path, root)
        except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop (Python 3.11, 3.12)
            raise BenchmarkDataError(
                f"{where}: image path {value!r} (field {field!r}) cannot be resolved ({error})."
            ) from None
        if not inside:
            # Checked before the file is looked up, so a row cannot even probe which files exist elsewhere.
            raise BenchmarkDataError(
                f"{where}: image path {value!r} (field {field!r}) resolves to {path.resolve()}, outside the benchmark "
                f"folder {root.resolve()}; keep the images under it "
                "(a benchmark YAML may set allow_paths_outside: true)."
            )
    if not path.is_file():
        raise BenchmarkDataError(f"{where}: image file {path} (field {field!r}) does not exist.")
    try:
        return decode_image_bytes(path.read_bytes())
    except (UnreadableImageError, OSError) as error:  # OSError: no permission
        raise BenchmarkDataError(f"{where}: {path} (field {field!r}) is not a readable image ({error}).") from None


def item_images(images: Sequence[Image.Image]) -> Image.Image | list[Image.Image]:
    """An item's images as the model takes them: the image itself when there is one, else all of them in
    order, each its own image (tiling them is `tile_images`, an evaluation option)."""
    if not images:
        raise ValueError("an item needs at least one image")
    return images[0] if len(images) == 1 else list(images)


def tile_images(images: Sequence[Image.Image]) -> Image.Image:
    """Place several images left to right at a common height on a white canvas: an item's images for a
    model that takes one image (``vigos eval --tile-images``)."""
    if not images:
        raise ValueError("tile_images needs at least one image")
    if len(images) == 1:
        return images[0]
    height = max(image.height for image in images)
    scaled = [
        image if image.height == height else image.resize((max(1, round(image.width * height / image.height)), height))
        for image in images
    ]
    width = sum(image.width for image in scaled) + _TILE_GAP * (len(scaled) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    x = 0
    for image in scaled:
        canvas.paste(image, (x, 0))
        x += image.width + _TILE_GAP
    return canvas


def option_letter(index: int) -> str:
    """The letter of option ``index`` (0 -> ``A``)."""
    if not 0 <= index < len(string.ascii_uppercase):
        raise ValueError(f"option index {index} has no letter (at most {len(string.ascii_uppercase)} options)")
    return string.ascii_uppercase[index]


def answer_to_letter(answer: Any, options: Sequence[str], answer_format: str = "auto") -> str | None:
    """The option letter that ``answer`` designates, or None.

    ``letter`` accepts ``B``, ``(B)`` or ``b.``; ``text`` matches an option's
    text; ``index`` takes a 0-based position. ``auto`` tries letter, then
    text, then (for integers only) index.
    """
    text = str(answer).strip()
    if answer_format in ("auto", "letter") and (match := _LETTER.fullmatch(text)):
        index = ord(match.group(1).upper()) - ord("A")
        if index < len(options):
            return option_letter(index)
    if answer_format in ("auto", "text"):
        for index, option in enumerate(options):
            if option.strip() == text:
                return option_letter(index)
    is_index = isinstance(answer, int) and not isinstance(answer, bool)
    if (answer_format == "index" or (answer_format == "auto" and is_index)) and text.lstrip("-").isdigit():
        index = int(text)
        if 0 <= index < len(options):
            return option_letter(index)
    return None


def bare_letter(answer: str) -> str:
    """``"(B)"`` or ``"b"`` -> ``"B"``; anything else unchanged (stripped)."""
    match = _LETTER.fullmatch(answer.strip())
    return match.group(1).upper() if match else answer.strip()


class Row:
    """One source row whose field access fails naming the benchmark, the row, the field and the expected layout."""

    def __init__(
        self,
        where: str,
        data: dict[str, Any],
        *,
        base_dir: Path,
        benchmark: str,
        layout: str,
        root: Path | None = None,
        allow_outside: bool = False,
    ) -> None:
        self.where = where
        self.data = data
        self.base_dir = base_dir
        self.benchmark = benchmark
        self.layout = layout
        self.root = root  # image paths must stay inside it (default base_dir) unless allow_outside
        self.allow_outside = allow_outside

    def fail(self, problem: str) -> BenchmarkDataError:
        """An error about this row (raise it)."""
        return BenchmarkDataError(f"{self.benchmark}: {self.where} {problem}.\nExpected layout: {self.layout}")

    def get(self, name: str, default: Any = None) -> Any:
        """The field's value, or ``default`` when it is absent or null; text that is not UTF-8 fails."""
        value = self.data.get(name)
        if isinstance(value, NotUtf8):
            raise self.fail(
                f"has field {name!r} holding bytes that are not UTF-8 ({value.where}); save the file as UTF-8"
            )
        return default if value is None else value

    def require(self, name: str) -> Any:
        """The field's value; absent or null fails, as does text that is not UTF-8."""
        if self.get(name) is None:
            raise self.fail(f"is missing field {name!r} (fields present: {self._present()})")
        return self.data[name]

    def text(self, name: str) -> str:
        """A required field as stripped text."""
        return str(self.require(name)).strip()

    def image(self, *names: str) -> Image.Image:
        """The image in the first of ``names`` that holds one."""
        for name in names:
            if self.get(name) is not None:
                return self._image(self.data[name], name)
        raise self.fail(
            f"is missing image field {' or '.join(repr(n) for n in names)} (fields present: {self._present()})"
        )

    def images(self, name: str) -> list[Image.Image]:
        """A required field holding a list of images (or a single one); a list written as text, ``"['a.png',
        'b.png']"`` (a JSON or Python list of paths, as some copies store it), is read as the list."""
        value = self.require(name)
        if isinstance(value, str) and value.strip().startswith("["):
            try:
                value = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError) as error:
                raise self.fail(f"has field {name!r} that is not a list of images: {value[:80]!r}") from error
        if not isinstance(value, list | tuple):
            return [self.image(name)]
        images = [self._image(v, f"{name}[{i}]") for i, v in enumerate(value)]
        if not images:
            raise self.fail(f"has an empty image list in field {name!r}")
        return images

    def options(self, name: str = "options") -> list[str]:
        """A required field of options: a list, or the string repr of one (MMMU's ``"['a', 'b']"``)."""
        value = self.require(name)
        if isinstance(value, str):
            if not value.strip():
                return []
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError) as error:
                raise self.fail(f"has field {name!r} that is not a list of options: {value[:80]!r}") from error
        if not isinstance(value, list | tuple):
            raise self.fail(f"has field {name!r} of type {type(value).__name__}, expected a list of options")
        return [str(option).strip() for option in value]

    def choice_answer(self, answer: Any, options: Sequence[str], answer_format: str = "auto") -> tuple[str, list[str]]:
        """(letter, every accepted letter) for a multiple-choice answer.

        A few MMMU answers list several correct letters as ``"['A', 'B']"``;
        the first is the answer and all are accepted.
        """
        candidates = [answer]
        if isinstance(answer, str) and answer.strip().startswith("["):
            try:
                candidates = list(ast.literal_eval(answer.strip()))
            except (ValueError, SyntaxError):
                candidates = [answer]
        letters = [answer_to_letter(candidate, options, answer_format) for candidate in candidates]
        resolved = [letter for letter in letters if letter is not None]
        if not resolved or len(resolved) != len(letters):
            last = option_letter(len(options) - 1) if options else "?"
            raise self.fail(
                f"has answer {answer!r} that is neither an option letter A-{last} nor the text of one of its "
                f"{len(options)} options (answer_format={answer_format!r})"
            )
        return resolved[0], resolved

    def _image(self, value: Any, field: str) -> Image.Image:
        return to_image(
            value,
            base_dir=self.base_dir,
            where=f"{self.benchmark}: {self.where}",
            field=field,
            root=self.root,
            allow_outside=self.allow_outside,
        )

    def _present(self) -> str:
        return ", ".join(sorted(key for key in self.data if not key.startswith("__")))
