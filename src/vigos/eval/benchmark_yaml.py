"""Benchmarks described in a YAML file, read by one generic adapter: a new suite without writing Python.

The YAML names the data file (a glob under ``data_dir/<name>/``), which
columns hold the question, answer and image, and how to prompt and grade;
:func:`benchmark_from_yaml` checks it and returns a
:class:`vigos.eval.items.Benchmark` to register or load. The data file
and the image paths in its rows must stay inside ``data_dir/<name>/`` unless
the YAML sets ``allow_paths_outside: true``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePath
from typing import Any

import yaml

# The built-in adapters' helpers: this adapter is one more of them, kept in its own module.
from vigos.eval.items import (
    _NAME,
    _TEMPLATE_FIELD,
    ANSWER_FORMATS,
    DEFAULT_GRADERS,
    DEFAULT_PROMPT_TEMPLATE,
    BadRow,
    Benchmark,
    EvalItem,
    _rows,
    _sources,
    per_row,
)
from vigos.eval.sources import BenchmarkDataError, Row, item_images

_YAML_KEYS = {
    "name",
    "description",
    "file",
    "split",
    "fields",
    "prompt",
    "grader",
    "answer_format",
    "allow_paths_outside",
}
_YAML_FIELDS = {"id", "question", "answer", "image", "options", "category"}
_YAML_REQUIRED_FIELDS = ("question", "answer", "image")


def _known_graders() -> tuple[str, ...]:
    # Asked lazily: grading and the benchmark registry do not depend on each other at import.
    try:
        from vigos.grading.answers import GRADERS
    except ImportError:
        return DEFAULT_GRADERS
    return tuple(GRADERS)


@dataclass(frozen=True)
class _YamlSpec:
    file: str
    split: str
    fields: dict[str, str]
    prompt: str
    grader: str
    answer_format: str
    allow_paths_outside: bool


def benchmark_from_yaml(path: str | Path) -> Benchmark:
    """A benchmark described by a YAML file, read by a generic adapter.

    Keys: ``name``; ``file`` (a glob relative to ``data_dir/<name>/``: JSONL,
    JSON, parquet or a ``save_to_disk`` folder); ``fields`` mapping
    ``question``, ``answer``, ``image`` (required) and ``options``,
    ``category``, ``id`` (optional) to the row's column names; optional
    ``description``, ``split`` (of a saved DatasetDict, default ``test``),
    ``prompt`` (default ``"{question}\\n{options}"``; ``{column}`` inserts any
    other column of the row), ``grader`` (default ``multiple_choice`` with
    options, else ``auto``), ``answer_format`` (``auto``, ``letter``,
    ``text`` or ``index``: how the answer names an option) and
    ``allow_paths_outside`` (default false: ``file`` may not be absolute or
    climb out with ``..``, and an image path must resolve, symlinks followed,
    inside ``data_dir/<name>/``; true lifts both). Image values are paths
    relative to the data file's folder, embedded bytes, or lists of either.
    """
    path = Path(path)
    if not path.is_file():
        raise BenchmarkDataError(f"benchmark YAML {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise BenchmarkDataError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(spec, dict):
        raise BenchmarkDataError(f"{path}: expected a mapping of keys ({', '.join(sorted(_YAML_KEYS))})")

    def bad(problem: str) -> BenchmarkDataError:
        return BenchmarkDataError(f"{path}: {problem}")

    if unknown := set(spec) - _YAML_KEYS:
        raise bad(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_YAML_KEYS)}")
    for key in ("name", "file", "fields"):
        if not spec.get(key):
            raise bad(f"missing required key {key!r}")
    fields = spec["fields"]
    if not isinstance(fields, dict):
        raise bad("'fields' must map question/answer/image/... to column names")
    if unknown := set(fields) - _YAML_FIELDS:
        raise bad(f"unknown field(s) {sorted(unknown)} under 'fields'; allowed: {sorted(_YAML_FIELDS)}")
    if missing := [key for key in _YAML_REQUIRED_FIELDS if not fields.get(key)]:
        raise bad(f"'fields' lacks {missing}: say which column holds the question, the answer and the image")
    prompt = str(spec.get("prompt", DEFAULT_PROMPT_TEMPLATE))
    if "{question}" not in prompt:
        raise bad("'prompt' must contain {question}")
    grader = str(spec.get("grader", "multiple_choice" if fields.get("options") else "auto"))
    if grader not in (graders := _known_graders()):
        raise bad(f"unknown grader {grader!r}; choose one of {', '.join(graders)}")
    answer_format = str(spec.get("answer_format", "auto"))
    if answer_format not in ANSWER_FORMATS:
        raise bad(f"answer_format {answer_format!r} is not one of {', '.join(ANSWER_FORMATS)}")
    allow_outside = spec.get("allow_paths_outside", False)
    if not isinstance(allow_outside, bool):
        raise bad(f"allow_paths_outside must be true or false; got {allow_outside!r}")

    name = str(spec["name"])
    if not re.fullmatch(_NAME, name):
        raise bad(f"name {name!r}: use lowercase letters, digits, '.', '_' or '-'")
    file = str(spec["file"])
    if not allow_outside and (PurePath(file).is_absolute() or ".." in PurePath(file).parts):
        raise bad(
            f"'file' {file!r} leads outside data_dir/{name}/; name a file under it, or set "
            "allow_paths_outside: true to read it where it is"
        )
    columns = {key: str(column) for key, column in fields.items() if column}
    described = ", ".join(f"{key}={column!r}" for key, column in sorted(columns.items()))
    layout = (
        f"data_dir/{name}/{file} (from {path}) with one row per question and columns {described}; "
        "images as paths relative to the data file's folder or embedded bytes."
    )
    yaml_spec = _YamlSpec(file, str(spec.get("split", "test")), columns, prompt, grader, answer_format, allow_outside)
    description = str(spec.get("description", f"benchmark described in {path}"))
    return Benchmark(name, description, layout, partial(_load_yaml, spec=yaml_spec))


def _load_yaml(benchmark: Benchmark, root: Path, *, spec: _YamlSpec) -> Iterator[EvalItem | BadRow]:
    columns = spec.fields
    counter = itertools.count()

    def build(row: Row) -> EvalItem:
        index = next(counter)
        image = item_images(row.images(columns["image"]))
        answer: Any = row.require(columns["answer"])
        options = row.options(columns["options"]) if "options" in columns else None
        if options:
            answer, _ = row.choice_answer(answer, options, spec.answer_format)
        template = _TEMPLATE_FIELD.sub(
            lambda m, row=row: (
                str(row.data[m.group(1)])
                if m.group(1) in row.data and m.group(1) not in ("question", "options")
                else m.group(0)
            ),
            spec.prompt,
        )
        category = row.get(columns["category"]) if "category" in columns else None
        return EvalItem(
            benchmark.name,
            str(row.require(columns["id"])) if "id" in columns else str(index),
            row.text(columns["question"]),
            image,
            str(answer).strip(),
            options=options or None,
            category=None if category is None else str(category),
            grader=spec.grader,
            meta={"source": row.where},
            prompt_template=template,
        )

    for source in _sources(benchmark, root, (spec.file,)):
        base_dir = source if source.is_dir() else source.parent
        # Image paths resolve against the data file's folder and must stay inside the benchmark's folder.
        rows = _rows(
            benchmark, [source], split=spec.split, base_dir=base_dir, root=root, allow_outside=spec.allow_paths_outside
        )
        yield from per_row(rows, build)
