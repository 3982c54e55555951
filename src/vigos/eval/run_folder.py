"""The files of an evaluation run folder, written so that a killed run loses nothing.

``run.json`` records the settings the samples were drawn with;
``responses/<benchmark>.jsonl`` holds one JSON line per finished item,
appended and flushed batch by batch; ``summary.json`` is replaced whole. A
run killed mid-write leaves at most one torn last line in a responses file,
which :func:`read_responses` drops so that its item is sampled again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "EvalError",
    "RESPONSES_DIR",
    "RUN_FILE",
    "SUMMARY_FILE",
    "append_responses",
    "claim_run_folder",
    "now",
    "read_responses",
    "responses_path",
    "write_json",
]

logger = logging.getLogger("vigos")

RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
RESPONSES_DIR = "responses"


class EvalError(ValueError):
    """A problem with an evaluation's inputs or run folder, shown to the user as one message."""


def now() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def responses_path(run_dir: str | Path, benchmark: str) -> Path:
    """Where the records of ``benchmark`` live in the run folder."""
    return Path(run_dir) / RESPONSES_DIR / f"{benchmark}.jsonl"


def read_responses(path: str | Path) -> dict[str, dict[str, Any]]:
    """The records of a responses file by item id (``{}`` when the file does not exist).

    A last line without its newline was cut short by a kill: it is removed
    from the file, and its item counts as not done. Any other unreadable
    line is an :class:`EvalError` naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    records: dict[str, dict[str, Any]] = {}
    end_of_good = 0
    for number, line in enumerate(data.split(b"\n"), start=1):
        line_end = end_of_good + len(line) + 1
        if line_end > len(data):
            break  # the last segment: empty (the file ends with a newline) or torn
        if line.strip():
            try:
                record = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise EvalError(
                    f"{path}:{number}: not a JSON record ({error}); delete that line to redo its item"
                ) from None
            if not isinstance(record, dict) or "id" not in record or not isinstance(record.get("correct"), list):
                raise EvalError(
                    f"{path}:{number}: not a responses record (needs 'id' and 'correct'); "
                    "delete that line to redo its item"
                )
            records.setdefault(str(record["id"]), record)
        end_of_good = line_end
    if end_of_good < len(data):
        logger.warning("%s: dropped a partly written last line; its item will be sampled again", path)
        with path.open("r+b") as handle:
            handle.truncate(end_of_good)
    return records


def append_responses(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Append one JSON line per record in a single write, then flush it to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` through a temporary file, so a kill never leaves half a JSON file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def claim_run_folder(run_dir: str | Path, settings: Mapping[str, Any]) -> None:
    """Record the sample ``settings`` in ``run.json``, or check them against the ones recorded there.

    Raises :class:`EvalError` listing what differs: samples drawn with two
    settings must not be mixed in one folder.
    """
    run_dir = Path(run_dir)
    run_file = run_dir / RUN_FILE
    if run_file.exists():
        try:
            recorded = json.loads(run_file.read_text(encoding="utf-8")).get("settings", {})
        except (json.JSONDecodeError, AttributeError) as error:
            raise EvalError(f"{run_file} is not a run record ({error}); delete {run_dir} to start over") from None
        changed = [
            f"{key}: {recorded.get(key)!r} -> {value!r}"
            for key, value in settings.items()
            if recorded.get(key) != value
        ]
        if changed:
            raise EvalError(
                f"{run_dir} holds results sampled with other settings ({'; '.join(changed)}); "
                f"use another --out-dir, or delete {run_dir} to start over"
            )
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_file, {"settings": dict(settings), "created": now()})
