"""Fixture writers for the general and grounding benchmarks: MM-Vet, MMSI-Bench, RealWorldQA, CV-Bench, ViLP."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from vigos.eval.fixture_scenes import COLORS, Scene, _png, _scene, _shape_choice, _write_parquet
from vigos.eval.items import format_options
from vigos.eval.sources import option_letter


def _mmvet(root: Path, n: int, rng: random.Random) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    entries = {}
    for i in range(n):
        scene = _scene(rng)
        name = f"v1_{i}.png"
        scene.draw().save(root / "images" / name)
        if i % 2 == 0:
            entry = {
                "question": f"How many {scene.shape}s are there?",
                "answer": f"{scene.count}",
                "capability": ["rec", "math"],
            }
        else:
            entry = {
                "question": f"What colour are the {scene.shape}s?",
                "answer": f"{scene.color} <OR> {scene.color}ish",
                "capability": ["rec"],
            }
        entries[f"v1_{i}"] = {"imagename": name, **entry}
    (root / "mm-vet.json").write_text(json.dumps(entries, indent=2), encoding="utf-8")


def _mmsi(root: Path, n: int, rng: random.Random) -> None:
    from datasets import Features, Sequence, Value

    features = Features(
        {
            "id": Value("int64"),
            "images": Sequence(Value("binary")),
            "question_type": Value("string"),
            "question": Value("string"),
            "answer": Value("string"),
            "thought": Value("string"),
            # Not used by the loader; dtypes not verified against the release.
            "mean_normed_duration_seconds": Value("float64"),
            "difficulty": Value("string"),
        }
    )
    rows = []
    for i in range(n):
        first, second = _scene(rng), _scene(rng)
        options = ["the first view", "the second view", "both the same", "neither"]
        truth = 2 if first.count == second.count else (0 if first.count > second.count else 1)
        question = "Which view shows more shapes?\nOptions: " + ", ".join(
            f"{option_letter(k)}: {o}" for k, o in enumerate(options)
        )
        rows.append(
            {
                "id": i,
                "images": [_png(first.draw()), _png(second.draw())],
                "question_type": "Attribute (Meas.)",
                "question": question,
                "answer": option_letter(truth),
                "thought": f"The first view has {first.count}, the second {second.count}.",
                "mean_normed_duration_seconds": 1.0,
                "difficulty": "easy",
            }
        )
    _write_parquet(root / "MMSI_Bench.parquet", rows, features)


def _realworldqa(root: Path, n: int, rng: random.Random) -> None:
    from datasets import Features, Value
    from datasets import Image as ImageFeature

    features = Features({"image": ImageFeature(), "question": Value("string"), "answer": Value("string")})
    rows = []
    for i in range(n):
        scene = _scene(rng)
        if i % 2 == 0:
            options, letter = _shape_choice(rng, scene)
            question = (
                "Which shape is in the picture?\n"
                + format_options(options)
                + "\nPlease answer directly with only the letter of the correct option and nothing else."
            )
            rows.append({"image": scene.draw(), "question": question, "answer": letter})
        else:
            question = f"How many {scene.shape}s are there? Please answer directly with a single word or number."
            rows.append({"image": scene.draw(), "question": question, "answer": str(scene.count)})
    _write_parquet(root / "data" / "test-00000-of-00001.parquet", rows, features)


def _cvbench(root: Path, n: int, rng: random.Random) -> None:
    from datasets import Features, Sequence, Value
    from datasets import Image as ImageFeature

    features = Features(
        {
            "idx": Value("int64"),
            "type": Value("string"),
            "task": Value("string"),
            "image": ImageFeature(),
            "question": Value("string"),
            "choices": Sequence(Value("string")),
            "answer": Value("string"),
            "prompt": Value("string"),
            "filename": Value("string"),
            "source": Value("string"),
            "source_dataset": Value("string"),
            "source_filename": Value("string"),
            "target_class": Value("string"),
            # Not used by the loader; dtypes not verified against the release.
            "target_size": Value("int64"),
            "bbox": Sequence(Sequence(Value("float64"))),
        }
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
            task, question, choices = (
                "Depth",
                f"Which is closer to the camera, the left or the right {scene.shape}?",
                ["the left one", "the right one"],
            )
            truth = 0
        lettered = "\n".join(f"({option_letter(k)}) {c}" for k, c in enumerate(choices))
        tables[kind].append(
            {
                "idx": i,
                "type": kind,
                "task": task,
                "image": scene.draw(),
                "question": question,
                "choices": choices,
                "answer": f"({option_letter(truth)})",
                "prompt": f"{question} Select from the following choices.\n{lettered}",
                "filename": f"img/{kind}/{task.lower()}/fixture_{i}.png",
                # 2D rows come from ADE20K and COCO, 3D ones from Omni3D, as in the release.
                "source": ("ADE20K" if i % 2 == 0 else "COCO") if kind == "2D" else "Omni3D",
                "source_dataset": "fixture",
                "source_filename": f"fixture_{i}.png",
                "target_class": scene.shape,
                "target_size": None,
                "bbox": None,
            }
        )
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
    features = Features(
        {
            "question_id": Value("int64"),
            "question": Value("string"),
            **{
                f"{kind}{k}": Value("binary" if kind == "image" else "string")
                for k in (1, 2, 3)
                for kind in ("image", "answer")
            },
        }
    )
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
