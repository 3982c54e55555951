"""Tiny local copies of each benchmark, written in the benchmark's published schema.

``write_fixture(name, out_dir)`` draws a few images of coloured shapes with
Pillow and writes them, with questions about them (mostly answerable from
the picture), in the files and columns the real release uses (parquet shards carry
the ``datasets`` feature metadata a hub snapshot carries). The result loads
with ``load_benchmark(name, out_dir)``; tests and the end-to-end demo use it
because real benchmarks cannot be downloaded here.

Columns the loaders ignore and whose published dtype could not be checked
are marked so where they are written.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vigos.eval.benchmarks import get_benchmark
from vigos.eval.fixture_scenes import _DRAWN_SHAPES, _SIZE, SHAPES, _scene, _shape_choice, _text_image, _write_parquet
from vigos.eval.fixtures_general import _cvbench, _mmsi, _mmvet, _realworldqa, _vilp
from vigos.eval.items import format_options
from vigos.eval.sources import option_letter

# --- one writer per benchmark --------------------------------------------------------------------


def _mmmu(root: Path, n: int, rng: random.Random) -> None:
    from datasets import Features, Value
    from datasets import Image as ImageFeature

    features = Features(
        {
            "id": Value("string"),
            "question": Value("string"),
            "options": Value("string"),
            "explanation": Value("string"),
            **{f"image_{i}": ImageFeature() for i in range(1, 8)},
            "img_type": Value("string"),
            "answer": Value("string"),
            "topic_difficulty": Value("string"),
            "question_type": Value("string"),
            "subfield": Value("string"),
        }
    )
    by_subject: dict[str, list[dict[str, Any]]] = {"Art": [], "Math": []}
    for i in range(n):
        subject = ("Art", "Math")[i % 2]
        scene = _scene(rng)
        row: dict[str, Any] = {f"image_{k}": None for k in range(1, 8)}
        row.update(
            id=f"validation_{subject}_{len(by_subject[subject]) + 1}",
            explanation="",
            img_type="['Diagrams']",
            topic_difficulty="Easy",
            subfield="Shapes",
            image_1=scene.draw(),
        )
        if i % 3 == 2:
            row.update(
                question=f"How many {scene.shape}s are shown in <image 1>?",
                options="[]",
                answer=str(scene.count),
                question_type="open",
            )
        elif i % 4 == 3:
            other = _scene(rng, count=4 - scene.count if scene.count != 2 else 3)
            row.update(
                question="Which image shows more shapes, <image 1> or <image 2>?",
                options=str(["<image 1>", "<image 2>"]),
                image_2=other.draw(),
                answer="A" if scene.count > other.count else "B",
                question_type="multiple-choice",
            )
        else:
            options, letter = _shape_choice(rng, scene)
            row.update(
                question="<image 1> Which shape is drawn?",
                options=str(options),
                answer=letter,
                question_type="multiple-choice",
            )
        by_subject[subject].append(row)
    for subject, rows in by_subject.items():
        if rows:
            _write_parquet(root / subject / "validation-00000-of-00001.parquet", rows, features)


def _mmmu_pro(root: Path, n: int, rng: random.Random) -> None:
    from datasets import Features, Value
    from datasets import Image as ImageFeature

    standard = Features(
        {
            "id": Value("string"),
            "question": Value("string"),
            "options": Value("string"),
            "explanation": Value("string"),
            **{f"image_{i}": ImageFeature() for i in range(1, 8)},
            "img_type": Value("string"),
            "answer": Value("string"),
            "topic_difficulty": Value("string"),
            "subject": Value("string"),
        }
    )
    vision = Features(
        {
            "id": Value("string"),
            "image": ImageFeature(),
            "options": Value("string"),
            "answer": Value("string"),
            "subject": Value("string"),
        }
    )
    names = [f"{count} {color} {shape}" for count in (1, 2, 3) for color in ("red", "blue") for shape in _DRAWN_SHAPES]
    standard_rows, vision_rows = [], []
    for i in range(n):
        scene = _scene(rng, color=rng.choice(("red", "blue")))
        truth = f"{scene.count} {scene.color} {scene.shape}"
        options = [truth, *rng.sample([name for name in names if name != truth], 9)]
        rng.shuffle(options)
        letter = option_letter(options.index(truth))
        question = "<image 1> What does the image show (count, colour, shape)?"
        row_id = f"test_Art_{i + 1}"
        standard_rows.append(
            {f"image_{k}": None for k in range(2, 8)}
            | {
                "id": row_id,
                "question": question,
                "options": str(options),
                "explanation": "",
                "image_1": scene.draw(),
                "img_type": "['Diagrams']",
                "answer": letter,
                "topic_difficulty": "Easy",
                "subject": "Art",
            }
        )
        screenshot = _text_image(["What does the picture show?", *format_options(options).splitlines()])
        vision_rows.append(
            {"id": row_id, "image": screenshot, "options": str(options), "answer": letter, "subject": "Art"}
        )
    _write_parquet(root / "standard (10 options)" / "test-00000-of-00001.parquet", standard_rows, standard)
    _write_parquet(root / "vision" / "test-00000-of-00001.parquet", vision_rows, vision)


def _mathvista(root: Path, n: int, rng: random.Random) -> None:
    from datasets import Features, Sequence, Value
    from datasets import Image as ImageFeature

    metadata = {key: Value("string") for key in ("category", "context", "grade", "language", "source", "split", "task")}
    metadata.update(img_height=Value("int64"), img_width=Value("int64"), skills=Sequence(Value("string")))
    features = Features(
        {
            "pid": Value("string"),
            "question": Value("string"),
            "image": Value("string"),
            "decoded_image": ImageFeature(),
            "choices": Sequence(Value("string")),
            "unit": Value("string"),
            "precision": Value("float64"),
            "answer": Value("string"),
            "question_type": Value("string"),
            "answer_type": Value("string"),
            "metadata": metadata,
            "query": Value("string"),
        }
    )
    rows = []
    for i in range(n):
        scene = _scene(rng)
        pid = str(i + 1)
        meta = {
            "category": "general-vqa",
            "context": "synthetic scene",
            "grade": "elementary school",
            "language": "english",
            "source": "vigos-fixture",
            "split": "testmini",
            "task": "figure question answering",
            "img_height": _SIZE[1],
            "img_width": _SIZE[0],
            "skills": ["arithmetic reasoning"],
        }
        row = {
            "pid": pid,
            "image": f"images/{pid}.jpg",
            "decoded_image": scene.draw(),
            "unit": None,
            "precision": None,
            "metadata": meta,
        }
        if i % 2 == 0:
            choices = list(SHAPES)
            question = "Which shape is drawn in the image?"
            row.update(
                question=question,
                choices=choices,
                answer=scene.shape,
                question_type="multi_choice",
                answer_type="text",
                query=f"Question: {question}\nChoices:\n{format_options(choices)}",
            )
        else:
            question = f"How many {scene.shape}s are in the image?"
            row.update(
                question=question,
                choices=None,
                answer=str(scene.count),
                question_type="free_form",
                answer_type="integer",
                query=f"Question: {question}",
            )
        rows.append(row)
    _write_parquet(root / "data" / "testmini-00000-of-00001.parquet", rows, features)


_MATHVERSE_VERSIONS = ("Text Dominant", "Text Lite", "Vision Intensive", "Vision Dominant", "Vision Only")


def _mathverse(root: Path, n: int, rng: random.Random) -> None:
    from datasets import Features, Value
    from datasets import Image as ImageFeature

    features = Features(
        {
            "sample_index": Value("string"),
            "problem_index": Value("string"),
            "problem_version": Value("string"),
            "question": Value("string"),
            "image": ImageFeature(),
            "answer": Value("string"),
            "question_type": Value("string"),
            # Subfields of `metadata` beyond split/source are not verified against the release.
            "metadata": {key: Value("string") for key in ("split", "source", "subject", "subfield")},
            "query_wo": Value("string"),
            "query_cot": Value("string"),
            "question_for_eval": Value("string"),
        }
    )
    rows = []
    for i in range(n):
        scene = _scene(rng)
        version = _MATHVERSE_VERSIONS[i % len(_MATHVERSE_VERSIONS)]
        if i % 2 == 0:
            options, letter = _shape_choice(rng, scene)
            text = "Which shape is drawn?\nChoices:\n" + "\n".join(
                f"{option_letter(k)}:{o}" for k, o in enumerate(options)
            )
            question_type, answer = "multi-choice", letter
        else:
            text, question_type, answer = f"How many {scene.shape}s are drawn?", "free-form", str(scene.count)
        question = "" if version == "Vision Only" else text
        rows.append(
            {
                "sample_index": str(i + 1),
                "problem_index": str(i // len(_MATHVERSE_VERSIONS) + 1),
                "problem_version": version,
                "question": question,
                "image": scene.draw(),
                "answer": answer,
                "question_type": question_type,
                "metadata": {
                    "split": "testmini",
                    "source": "vigos-fixture",
                    "subject": "plane geometry",
                    "subfield": "shape",
                },
                "query_wo": "According to the question shown in the image, please directly answer the question.\n"
                f"Question: {question}",
                "query_cot": f"Please first conduct reasoning, and then answer the question.\nQuestion: {question}",
                "question_for_eval": text,
            }
        )
    _write_parquet(root / "testmini.parquet", rows, features)


FIXTURE_WRITERS: dict[str, Callable[[Path, int, random.Random], None]] = {
    "mmvet": _mmvet,
    "mmmu": _mmmu,
    "mmmu-pro": _mmmu_pro,
    "mathverse": _mathverse,
    "mathvista": _mathvista,
    "mmsi": _mmsi,
    "realworldqa": _realworldqa,
    "cvbench": _cvbench,
    "vilp-f": _vilp,
    "vilp-p": _vilp,
}


def write_fixture(name: str, out_dir: str | Path, n: int = 4, seed: int = 0) -> Path:
    """Write a tiny copy of benchmark ``name`` (``n`` published rows) under ``out_dir``; return its folder.

    The folder is the one ``load_benchmark(name, out_dir)`` reads
    (``out_dir/<name>/``; ``out_dir/vilp/`` for both ViLP variants).
    MMMU-Pro writes ``n`` rows in each of its two settings, ViLP rows hold
    three images each, and CV-Bench writes at least one row to each of its
    2D and 3D files.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    benchmark = get_benchmark(name)
    writer = FIXTURE_WRITERS.get(benchmark.name)
    if writer is None:
        raise ValueError(
            f"no fixture writer for benchmark {benchmark.name!r}; built-in ones: {sorted(FIXTURE_WRITERS)}"
        )
    root = benchmark.local_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    writer(root, n, random.Random(seed))
    return root
