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

import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from vigos.eval.benchmarks import format_options, get_benchmark, option_letter

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 40)}
SHAPES = ("circle", "square", "triangle", "star")
_DRAWN_SHAPES = SHAPES[:3]
_SIZE = (96, 72)


@dataclass(frozen=True)
class Scene:
    """What a fixture image shows: ``count`` shapes of one kind and colour."""

    shape: str
    color: str
    count: int

    def draw(self, size: tuple[int, int] = _SIZE) -> Image.Image:
        image = Image.new("RGB", size, "white")
        pen = ImageDraw.Draw(image)
        cell = size[0] // max(self.count, 1)
        radius = min(cell, size[1]) // 3
        for i in range(self.count):
            cx, cy = cell * i + cell // 2, size[1] // 2
            box = (cx - radius, cy - radius, cx + radius, cy + radius)
            fill = COLORS[self.color]
            if self.shape == "circle":
                pen.ellipse(box, fill=fill)
            elif self.shape == "square":
                pen.rectangle(box, fill=fill)
            else:
                pen.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill)
        return image


def _scene(rng: random.Random, **fixed: Any) -> Scene:
    values = {"shape": rng.choice(_DRAWN_SHAPES), "color": rng.choice(list(COLORS)), "count": rng.randint(1, 3)}
    return Scene(**{**values, **fixed})


def _text_image(lines: list[str]) -> Image.Image:
    """A screenshot-like image of text (MMMU-Pro's vision setting)."""
    image = Image.new("RGB", (320, 18 * len(lines) + 12), "white")
    pen = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        pen.text((8, 6 + 18 * i), line, fill="black")
    return image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _write_parquet(path: Path, rows: list[dict[str, Any]], features: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([features.encode_example(row) for row in rows], schema=features.arrow_schema)
    pq.write_table(table, path)


def _shape_choice(rng: random.Random, scene: Scene) -> tuple[list[str], str]:
    """Shape-name options in a random order and the letter of the one drawn."""
    options = list(SHAPES)
    rng.shuffle(options)
    return options, option_letter(options.index(scene.shape))


# --- one writer per benchmark --------------------------------------------------------------------


def _mmmu(root: Path, n: int, rng: random.Random) -> None:
    from datasets import Features, Image as ImageFeature, Value

    features = Features(
        {"id": Value("string"), "question": Value("string"), "options": Value("string"), "explanation": Value("string"),
         **{f"image_{i}": ImageFeature() for i in range(1, 8)},
         "img_type": Value("string"), "answer": Value("string"), "topic_difficulty": Value("string"),
         "question_type": Value("string"), "subfield": Value("string")}
    )
    by_subject: dict[str, list[dict[str, Any]]] = {"Art": [], "Math": []}
    for i in range(n):
        subject = ("Art", "Math")[i % 2]
        scene = _scene(rng)
        row: dict[str, Any] = {f"image_{k}": None for k in range(1, 8)}
        row.update(id=f"validation_{subject}_{len(by_subject[subject]) + 1}", explanation="", img_type="['Diagrams']",
                   topic_difficulty="Easy", subfield="Shapes", image_1=scene.draw())
        if i % 3 == 2:
            row.update(question=f"How many {scene.shape}s are shown in <image 1>?", options="[]",
                       answer=str(scene.count), question_type="open")
        elif i % 4 == 3:
            other = _scene(rng, count=4 - scene.count if scene.count != 2 else 3)
            row.update(question="Which image shows more shapes, <image 1> or <image 2>?",
                       options=str(["<image 1>", "<image 2>"]), image_2=other.draw(),
                       answer="A" if scene.count > other.count else "B", question_type="multiple-choice")
        else:
            options, letter = _shape_choice(rng, scene)
            row.update(question="<image 1> Which shape is drawn?", options=str(options), answer=letter,
                       question_type="multiple-choice")
        by_subject[subject].append(row)
    for subject, rows in by_subject.items():
        if rows:
            _write_parquet(root / subject / "validation-00000-of-00001.parquet", rows, features)


def _mmmu_pro(root: Path, n: int, rng: random.Random) -> None:
    from datasets import Features, Image as ImageFeature, Value

    standard = Features(
        {"id": Value("string"), "question": Value("string"), "options": Value("string"), "explanation": Value("string"),
         **{f"image_{i}": ImageFeature() for i in range(1, 8)},
         "img_type": Value("string"), "answer": Value("string"), "topic_difficulty": Value("string"),
         "subject": Value("string")}
    )
    vision = Features({"id": Value("string"), "image": ImageFeature(), "options": Value("string"),
                       "answer": Value("string"), "subject": Value("string")})
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
        standard_rows.append({f"image_{k}": None for k in range(2, 8)} | {
            "id": row_id, "question": question, "options": str(options), "explanation": "", "image_1": scene.draw(),
            "img_type": "['Diagrams']", "answer": letter, "topic_difficulty": "Easy", "subject": "Art"})
        screenshot = _text_image(["What does the picture show?", *format_options(options).splitlines()])
        vision_rows.append({"id": row_id, "image": screenshot, "options": str(options), "answer": letter,
                            "subject": "Art"})
    _write_parquet(root / "standard (10 options)" / "test-00000-of-00001.parquet", standard_rows, standard)
    _write_parquet(root / "vision" / "test-00000-of-00001.parquet", vision_rows, vision)


def _mathvista(root: Path, n: int, rng: random.Random) -> None:
    from datasets import Features, Image as ImageFeature, Sequence, Value

    metadata = {key: Value("string") for key in ("category", "context", "grade", "language", "source", "split", "task")}
    metadata.update(img_height=Value("int64"), img_width=Value("int64"), skills=Sequence(Value("string")))
    features = Features(
        {"pid": Value("string"), "question": Value("string"), "image": Value("string"), "decoded_image": ImageFeature(),
         "choices": Sequence(Value("string")), "unit": Value("string"), "precision": Value("float64"),
         "answer": Value("string"), "question_type": Value("string"), "answer_type": Value("string"),
         "metadata": metadata, "query": Value("string")}
    )
    rows = []
    for i in range(n):
        scene = _scene(rng)
        pid = str(i + 1)
        meta = {"category": "general-vqa", "context": "synthetic scene", "grade": "elementary school",
                "language": "english", "source": "vigos-fixture", "split": "testmini", "task": "figure question answering",
                "img_height": _SIZE[1], "img_width": _SIZE[0], "skills": ["arithmetic reasoning"]}
        row = {"pid": pid, "image": f"images/{pid}.jpg", "decoded_image": scene.draw(), "unit": None, "precision": None,
               "metadata": meta}
        if i % 2 == 0:
            choices = list(SHAPES)
            question = "Which shape is drawn in the image?"
            row.update(question=question, choices=choices, answer=scene.shape, question_type="multi_choice",
                       answer_type="text", query=f"Question: {question}\nChoices:\n{format_options(choices)}")
        else:
            question = f"How many {scene.shape}s are in the image?"
            row.update(question=question, choices=None, answer=str(scene.count), question_type="free_form",
                       answer_type="integer", query=f"Question: {question}")
        rows.append(row)
    _write_parquet(root / "data" / "testmini-00000-of-00001.parquet", rows, features)


_MATHVERSE_VERSIONS = ("Text Dominant", "Text Lite", "Vision Intensive", "Vision Dominant", "Vision Only")


def _mathverse(root: Path, n: int, rng: random.Random) -> None:
    from datasets import Features, Image as ImageFeature, Value

    features = Features(
        {"sample_index": Value("string"), "problem_index": Value("string"), "problem_version": Value("string"),
         "question": Value("string"), "image": ImageFeature(), "answer": Value("string"),
         "question_type": Value("string"),
         # Subfields of `metadata` beyond split/source are not verified against the release.
         "metadata": {key: Value("string") for key in ("split", "source", "subject", "subfield")},
         "query_wo": Value("string"), "query_cot": Value("string"), "question_for_eval": Value("string")}
    )
    rows = []
    for i in range(n):
        scene = _scene(rng)
        version = _MATHVERSE_VERSIONS[i % len(_MATHVERSE_VERSIONS)]
        if i % 2 == 0:
            options, letter = _shape_choice(rng, scene)
            text = "Which shape is drawn?\nChoices:\n" + "\n".join(f"{option_letter(k)}:{o}" for k, o in enumerate(options))
            question_type, answer = "multi-choice", letter
        else:
            text, question_type, answer = f"How many {scene.shape}s are drawn?", "free-form", str(scene.count)
        question = "" if version == "Vision Only" else text
        rows.append({
            "sample_index": str(i + 1), "problem_index": str(i // len(_MATHVERSE_VERSIONS) + 1),
            "problem_version": version, "question": question, "image": scene.draw(), "answer": answer,
            "question_type": question_type,
            "metadata": {"split": "testmini", "source": "vigos-fixture", "subject": "plane geometry", "subfield": "shape"},
            "query_wo": "According to the question shown in the image, please directly answer the question.\n"
                        f"Question: {question}",
            "query_cot": f"Please first conduct reasoning, and then answer the question.\nQuestion: {question}",
            "question_for_eval": text,
        })
    _write_parquet(root / "testmini.parquet", rows, features)


def _mmvet(root: Path, n: int, rng: random.Random) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    entries = {}
    for i in range(n):
        scene = _scene(rng)
        name = f"v1_{i}.png"
        scene.draw().save(root / "images" / name)
        if i % 2 == 0:
            entry = {"question": f"How many {scene.shape}s are there?", "answer": f"{scene.count}",
                     "capability": ["rec", "math"]}
        else:
            entry = {"question": f"What colour are the {scene.shape}s?", "answer": f"{scene.color} <OR> {scene.color}ish",
                     "capability": ["rec"]}
        entries[f"v1_{i}"] = {"imagename": name, **entry}
    (root / "mm-vet.json").write_text(json.dumps(entries, indent=2), encoding="utf-8")


def _mmsi(root: Path, n: int, rng: random.Random) -> None:
    from datasets import Features, Sequence, Value

    features = Features(
        {"id": Value("int64"), "images": Sequence(Value("binary")), "question_type": Value("string"),
         "question": Value("string"), "answer": Value("string"), "thought": Value("string"),
         # Not used by the loader; dtypes not verified against the release.
         "mean_normed_duration_seconds": Value("float64"), "difficulty": Value("string")}
    )
    rows = []
    for i in range(n):
        first, second = _scene(rng), _scene(rng)
        options = ["the first view", "the second view", "both the same", "neither"]
        truth = 2 if first.count == second.count else (0 if first.count > second.count else 1)
        question = "Which view shows more shapes?\nOptions: " + ", ".join(
            f"{option_letter(k)}: {o}" for k, o in enumerate(options))
        rows.append({"id": i, "images": [_png(first.draw()), _png(second.draw())], "question_type": "Attribute (Meas.)",
                     "question": question, "answer": option_letter(truth),
                     "thought": f"The first view has {first.count}, the second {second.count}.",
                     "mean_normed_duration_seconds": 1.0, "difficulty": "easy"})
    _write_parquet(root / "MMSI_Bench.parquet", rows, features)


def _realworldqa(root: Path, n: int, rng: random.Random) -> None:
    from datasets import Features, Image as ImageFeature, Value

    features = Features({"image": ImageFeature(), "question": Value("string"), "answer": Value("string")})
    rows = []
    for i in range(n):
        scene = _scene(rng)
        if i % 2 == 0:
            options, letter = _shape_choice(rng, scene)
            question = ("Which shape is in the picture?\n" + format_options(options)
                        + "\nPlease answer directly with only the letter of the correct option and nothing else.")
            rows.append({"image": scene.draw(), "question": question, "answer": letter})
        else:
            question = f"How many {scene.shape}s are there? Please answer directly with a single word or number."
            rows.append({"image": scene.draw(), "question": question, "answer": str(scene.count)})
    _write_parquet(root / "data" / "test-00000-of-00001.parquet", rows, features)


def _cvbench(root: Path, n: int, rng: random.Random) -> None:
    from datasets import Features, Image as ImageFeature, Sequence, Value

    features = Features(
        {"idx": Value("int64"), "type": Value("string"), "task": Value("string"), "image": ImageFeature(),
         "question": Value("string"), "choices": Sequence(Value("string")), "answer": Value("string"),
         "prompt": Value("string"), "filename": Value("string"), "source": Value("string"),
         "source_dataset": Value("string"), "source_filename": Value("string"), "target_class": Value("string"),
         # Not used by the loader; dtypes not verified against the release.
         "target_size": Value("int64"), "bbox": Sequence(Sequence(Value("float64")))}
    )
    two_d = max(1, (n + 1) // 2)
    tables: dict[str, list[dict[str, Any]]] = {"2D": [], "3D": []}
    for i in range(max(n, 2)):
        kind = "2D" if i < two_d else "3D"
        scene = _scene(rng)
        if kind == "2D":
            task, question, choices = "Count", f"How many {scene.shape}s are in the image?", ["0", "1", "2", "3"]
            truth = choices.index(str(scene.count))
        else:
            task, question, choices = "Depth", f"Which is closer to the camera, the left or the right {scene.shape}?", \
                ["the left one", "the right one"]
            truth = 0
        lettered = "\n".join(f"({option_letter(k)}) {c}" for k, c in enumerate(choices))
        tables[kind].append({
            "idx": i, "type": kind, "task": task, "image": scene.draw(), "question": question, "choices": choices,
            "answer": f"({option_letter(truth)})", "prompt": f"{question} Select from the following choices.\n{lettered}",
            "filename": f"img/{kind}/{task.lower()}/fixture_{i}.png", "source": "ADE20K" if kind == "2D" else "Omni3D",
            "source_dataset": "fixture", "source_filename": f"fixture_{i}.png", "target_class": scene.shape,
            "target_size": None, "bbox": None})
    _write_parquet(root / "test_2d.parquet", tables["2D"], features)
    _write_parquet(root / "test_3d.parquet", tables["3D"], features)


_VILP_FACTS = (
    ("The sun is yellow.", "circle", "yellow"),
    ("Grass is green.", "square", "green"),
    ("The sky is blue.", "square", "blue"),
    ("Strawberries are red.", "circle", "red"),
)


def _vilp(root: Path, n: int, rng: random.Random) -> None:
    from datasets import Features, Value

    # The official evaluation script opens image1..image3 with Image.open(BytesIO(value)),
    # so they are written as raw encoded bytes.
    features = Features({"question_id": Value("int64"), "question": Value("string"),
                         **{f"{kind}{k}": Value("binary" if kind == "image" else "string")
                            for k in (1, 2, 3) for kind in ("image", "answer")}})
    rows = []
    for i in range(n):
        fact, shape, prior = _VILP_FACTS[i % len(_VILP_FACTS)]
        others = rng.sample([color for color in COLORS if color != prior], 2)
        row: dict[str, Any] = {"question_id": i, "question": f"{fact} What color is the {shape} in the image?"}
        for k, color in enumerate((prior, *others), start=1):
            row[f"image{k}"] = _png(Scene(shape, color, 1).draw())
            row[f"answer{k}"] = color
        rows.append(row)
    _write_parquet(root / "ViLP.parquet", rows, features)


FIXTURE_WRITERS: dict[str, Callable[[Path, int, random.Random], None]] = {
    "mmvet": _mmvet, "mmmu": _mmmu, "mmmu-pro": _mmmu_pro, "mathverse": _mathverse, "mathvista": _mathvista,
    "mmsi": _mmsi, "realworldqa": _realworldqa, "cvbench": _cvbench, "vilp-f": _vilp, "vilp-p": _vilp,
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
        raise ValueError(f"no fixture writer for benchmark {benchmark.name!r}; built-in ones: {sorted(FIXTURE_WRITERS)}")
    root = benchmark.local_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    writer(root, n, random.Random(seed))
    return root

