"""Which rows of a dataset to train on: one pass that checks every row and keeps only its outcome.

Each row is read raw (:class:`vigos.data.rows.RowReader`), its question and answer
checked, its images decoded and checked, its prompt measured, and the images
dropped: what the pass keeps is the index of the good rows and, for the
report, how many rows were skipped and why. The pass runs over forked worker
processes in chunks of rows, read back in row order, so ``bad_rows: error``
names the first bad row and ``limit`` the first kept rows as a serial pass
would. Its result is cached on disk, keyed by the dataset's fingerprint and
every setting that changes it, so the next run of the same data decodes
nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import logging
import math
import multiprocessing
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from vigos.data.images import (
    ImagePathOutsideError,
    MissingImageError,
    UnreadableImageError,
    resolve_image,
    row_image_values,
)
from vigos.data.rows import BAD_ROW_MODES, IMAGES_PER_ROW, BadRowError, DataReport, RowReader, _first_line
from vigos.data.utf8 import NotUtf8
from vigos.errors import DataError

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

PromptLength = Callable[[str, list[Image.Image]], int]
"""(question, the row's images) → tokens of the prompt."""

_CHUNK_ROWS = 256  # rows per unit of work: small enough to stop soon after a limit or a bad row
_READ_ROWS = 16  # rows read from the table at once by a process
_PROGRESS_EVERY = 5000
_SHOWN_SKIPS = 5
_MAX_DEFAULT_PROCESSES = 8
_CACHE_FORMAT = 2  # bump when a check changes what a row's outcome is, so older cache files stop matching


@dataclass
class _Bad:
    reason: str
    field: str
    message: str
    fix: str = "fix the row"


@dataclass(frozen=True)
class RowChecks:
    """Everything that decides one row's outcome except the prompt-length function."""

    question_field: str = "question"
    image_field: str = "image"
    answer_field: str = "answer"
    min_image_side: int = 28
    max_prompt_length: int | None = None
    images_per_row: str = "all"
    max_images_per_row: int | None = 8
    base_dir: Path | None = None
    allow_image_paths_outside: bool = False


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


def check_row(row: dict, checks: RowChecks, prompt_length: PromptLength | None = None) -> int | _Bad:
    """How many images a good row's image field holds, or why the row is bad.

    Text first: it is cheap, decoding an image is not. Any field whose text is
    not UTF-8 (:class:`vigos.data.utf8.NotUtf8`) makes the row bad: the row cannot
    be read as it was written. With ``images_per_row``
    "all" every image is checked (a message says which one when there are
    several), with "first" only the first. ``prompt_length`` is called only
    when ``checks.max_prompt_length`` is set.
    """
    for name, value in row.items():
        if isinstance(value, NotUtf8):
            return _Bad(
                "text not UTF-8",
                name,
                f"the value holds bytes that are not UTF-8 ({value.where})",
                "save the file as UTF-8",
            )
    question = _text(row.get(checks.question_field), field_name=checks.question_field, what="question")
    if isinstance(question, _Bad):
        return question
    answer = _text(row.get(checks.answer_field), field_name=checks.answer_field, what="answer")
    if isinstance(answer, _Bad):
        return answer
    image_field = checks.image_field
    try:
        values = row_image_values(row.get(image_field))
    except MissingImageError as error:
        return _Bad("missing image", image_field, str(error))
    cap = checks.max_images_per_row
    if checks.images_per_row == "all" and cap is not None and len(values) > cap:
        return _Bad(
            "too many images",
            image_field,
            f"the row has {len(values)} images, over max_images_per_row={cap}",
            "fix the row, raise max_images_per_row, set images_per_row: first",
        )
    used = values if checks.images_per_row == "all" else values[:1]
    images = []
    for position, value in enumerate(used, start=1):
        which = f"image {position} of {len(used)}: " if len(used) > 1 else ""
        try:
            image = resolve_image(
                value, base_dir=checks.base_dir, allow_image_paths_outside=checks.allow_image_paths_outside
            )
        except ImagePathOutsideError as error:
            return _Bad("image outside folder", image_field, f"{which}{error}")
        except MissingImageError as error:
            return _Bad("missing image", image_field, f"{which}{error}")
        except UnreadableImageError as error:
            return _Bad("unreadable image", image_field, f"{which}{error}")
        if min(image.size) < checks.min_image_side:
            return _Bad(
                "tiny image",
                image_field,
                f"{which}the image is {image.width}x{image.height}, under min_image_side={checks.min_image_side}",
                "fix the row, lower min_image_side",
            )
        images.append(image)
    if checks.max_prompt_length is not None and prompt_length is not None:
        try:
            length = prompt_length(question, images)
        except Exception as error:  # e.g. a processor refusing an extreme aspect ratio: a row problem, not a crash
            return _Bad("prompt failed", image_field, f"building the prompt failed ({_first_line(error)})")
        if length > checks.max_prompt_length:
            return _Bad(
                "prompt too long",
                checks.question_field,
                f"the prompt is {length} tokens, over max_prompt_length={checks.max_prompt_length}",
                "fix the row, raise max_prompt_length",
            )
    return len(values)


@dataclass
class _SpanChecker:
    """Checks rows ``start`` to ``stop``: the unit of work a process gets."""

    reader: RowReader
    checks: RowChecks
    prompt_length: PromptLength | None

    def __call__(self, span: tuple[int, int]) -> list[int | _Bad]:
        start, stop = span
        # Read a few rows at a time: a chunk's raw image bytes at once would be hundreds of MB of large images.
        return [
            check_row(row, self.checks, self.prompt_length)
            for first in range(start, stop, _READ_ROWS)
            for row in self.reader.rows(first, min(first + _READ_ROWS, stop))
        ]


# About 200 MB of 1-megapixel JPEGs at 256 rows a span; forking a worker costs a few milliseconds.
_SPANS_PER_WORKER = 4
_WORKER_CHECKER: _SpanChecker | None = None  # set in each forked worker by _start_worker


def _start_worker(checker: _SpanChecker) -> None:
    # Under fork the checker (the dataset, the processor inside prompt_length) is inherited, not pickled.
    global _WORKER_CHECKER
    _WORKER_CHECKER = checker
    # One thread per process (the processes already fill the cores); torch's OpenMP pool, if the parent used it
    # before forking, could not run in the child anyway.
    torch.set_num_threads(1)


def _check_span(span: tuple[int, int]) -> list[int | _Bad]:
    return _WORKER_CHECKER(span)


@contextlib.contextmanager
def _outcomes(checker: _SpanChecker, spans: Sequence[tuple[int, int]], processes: int) -> Iterator[Iterator[list]]:
    """Each span's outcomes, in span order, from ``processes`` forked workers (in this process when 1).

    Leaving the block stops the workers, so a caller that has seen enough (a
    limit reached, a bad row in error mode) wastes no more time.
    """
    if processes <= 1:
        # The image processor's small torch ops run about 3x faster on one thread than on two busy cores
        # (measured on 1-megapixel images); parallelism here is across rows, by processes.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield map(checker, spans)
        finally:
            torch.set_num_threads(threads)
        return
    # Reading rows maps the Arrow file's pages into the worker, and they count in its resident memory for
    # as long as it lives: a fresh worker every few spans keeps that to a few spans' bytes, not the dataset's.
    with multiprocessing.get_context("fork").Pool(
        processes, _start_worker, (checker,), maxtasksperchild=_SPANS_PER_WORKER
    ) as pool:
        yield pool.imap(_check_span, spans)


@dataclass
class _Tally:
    """Folds row outcomes, in row order, into the kept index and the report, as one serial pass would."""

    bad_rows: str
    limit: int | None
    report: DataReport
    kept: list[int] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def add(self, index: int, outcome: int | _Bad) -> bool:
        """Count row ``index``; False, counting nothing, once ``limit`` rows are kept before it."""
        if self.limit is not None and len(self.kept) >= self.limit:
            self.report.stopped_at_limit = self.limit
            return False
        self.report.total += 1
        if isinstance(outcome, _Bad):
            text = f"row {index} (field {outcome.field!r}): {outcome.message}"
            if self.bad_rows == "error":
                raise BadRowError(
                    f"{text} — {outcome.fix} or set bad_rows: skip",
                    row=index,
                    field=outcome.field,
                    reason=outcome.reason,
                )
            self.skipped[outcome.reason] += 1
            if len(self.report.examples_of_skips) < _SHOWN_SKIPS:
                self.report.examples_of_skips.append(text)
        else:
            self.kept.append(index)
            self.report.several_images += outcome > 1
        return True


def default_num_proc() -> int:
    """Processes for the validation pass when none is set: the usable cores, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, _MAX_DEFAULT_PROCESSES))


def cache_settings(
    rows: datasets.Dataset, checks: RowChecks, *, bad_rows: str, limit: int | None, prompt_length_key: str | None
) -> dict[str, Any]:
    """What a validation result depends on: the dataset (fingerprint and size), the checks, ``bad_rows``,
    ``limit`` and the prompt-length function's key (None when prompt length is not checked)."""
    values = dataclasses.asdict(checks)
    values["base_dir"] = str(Path(checks.base_dir).expanduser().resolve()) if checks.base_dir is not None else None
    return {
        "format": _CACHE_FORMAT,
        "fingerprint": rows._fingerprint,
        "num_rows": len(rows),
        **values,
        "bad_rows": bad_rows,
        "limit": limit,
        "prompt_length_key": prompt_length_key,
    }


def cache_key(settings: dict[str, Any]) -> str:
    """The file name (without suffix) of a validation result in the cache: a sha256 of ``settings``."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _read_cache(path: Path) -> tuple[np.ndarray, DataReport] | None:
    try:
        payload = json.loads(path.read_text())
        return np.asarray(payload["kept"], dtype=np.int64), DataReport(**payload["report"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:  # a damaged or foreign file: check the rows again
        logger.warning("ignoring the validation cache %s (%s)", path, _first_line(error))
        return None


def _write_cache(path: Path, settings: dict[str, Any], kept: np.ndarray, report: DataReport) -> None:
    """Write atomically (a temporary file renamed into place): a reader never sees half a file, and processes
    writing the same result at once leave one whole one."""
    payload = {"settings": settings, "kept": kept.tolist(), "report": dataclasses.asdict(report)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as file:
                json.dump(payload, file)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as error:  # the cache only saves time: a read-only or full disk must not stop the run
        logger.warning("could not write the validation cache %s (%s)", path, _first_line(error))


def _check_arguments(rows: Any, checks: RowChecks, *, bad_rows: str, limit: int | None, num_proc: int | None) -> None:
    import datasets

    if bad_rows not in BAD_ROW_MODES:
        raise DataError(f"bad_rows must be one of {', '.join(BAD_ROW_MODES)}; got {bad_rows!r}")
    if checks.images_per_row not in IMAGES_PER_ROW:
        raise DataError(f"images_per_row must be one of {', '.join(IMAGES_PER_ROW)}; got {checks.images_per_row!r}")
    if checks.max_images_per_row is not None and checks.max_images_per_row < 1:
        raise DataError(f"max_images_per_row must be at least 1 (or None for no cap); got {checks.max_images_per_row}")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1 (or None for all rows); got {limit}")
    if num_proc is not None and num_proc < 1:
        raise DataError(f"num_proc must be at least 1 (or None for the usable cores, at most 8); got {num_proc}")
    if isinstance(rows, datasets.DatasetDict):
        raise DataError(f"got a DatasetDict with splits {', '.join(rows)}; pass one split (set dataset_split)")
    if not isinstance(rows, datasets.Dataset):
        raise DataError(f"rows must be a datasets.Dataset (see load_rows); got a {type(rows).__name__}")
    columns = list(rows.column_names)
    for option in ("question_field", "image_field", "answer_field"):
        name = getattr(checks, option)
        if name not in columns:
            close = difflib.get_close_matches(name, columns, n=1)
            hint = f" — did you mean {close[0]!r}?" if close else ""
            raise DataError(
                f"the dataset has no column {name!r} (set {option}); its columns are: {', '.join(columns)}{hint}"
            )


def _log_report(report: DataReport, note: str = "") -> None:
    level = logging.WARNING if report.skipped else logging.INFO
    logger.log(level, "data: %s%s", report.summary(), note)
    for text in report.examples_of_skips:
        logger.log(level, "skipped %s", text)


def validate_rows(
    rows: datasets.Dataset,
    *,
    question_field: str = "question",
    image_field: str = "image",
    answer_field: str = "answer",
    bad_rows: str = "skip",
    min_image_side: int = 28,
    max_prompt_length: int | None = None,
    prompt_length: PromptLength | None = None,
    prompt_length_key: str | None = None,
    images_per_row: str = "all",
    max_images_per_row: int | None = 8,
    base_dir: Path | None = None,
    allow_image_paths_outside: bool = False,
    limit: int | None = None,
    num_proc: int | None = 1,
    cache_dir: Path | None = None,
) -> tuple[np.ndarray, DataReport]:
    """Check every row of ``rows``, holding no image past its row; the source indices of the rows to keep, in
    order, and the report.

    A field missing from the dataset raises :class:`DataError` at once,
    listing the columns. A bad row (reasons in ``SKIP_REASONS``) is skipped and
    counted when ``bad_rows="skip"``, or raises :class:`BadRowError` naming the
    first bad row, its field and the fix when ``bad_rows="error"``. With
    ``images_per_row="all"`` every image of a row is checked and a row of more
    than ``max_images_per_row`` images (None: no cap) is bad; with "first"
    only its first. An image path must resolve inside ``base_dir`` (the
    working directory when None) unless ``allow_image_paths_outside``. The
    prompt length is checked only when both
    ``max_prompt_length`` and ``prompt_length`` (question, images → tokens)
    are given. ``limit`` stops after that many kept rows. ``num_proc``
    processes share the pass (None: the usable cores, at most 8). With
    ``cache_dir`` the result is read from, or written to,
    ``cache_dir/<key>.json`` (see :func:`cache_settings`); a prompt-length
    check then needs ``prompt_length_key``, a string that changes whenever
    what ``prompt_length`` computes does (the key cannot see inside a
    function). Logs :meth:`DataReport.summary` and progress on the
    ``vigos.data.rows`` logger.
    """
    if max_prompt_length is None or prompt_length is None:
        max_prompt_length = prompt_length = prompt_length_key = None
    checks = RowChecks(
        question_field=question_field,
        image_field=image_field,
        answer_field=answer_field,
        min_image_side=min_image_side,
        max_prompt_length=max_prompt_length,
        images_per_row=images_per_row,
        max_images_per_row=max_images_per_row,
        base_dir=base_dir,
        allow_image_paths_outside=allow_image_paths_outside,
    )
    _check_arguments(rows, checks, bad_rows=bad_rows, limit=limit, num_proc=num_proc)
    cache_file = settings = None
    if cache_dir is not None and getattr(rows, "_fingerprint", None):
        if prompt_length is not None and prompt_length_key is None:
            raise ValueError(
                "validate_rows: caching a prompt-length check needs prompt_length_key (a string that "
                "changes with what prompt_length computes)"
            )
        settings = cache_settings(rows, checks, bad_rows=bad_rows, limit=limit, prompt_length_key=prompt_length_key)
        cache_file = Path(cache_dir) / f"{cache_key(settings)}.json"
        cached = _read_cache(cache_file)
        if cached is not None:
            _log_report(cached[1], f" (checked before: {cache_file}; delete it to check the rows again)")
            return cached

    total = len(rows)
    spans = [(start, min(start + _CHUNK_ROWS, total)) for start in range(0, total, _CHUNK_ROWS)]
    processes = min(num_proc or default_num_proc(), len(spans))  # a dataset of one chunk is checked in-process
    if processes > 1 and "fork" not in multiprocessing.get_all_start_methods():
        logger.info("data: no fork on this platform; checking the rows in this process")
        processes = 1
    tally = _Tally(bad_rows, limit, DataReport(images_per_row=images_per_row))
    started = time.monotonic()
    logged = 0
    with _outcomes(_SpanChecker(RowReader(rows), checks, prompt_length), spans, processes) as outcomes:
        for (start, _), span_outcomes in zip(spans, outcomes):
            # all() stops at the first row past the limit; a bad row in error mode raises out of add().
            if not all(tally.add(start + offset, outcome) for offset, outcome in enumerate(span_outcomes)):
                break
            if tally.report.total - logged >= _PROGRESS_EVERY:
                logged = tally.report.total
                logger.info(
                    "data: checked %d of %d rows (%d kept), %.0f rows/s",
                    logged,
                    total,
                    len(tally.kept),
                    logged / max(time.monotonic() - started, 1e-9),
                )
    report = tally.report
    report.kept = len(tally.kept)
    report.skipped = dict(tally.skipped)
    kept = np.asarray(tally.kept, dtype=np.int64)
    seconds = time.monotonic() - started
    logger.info(
        "data: checked %d rows in %.1f s (%.0f rows/s, %d process%s)",
        report.total,
        seconds,
        report.total / max(seconds, 1e-9),
        processes,
        "" if processes == 1 else "es",
    )
    _log_report(report)
    if cache_file is not None:
        _write_cache(cache_file, settings, kept, report)
    return kept, report
