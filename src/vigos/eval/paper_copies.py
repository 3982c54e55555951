"""The benchmarks as the ``paper`` protocol reads them (:mod:`vigos.eval.protocols`).

The ViGOS release evaluates on re-packaged copies of seven suites, one
schema for all: rows with ``problem`` (the question as asked, options
included), ``images`` (a list of images, in order) and ``answer``, split
``test``. They live next to the official copies, under
``data_dir/paper/<name>/``. CV-Bench is read from its own release, asked by
its ``prompt`` field (the question with its lettered choices); ViLP from its
own release too, split ``train``, with the one-word instruction, as the
``official`` protocol reads it. Any other benchmark (a YAML one) reads as it
does under ``official``. Every item is graded by the judge
(:mod:`vigos.eval.protocol_grading`), so no item here names a rule grader of its own.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path

from vigos.eval.items import BadRow, Benchmark, EvalItem, _rows, _sources, per_row
from vigos.eval.sources import Row, item_images

__all__ = ["PAPER_COPIES", "PAPER_FOLDER", "for_protocol"]

PAPER_FOLDER = "paper"
# The suites the release re-packages, and the split its copies hold.
PAPER_COPIES = ("mmvet", "mmmu", "mmmu-pro", "mathverse", "mathvista", "mmsi", "realworldqa")
_SPLIT = "test"
_COPY_LAYOUT = (
    "the ViGOS release's re-packaged copy: data_dir/paper/{name}/data/test-*.parquet (or test-*.parquet, *.parquet, "
    "*.jsonl, or a save_to_disk folder) with fields problem (the question, options included), images (a list of "
    "images: encoded bytes, {{bytes, path}} structs or paths) and answer; an id field is used when present."
)


def _load_copy(benchmark: Benchmark, root: Path) -> Iterator[EvalItem | BadRow]:
    patterns = ("data/test-*.parquet", "test-*.parquet", "*.parquet", "*.jsonl", "data/*.jsonl")
    files = _sources(benchmark, root, patterns)
    counter = itertools.count()

    def build(row: Row) -> EvalItem:
        index = next(counter)
        item_id = row.get("id", index)
        return EvalItem(
            benchmark.name,
            str(item_id),
            row.text("problem"),
            item_images(row.images("images")),
            row.text("answer"),
            split=_SPLIT,
            grader="judge",
            prompt_template="{question}",
        )

    return per_row(_rows(benchmark, files, split=_SPLIT, base_dir=root), build)


def _cvbench_by_prompt(official: Benchmark) -> Benchmark:
    """CV-Bench read from its own release, each item asked by the dataset's ``prompt`` field."""

    def load(benchmark: Benchmark, root: Path) -> Iterator[EvalItem | BadRow]:
        for entry in official.loader(benchmark, root):
            if isinstance(entry, BadRow):
                yield entry
                continue
            if not entry.meta.get("prompt"):
                yield BadRow(
                    f"item {entry.id}",
                    f"{benchmark.name}: item {entry.id} has no 'prompt' field, which the paper protocol asks "
                    "CV-Bench's questions by",
                )
                continue
            # The prompt lists the choices itself; they stay in meta for the record only.
            yield dataclasses.replace(
                entry,
                question=str(entry.meta["prompt"]).strip(),
                options=None,
                meta={**entry.meta, "options": entry.options},
                prompt_template="{question}",
            )

    return dataclasses.replace(official, loader=load)


def for_protocol(benchmark: Benchmark, protocol: str) -> Benchmark:
    """``benchmark`` as ``protocol`` reads it: itself under ``official``; under ``paper`` the release's copy of the
    seven re-packaged suites, CV-Bench by its ``prompt`` field, and anything else as it is."""
    if protocol != "paper":
        return benchmark
    if benchmark.name in PAPER_COPIES:
        return Benchmark(
            benchmark.name,
            f"{benchmark.description} (the ViGOS release's re-packaged copy)",
            _COPY_LAYOUT.format(name=benchmark.name),
            _load_copy,
            folder=f"{PAPER_FOLDER}/{benchmark.name}",
        )
    if benchmark.name == "cvbench":
        return _cvbench_by_prompt(benchmark)
    return benchmark
