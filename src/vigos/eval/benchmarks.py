"""Benchmark adapters: read a local copy of each evaluation suite into ``EvalItem``s.

Every suite of the paper's evaluation protocol (METHOD.md) has an adapter
that reads the suite in the schema it is published in, under
``data_dir/<folder>/`` (the folder is the benchmark's name except for ViLP,
whose F and P variants share ``data_dir/vilp/``). Nothing is downloaded.
A benchmark states the layout it expects in ``expected_layout`` (a folder
written by ``Dataset.save_to_disk`` may stand in for any parquet files); a
missing folder, file or field raises :class:`BenchmarkDataError` naming what
is missing and repeating that layout.

Multiple-choice items carry their answer as an option letter (``A``, ``B``,
...). Where a suite prints its options inside the question text (MathVerse,
MMSI-Bench, RealWorldQA) the question is kept as published (RealWorldQA
loses only its trailing answer-format instruction), ``options`` stays
``None``, and the options read back from the text go to ``meta["options"]``
for grading, so that an answer naming an option by its text counts
(:mod:`vigos.eval.printed_options`). Rows with several images (MMMU,
MMMU-Pro, MMSI-Bench) keep them as a list in ``image``, in order, so that
``<image 2>`` and image options resolve; the runner tiles them into one
picture only with ``tile_images``.

A suite that is not built in can be described in a YAML file (see
:func:`vigos.eval.benchmark_yaml.benchmark_from_yaml`) and registered without
writing Python; :func:`get_benchmark` takes the YAML file's path as a name.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from vigos.eval.items import _NAME, DEFAULT_PROMPT_TEMPLATE, BadRow, Benchmark, EvalItem, _rows, _sources, per_row
from vigos.eval.printed_options import options_for_grading
from vigos.eval.sources import BenchmarkDataError, Row, answer_to_letter, bare_letter, item_images, option_letter
from vigos.eval.vilp import load_vilp

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkDataError",
    "EvalItem",
    "answer_to_letter",
    "get_benchmark",
    "load_benchmark",
    "option_letter",
    "register_benchmark",
]


# --- MMMU and MMMU-Pro ----------------------------------------------------------------------------

_MMMU_IMAGE_FIELDS = tuple(f"image_{i}" for i in range(1, 8))
MMMU_PRO_VISION_QUESTION = (
    "Answer the multiple-choice question shown in the image with the letter of the correct option."
)


def _mmmu_images(row: Row) -> list[Image.Image]:
    images = [row.image(name) for name in _MMMU_IMAGE_FIELDS if row.get(name) is not None]
    if not images:
        raise row.fail("has none of the image fields image_1..image_7")
    return images


def _mmmu_subject(item_id: str) -> str | None:
    """MMMU ids read ``<split>_<Subject>_<n>``, e.g. ``validation_Art_Theory_12`` -> ``Art_Theory``."""
    parts = item_id.split("_")
    return "_".join(parts[1:-1]) if len(parts) > 2 else None


def _mmmu_item(benchmark: Benchmark, row: Row, *, item_id: str, split: str | None, category: str | None) -> EvalItem:
    images = _mmmu_images(row)
    options = row.options()
    answer = row.require("answer")
    meta = {
        "img_type": row.get("img_type"),
        "topic_difficulty": row.get("topic_difficulty"),
        "subfield": row.get("subfield"),
    }
    # MMMU-Pro has no question_type: every question there is multiple choice.
    is_choice = row.get("question_type", "multiple-choice") == "multiple-choice" and bool(options)
    if not is_choice:
        return EvalItem(
            benchmark.name,
            item_id,
            row.text("question"),
            item_images(images),
            str(answer).strip(),
            category=category,
            split=split,
            grader="auto",
            meta=meta,
        )
    letter, accepted = row.choice_answer(answer, options)
    meta["accepted_answers"] = accepted
    return EvalItem(
        benchmark.name,
        item_id,
        row.text("question"),
        item_images(images),
        letter,
        options=options,
        category=category,
        split=split,
        grader="multiple_choice",
        meta=meta,
    )


def _load_mmmu(benchmark: Benchmark, root: Path) -> Iterator[EvalItem | BadRow]:
    # MMMU/MMMU ships one folder per subject; lmms-lab/MMMU merges them under data/.
    files = _sources(benchmark, root, ("*/validation-*.parquet", "data/validation-*.parquet", "validation-*.parquet"))

    def build(row: Row) -> EvalItem:
        item_id = str(row.require("id"))
        return _mmmu_item(benchmark, row, item_id=item_id, split=None, category=_mmmu_subject(item_id))

    return per_row(_rows(benchmark, files, split="validation", base_dir=root), build)


_MMMU_PRO_STANDARD = "standard (10 options)"
_MMMU_PRO_VISION = "vision"


def _load_mmmu_pro(benchmark: Benchmark, root: Path) -> Iterator[EvalItem | BadRow]:
    # Both settings are found before any row is read, so a half copy fails at once.
    standard = _sources(benchmark, root / _MMMU_PRO_STANDARD, ("test-*.parquet", "*.parquet"))
    vision = _sources(benchmark, root / _MMMU_PRO_VISION, ("test-*.parquet", "*.parquet"))

    def build_standard(row: Row) -> EvalItem:
        return _mmmu_item(
            benchmark, row, item_id=f"standard:{row.require('id')}", split="standard-10", category=row.get("subject")
        )

    def build_vision(row: Row) -> EvalItem:
        # The question and its options are rendered inside the screenshot; the text prompt
        # must not repeat the options, so they stay in meta for graders only.
        options = row.options()
        letter, accepted = row.choice_answer(row.require("answer"), options)
        return EvalItem(
            benchmark.name,
            f"vision:{row.require('id')}",
            MMMU_PRO_VISION_QUESTION,
            row.image("image"),
            letter,
            category=row.get("subject"),
            split="vision",
            grader="multiple_choice",
            meta={"options": options, "accepted_answers": accepted},
        )

    return itertools.chain(
        per_row(
            _rows(benchmark, standard, split="test", base_dir=root, prefix=f"{_MMMU_PRO_STANDARD}/"), build_standard
        ),
        per_row(_rows(benchmark, vision, split="test", base_dir=root, prefix=f"{_MMMU_PRO_VISION}/"), build_vision),
    )


# --- Math suites ----------------------------------------------------------------------------------


def _load_mathvista(benchmark: Benchmark, root: Path) -> Iterator[EvalItem | BadRow]:
    files = _sources(benchmark, root, ("data/testmini-*.parquet", "testmini-*.parquet", "testmini.parquet"))

    def build(row: Row) -> EvalItem:
        metadata = row.get("metadata", {})
        # `query` is the question as MathVista's own evaluation asks it: with the hint that names the answer's
        # type and precision ("... with two decimal places ..."), and the choices; the bare question otherwise.
        question = str(row.get("query") or "").strip() or row.text("question")
        if (unit := row.get("unit")) and not row.get("query"):
            question = f"{question} (Unit: {unit})"
        # decoded_image is the embedded copy; image is the path inside images.zip.
        image = row.image("decoded_image", "image")
        meta = {key: row.get(key) for key in ("answer_type", "precision", "unit", "question_type")}
        meta.update({key: metadata.get(key) for key in ("category", "context", "grade", "skills", "source")})
        common = {"category": metadata.get("task"), "meta": meta}
        if row.require("question_type") == "multi_choice":
            options = [str(choice).strip() for choice in row.require("choices")]
            letter, _ = row.choice_answer(row.require("answer"), options, answer_format="text")
            return EvalItem(
                benchmark.name,
                str(row.require("pid")),
                question,
                image,
                letter,
                options=options,
                grader="multiple_choice",
                # The query prints the choices itself.
                prompt_template="{question}" if row.get("query") else DEFAULT_PROMPT_TEMPLATE,
                **common,
            )
        else:
            return EvalItem(
                benchmark.name, str(row.require("pid")), question, image, row.text("answer"), grader="math", **common
            )

    return per_row(_rows(benchmark, files, split="testmini", base_dir=root), build)


def _load_mathverse(benchmark: Benchmark, root: Path) -> Iterator[EvalItem | BadRow]:
    files = _sources(benchmark, root, ("testmini.parquet", "data/testmini-*.parquet"))

    def build(row: Row) -> EvalItem:
        metadata = row.get("metadata", {})
        # Vision-only problems print the whole question in the image; their `question`
        # can be empty, and `query_wo` then carries the instruction to read it there.
        question = row.get("question", "").strip() or row.text("query_wo")
        is_choice = row.require("question_type") == "multi-choice"
        answer = bare_letter(row.text("answer")) if is_choice else row.text("answer")
        return EvalItem(
            benchmark.name,
            str(row.require("sample_index")),
            question,
            row.image("image"),
            answer,
            category=row.get("problem_version"),
            grader="multiple_choice" if is_choice else "math",
            meta={
                "problem_index": row.get("problem_index"),
                "question_for_eval": row.get("question_for_eval"),
                "subject": metadata.get("subject"),
                "subfield": metadata.get("subfield"),
                "options": options_for_grading(question, answer) if is_choice else None,
            },
        )

    return per_row(_rows(benchmark, files, split="testmini", base_dir=root), build)


# --- General and spatial suites ---------------------------------------------------------------------


def _capabilities(value: Any) -> list[str]:
    """MM-Vet capabilities: a list in mm-vet.json, a ``"rec,ocr"`` string in lmms-lab/MMVet."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return sorted(str(item).strip() for item in items if str(item).strip())


def _load_mmvet(benchmark: Benchmark, root: Path) -> Iterator[EvalItem | BadRow]:
    # The official zip unpacks to mm-vet/ (mm-vet.json and images/ inside): read it where it lands too.
    if not (root / "mm-vet.json").is_file() and (root / "mm-vet" / "mm-vet.json").is_file():
        root = root / "mm-vet"
    files = _sources(benchmark, root, ("mm-vet.json", "data/test-*.parquet", "test-*.parquet"))
    image_dir = root / "images" if files[0].name == "mm-vet.json" else root
    if not image_dir.is_dir():
        raise BenchmarkDataError(
            f"{benchmark.name}: {image_dir} does not exist (mm-vet.json names files inside it).\n"
            f"Expected layout: {benchmark.expected_layout}"
        )

    def build(row: Row) -> EvalItem:
        # mm-vet.json keys its rows, lmms-lab/MMVet has question_id, the authors' Hub copy id.
        key = row.get("__key__") or row.get("question_id")
        item_id = str(key if key is not None else row.require("id"))
        capabilities = _capabilities(row.require("capability"))
        return EvalItem(
            benchmark.name,
            item_id,
            row.text("question"),
            row.image("imagename", "image"),
            row.text("answer"),
            category=",".join(capabilities),
            grader="judge",
            # MM-Vet's own grader gives each answer a 0-1 score from an LLM judge (vigos.eval.protocol_grading).
            meta={"capabilities": capabilities, "partial_credit": True},
        )

    return per_row(_rows(benchmark, files, split="test", base_dir=image_dir), build)


def _load_mmsi(benchmark: Benchmark, root: Path) -> Iterator[EvalItem | BadRow]:
    files = _sources(benchmark, root, ("MMSI_Bench.parquet", "*.parquet", "data/*.parquet"))

    def build(row: Row) -> EvalItem:
        images = row.images("images")
        question, answer = row.text("question"), bare_letter(row.text("answer"))
        return EvalItem(
            benchmark.name,
            str(row.require("id")),
            question,
            item_images(images),
            answer,
            category=row.get("question_type"),
            grader="multiple_choice",
            meta={
                "thought": row.get("thought"),
                "difficulty": row.get("difficulty"),
                "options": options_for_grading(question, answer),
            },
        )

    return per_row(_rows(benchmark, files, split="test", base_dir=root), build)


# RealWorldQA questions end with an answer-format instruction that would contradict the
# student prompt's \boxed{} format; it is cut off and kept in meta.
_REALWORLDQA_INSTRUCTION = re.compile(r"\s*(Please answer directly with [^\n]*)$")


def _load_realworldqa(benchmark: Benchmark, root: Path) -> Iterator[EvalItem | BadRow]:
    # Shards are test-*.parquet now, test_0412-*.parquet in older snapshots of the dataset.
    patterns = ("data/test-*.parquet", "data/test_*.parquet", "test-*.parquet", "test_*.parquet", "*.parquet")
    files = _sources(benchmark, root, patterns)
    counter = itertools.count()

    def build(row: Row) -> EvalItem:
        index = next(counter)
        question = row.text("question")
        instruction = _REALWORLDQA_INSTRUCTION.search(question)
        if instruction:
            question = question[: instruction.start()].rstrip()
        answer = row.text("answer")
        is_choice = re.fullmatch(r"[A-F]", answer) is not None
        return EvalItem(
            benchmark.name,
            str(row.get("id", index)),
            question,
            row.image("image"),
            answer,
            grader="multiple_choice" if is_choice else "auto",
            meta={
                "instruction": instruction.group(1) if instruction else None,
                "options": options_for_grading(question, answer) if is_choice else None,
            },
        )

    return per_row(_rows(benchmark, files, split="test", base_dir=root), build)


def _load_cvbench(benchmark: Benchmark, root: Path) -> Iterator[EvalItem | BadRow]:
    files = _sources(benchmark, root, ("test_[23]d.parquet", "test.parquet", "data/test-*.parquet"))
    names = {path.name for path in files}
    if names & {"test_2d.parquet", "test_3d.parquet"} and len(names) == 1:
        missing = ({"test_2d.parquet", "test_3d.parquet"} - names).pop()
        raise BenchmarkDataError(
            f"{benchmark.name}: {root / missing} is missing (CV-Bench scores average 2D and 3D).\n"
            f"Expected layout: {benchmark.expected_layout}"
        )

    def build(row: Row) -> EvalItem:
        options = [str(choice).strip() for choice in row.require("choices")]
        letter, _ = row.choice_answer(row.require("answer"), options, answer_format="letter")
        kind = row.get("type", "")
        return EvalItem(
            benchmark.name,
            f"{kind}_{row.require('idx')}".lstrip("_"),
            row.text("question"),
            row.image("image"),
            letter,
            options=options,
            category=row.get("task"),
            # The source (ADE20K, COCO, Omni3D) is what CV-Bench's own score averages over (cvbench_score).
            split=row.get("source"),
            grader="multiple_choice",
            # `prompt` is the question with its lettered choices, as CV-Bench's own evaluation asks it.
            meta={"type": kind, "source": row.get("source"), "prompt": row.get("prompt")},
        )

    return per_row(_rows(benchmark, files, split="test", base_dir=root), build)


# --- Registry -------------------------------------------------------------------------------------

BENCHMARKS: dict[str, Benchmark] = {}


def _squash(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name.lower())


def register_benchmark(benchmark: Benchmark, *, replace: bool = False) -> None:
    """Add ``benchmark`` to :data:`BENCHMARKS` (an existing name needs ``replace=True``)."""
    if not re.fullmatch(_NAME, benchmark.name):
        raise ValueError(f"benchmark name {benchmark.name!r}: use lowercase letters, digits, '.', '_' or '-'")
    clash = next((name for name in BENCHMARKS if _squash(name) == _squash(benchmark.name)), None)
    if clash is not None and not replace:
        raise ValueError(f"benchmark {benchmark.name!r} clashes with registered {clash!r}; pass replace=True")
    if clash is not None:
        del BENCHMARKS[clash]
    BENCHMARKS[benchmark.name] = benchmark


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark called ``name`` (case, ``-`` and ``_`` ignored), or one a YAML file path describes."""
    squashed = _squash(name)
    for registered, benchmark in BENCHMARKS.items():
        if _squash(registered) == squashed:
            return benchmark
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        from vigos.eval.benchmark_yaml import benchmark_from_yaml  # deferred: it builds on this module

        return benchmark_from_yaml(name)
    close = difflib.get_close_matches(name.lower(), list(BENCHMARKS), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"unknown benchmark {name!r}.{hint} Known benchmarks: {', '.join(sorted(BENCHMARKS))}. "
        "A new benchmark can be described in a YAML file and given by its path."
    )


def load_benchmark(name: str, data_dir: str | Path, limit: int | None = None) -> list[EvalItem]:
    """Items of benchmark ``name`` read from its local copy under ``data_dir``."""
    return get_benchmark(name).load(data_dir, limit)


_BUILTINS = (
    Benchmark(
        "mmvet",
        "MM-Vet: 218 open-ended questions over six integrated capabilities, scored by an LLM judge.",
        "data_dir/mmvet/mm-vet.json (the official release: {id: {imagename, question, answer, capability}}) "
        "with data_dir/mmvet/images/<imagename> (or the zip as unpacked, data_dir/mmvet/mm-vet/...); or a "
        "parquet copy data_dir/mmvet/data/test-*.parquet: lmms-lab/MMVet (question_id, image, question, "
        "answer, capability as 'rec,ocr') or the authors' (id, image, question, answer, capability as a list).",
        _load_mmvet,
    ),
    Benchmark(
        "mmmu",
        "MMMU validation split: college-level multi-discipline questions, mostly multiple choice.",
        "a snapshot of MMMU/MMMU: data_dir/mmmu/<Subject>/validation-*.parquet (or lmms-lab/MMMU "
        "data_dir/mmmu/data/validation-*.parquet, or a save_to_disk folder) with fields id, question, options "
        "(string repr of a list), answer, image_1..image_7, question_type, subfield.",
        _load_mmmu,
    ),
    Benchmark(
        "mmmu-pro",
        "MMMU-Pro: the 10-option standard setting and the vision (screenshot) setting.",
        "a snapshot of MMMU/MMMU_Pro: data_dir/mmmu-pro/'standard (10 options)'/test-*.parquet (id, question, "
        "options, answer, image_1..image_7, subject) and data_dir/mmmu-pro/vision/test-*.parquet "
        "(id, image, options, answer, subject).",
        _load_mmmu_pro,
    ),
    Benchmark(
        "mathverse",
        "MathVerse testmini: diagram math problems in five text/vision versions.",
        "AI4Math/MathVerse testmini: data_dir/mathverse/testmini.parquet with fields sample_index, problem_index, "
        "problem_version, question, image, answer, question_type, metadata, query_wo, question_for_eval.",
        _load_mathverse,
    ),
    Benchmark(
        "mathvista",
        "MathVista testmini: 1,000 math questions over figures, charts and photos.",
        "AI4Math/MathVista testmini: data_dir/mathvista/data/testmini-*.parquet with fields pid, question, "
        "decoded_image (or image: a path under data_dir/mathvista/), choices, unit, precision, answer, "
        "question_type, answer_type, metadata.",
        _load_mathvista,
    ),
    Benchmark(
        "mmsi",
        "MMSI-Bench: 1,000 multiple-choice questions of multi-image spatial reasoning.",
        "RunsenXu/MMSI-Bench: data_dir/mmsi/MMSI_Bench.parquet with fields id, images (list of encoded images), "
        "question_type, question (options printed in it), answer (a letter), thought.",
        _load_mmsi,
    ),
    Benchmark(
        "realworldqa",
        "RealWorldQA: 765 real-world spatial questions from xAI.",
        "xai-org/RealworldQA: data_dir/realworldqa/data/test-*.parquet (test_0412-*.parquet in older snapshots) "
        "with fields image, question, answer.",
        _load_realworldqa,
    ),
    Benchmark(
        "cvbench",
        "CV-Bench: 2D (count, relation) and 3D (depth, distance) vision-centric multiple choice.",
        "nyu-visionx/CV-Bench: data_dir/cvbench/test_2d.parquet and test_3d.parquet (older releases: test.parquet) "
        "with fields idx, type, task, image, question, choices, answer ('(A)'), prompt, source.",
        _load_cvbench,
    ),
    Benchmark(
        "vilp-f",
        "ViLP-F: ViLP with the stated prior kept in the question (Score: conflicting images; Prior: agreeing).",
        "ViLP/ViLP: data_dir/vilp/ViLP.parquet (shared with vilp-p) with fields question_id, question, image1, "
        "answer1 (prior-agreeing), image2, answer2, image3, answer3 (prior-conflicting).",
        partial(load_vilp, with_fact=True),
        folder="vilp",
    ),
    Benchmark(
        "vilp-p",
        "ViLP-P: ViLP with the stated prior (the first sentence) removed from the question.",
        "ViLP/ViLP: data_dir/vilp/ViLP.parquet (shared with vilp-f) with fields question_id, question, image1, "
        "answer1 (prior-agreeing), image2, answer2, image3, answer3 (prior-conflicting).",
        partial(load_vilp, with_fact=False),
        folder="vilp",
    ),
)
for _benchmark in _BUILTINS:
    register_benchmark(_benchmark)
