"""Rows whose text is not UTF-8: find them in JSONL files, mark them in a copy, and know them when a row is read.

Bytes that are not UTF-8 in a JSONL line are kept by pyarrow in a string
column, which then fails when the row is read, and they fail the whole load
when the file also mixes types in a column (``datasets`` then parses it in
Python). Such a file is read from a copy of it in which each such text value
holds a mark and where the bytes are: the row keeps its place, so row numbers
stay the file's, and :func:`arrow_rows` gives the value as :class:`NotUtf8`,
which the row checks make a bad row to skip or stop at. A parquet file whose
writer did not check its strings reaches :func:`arrow_rows` as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A NUL starts no text a person wrote.
_MARK = "\x00vigos: not UTF-8: "
_COPY_VERSION = 1  # bump when what a copy holds changes, so older copies stop matching


@dataclass(frozen=True)
class NotUtf8:
    """A text value whose bytes are not UTF-8; ``where`` names the bytes (and the line, when known)."""

    where: str


class NotUtf8Error(ValueError):
    """A file whose bytes that are not UTF-8 cannot be confined to the rows holding them."""


def _bytes_around(raw: bytes, error: UnicodeDecodeError) -> str:
    return repr(raw[max(0, error.start - 20) : error.end + 20])


def _is_utf8(text: str) -> bool:
    # Text decoded with "surrogateescape" holds each byte that is not UTF-8 as a lone surrogate.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _marked(value: Any, mark: str) -> Any:
    """``value`` with every string in it that is not UTF-8 replaced by ``mark``."""
    if isinstance(value, str):
        return value if _is_utf8(value) else mark
    if isinstance(value, list):
        return [_marked(item, mark) for item in value]
    if isinstance(value, dict):
        return {key: _marked(item, mark) for key, item in value.items()}
    return value


def _mark_in(value: Any) -> str | None:
    """Where the bytes are, when ``value`` holds a string marked by :func:`_marked`; else None."""
    if isinstance(value, str):
        return value[len(_MARK) :] if value.startswith(_MARK) else None
    items = value if isinstance(value, list) else value.values() if isinstance(value, dict) else ()
    return next((where for item in items if (where := _mark_in(item)) is not None), None)


def marked_copy(path: Path, cache_dir: Path) -> Path | None:
    """A copy of JSONL file ``path`` in which each text value that is not UTF-8 is marked, made once per content
    under ``cache_dir``; None when every line of ``path`` is UTF-8.

    Raises :class:`NotUtf8Error`, naming the line, for a JSON list (one
    document: no row can be set apart) or bytes outside a text value (a key).
    """
    digest = hashlib.sha256(f"{_COPY_VERSION}\0{path.name}\0".encode())
    bad: dict[int, str] = {}  # line number -> the bytes around the first that is not UTF-8
    first = b""
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            digest.update(line)
            first = first or line.strip()
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                bad[number] = _bytes_around(line, error)
    if not bad:
        return None
    if first.startswith(b"["):
        number, around = next(iter(bad.items()))
        raise NotUtf8Error(
            f"line {number} of {path.name} holds bytes that are not UTF-8 ({around}); a JSON list is "
            "one document, so its rows cannot be skipped: save the file as UTF-8, or as JSONL"
        )
    copy = Path(cache_dir) / f"{digest.hexdigest()}.jsonl"
    if copy.is_file():
        return copy
    copy.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=copy.parent, prefix=f".{copy.stem}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out, path.open("rb") as file:
            for number, line in enumerate(file, start=1):
                if number in bad:
                    try:
                        mark = f"{_MARK}line {number} of {path.name}: {bad[number]}"
                        row = _marked(json.loads(line.decode("utf-8", "surrogateescape")), mark)
                        line = json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n"
                    except (ValueError, UnicodeEncodeError):  # not JSON, or the bytes are in a key: no row to keep
                        raise NotUtf8Error(
                            f"line {number} of {path.name} holds bytes that are not UTF-8 outside a "
                            f"text value ({bad[number]}): save the file as UTF-8"
                        ) from None
                out.write(line)
        os.replace(temporary, copy)  # a reader never sees half a copy
    except BaseException:
        os.unlink(temporary)
        raise
    return copy


def arrow_rows(table: Any) -> list[dict]:
    """The rows of a ``pyarrow.Table`` as dicts, with each value that is not UTF-8, raw or marked, as
    :class:`NotUtf8`."""
    try:
        rows = table.to_pylist()
    except UnicodeDecodeError:  # a string column holding bytes that are not UTF-8: find them row by row
        rows = []
        for index in range(table.num_rows):
            row = {}
            for name, column in zip(table.column_names, table.columns, strict=True):
                try:
                    row[name] = column[index].as_py()
                except UnicodeDecodeError as error:
                    row[name] = NotUtf8(_bytes_around(error.object, error))
            rows.append(row)
    return rows


def not_utf8(value: Any) -> Any:
    """``value``, or :class:`NotUtf8` when it holds a string marked by :func:`marked_copy`."""
    where = _mark_in(value)
    return value if where is None else NotUtf8(where)
