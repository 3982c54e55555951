"""Benchmarks described by a YAML file (vigos.eval.benchmark_yaml): fields, prompt, answer format, paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vigos.eval.benchmark_yaml import benchmark_from_yaml
from vigos.eval.benchmarks import BENCHMARKS, load_benchmark, register_benchmark
from vigos.eval.fixture_scenes import SHAPES
from vigos.eval.fixtures import write_fixture
from vigos.eval.sources import BenchmarkDataError

# --- YAML-described benchmarks ------------------------------------------------------------------------

YAML_SPEC = """\
name: shapes-qa
description: Shapes drawn by a test.
file: questions.jsonl
fields:
  id: qid
  question: text
  answer: gold
  image: picture
  options: choices
  category: kind
prompt: "Hint: {hint}\\n{question}\\n{options}\\nPick one."
answer_format: ANSWER_FORMAT
"""


def _write_yaml_benchmark(tmp_path: Path, answer_format: str = "auto") -> Path:
    data = tmp_path / "data" / "shapes-qa"
    (data / "img").mkdir(parents=True)
    rows = []
    for i, (shape, color) in enumerate([("circle", "red"), ("square", "blue"), ("circle", "green")]):
        Image.new("RGB", (10, 10), color).save(data / "img" / f"{i}.png")
        gold = {"auto": shape, "text": shape, "index": SHAPES.index(shape), "letter": "ABCD"[SHAPES.index(shape)]}
        rows.append(
            {
                "qid": f"q{i}",
                "text": f"Which shape is drawn in {color}?",
                "gold": gold[answer_format],
                "picture": f"img/{i}.png",
                "choices": list(SHAPES),
                "kind": color,
                "hint": "look closely",
            }
        )
    (data / "questions.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    spec = tmp_path / "shapes.yaml"
    spec.write_text(YAML_SPEC.replace("ANSWER_FORMAT", answer_format))
    return spec


@pytest.mark.parametrize("answer_format", ["auto", "text", "index", "letter"])
def test_yaml_benchmark_end_to_end(answer_format, tmp_path, registry):
    spec = _write_yaml_benchmark(tmp_path, answer_format)
    register_benchmark(benchmark_from_yaml(spec))

    items = load_benchmark("shapes-qa", tmp_path / "data")

    assert [item.id for item in items] == ["q0", "q1", "q2"]
    assert [item.answer for item in items] == ["A", "B", "A"]
    assert [item.category for item in items] == ["red", "blue", "green"]
    assert all(item.grader == "multiple_choice" and item.options == list(SHAPES) for item in items)
    assert items[1].image.getpixel((5, 5)) == (0, 0, 255)
    assert items[0].prompt_question() == (
        "Hint: look closely\nWhich shape is drawn in red?\nA. circle\nB. square\nC. triangle\nD. star\nPick one."
    )


def test_yaml_path_works_as_a_benchmark_name(tmp_path):
    spec = _write_yaml_benchmark(tmp_path)
    assert len(load_benchmark(str(spec), tmp_path / "data", limit=2)) == 2
    assert "shapes-qa" not in BENCHMARKS


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace("  image: picture\n", ""), r"'fields' lacks \['image'\]"),
        (lambda s: s + "grader: telepathy\n", r"unknown grader 'telepathy'; choose one of .*multiple_choice"),
        (lambda s: s + "greader: exact\n", r"unknown key\(s\) \['greader'\]"),
        (lambda s: s.replace("{question}", "{query}"), r"'prompt' must contain \{question\}"),
        (lambda s: s.replace("name: shapes-qa", "name: Shapes QA"), r"name 'Shapes QA'"),
        (lambda s: s.replace("answer_format: auto", "answer_format: fuzzy"), r"answer_format 'fuzzy'"),
    ],
)
def test_yaml_mistakes_are_named(edit, message, tmp_path):
    spec = _write_yaml_benchmark(tmp_path)
    spec.write_text(edit(spec.read_text()))
    with pytest.raises(BenchmarkDataError, match=message):
        benchmark_from_yaml(spec)


def test_yaml_column_missing_from_the_data_is_named(tmp_path):
    spec = _write_yaml_benchmark(tmp_path)
    spec.write_text(spec.read_text().replace("answer: gold", "answer: solution"))
    with pytest.raises(BenchmarkDataError, match=r"questions\.jsonl line 1 is missing field 'solution'"):
        load_benchmark(str(spec), tmp_path / "data")


# --- issue #13: paths out of the benchmark's folder, decompression bombs, 16-bit images ----------------------


def test_yaml_file_glob_must_stay_under_the_benchmark_folder_unless_allowed(tmp_path):
    spec = _write_yaml_benchmark(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "data" / "shapes-qa" / "questions.jsonl").rename(elsewhere / "questions.jsonl")
    (tmp_path / "data" / "shapes-qa" / "img").rename(elsewhere / "img")
    (tmp_path / "data" / "shapes-qa").rmdir()
    (tmp_path / "data" / "shapes-qa").mkdir()
    text = spec.read_text()
    for pattern in ("../../elsewhere/*.jsonl", str(elsewhere / "*.jsonl")):
        spec.write_text(text.replace("file: questions.jsonl", f"file: {pattern}"))
        with pytest.raises(BenchmarkDataError) as error:
            benchmark_from_yaml(spec)
        assert str(error.value) == (
            f"{spec}: 'file' {pattern!r} leads outside data_dir/shapes-qa/; name a file under "
            "it, or set allow_paths_outside: true to read it where it is"
        )
        spec.write_text(text.replace("file: questions.jsonl", f"file: {pattern}") + "allow_paths_outside: true\n")
        items = load_benchmark(str(spec), tmp_path / "data")
        assert [item.id for item in items] == ["q0", "q1", "q2"] and items[1].image.getpixel((5, 5)) == (0, 0, 255)
    spec.write_text(text + "allow_paths_outside: yes please\n")
    with pytest.raises(BenchmarkDataError, match=r"allow_paths_outside must be true or false; got 'yes please'"):
        benchmark_from_yaml(spec)


def test_yaml_row_image_paths_must_stay_under_the_benchmark_folder_unless_allowed(tmp_path):
    spec = _write_yaml_benchmark(tmp_path)
    data = tmp_path / "data" / "shapes-qa"
    Image.new("RGB", (10, 10), "red").save(tmp_path / "outside.png")
    rows = [json.loads(line) for line in (data / "questions.jsonl").read_text().splitlines()]
    rows[1]["picture"] = "../../outside.png"
    (data / "questions.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    with pytest.raises(BenchmarkDataError) as error:
        load_benchmark(str(spec), tmp_path / "data")
    assert str(error.value) == (
        f"shapes-qa: questions.jsonl line 2: image path '../../outside.png' (field 'picture') resolves to "
        f"{tmp_path / 'outside.png'}, outside the benchmark folder {data}; keep the images under it (a benchmark "
        "YAML may set allow_paths_outside: true).\nTo leave such rows out, use --bad-rows skip."
    )
    spec.write_text(spec.read_text() + "allow_paths_outside: true\n")
    assert load_benchmark(str(spec), tmp_path / "data")[1].image.getpixel((5, 5)) == (255, 0, 0)


def test_a_decompression_bomb_stops_the_benchmark_naming_its_row(tmp_path, monkeypatch):
    spec = _write_yaml_benchmark(tmp_path)
    write_fixture("mmmu", tmp_path / "parquet", n=2)
    shards = sorted((tmp_path / "parquet" / "mmmu").glob("*/*.parquet"))
    from datasets import Dataset

    # A saved dataset: iterating it decoded the images inside datasets, where a bomb raised naming no row.
    Dataset.from_parquet([str(p) for p in shards]).save_to_disk(str(tmp_path / "saved" / "mmmu"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # the shapes are 10x10: over twice the limit
    with pytest.raises(
        BenchmarkDataError,
        match=r"^shapes-qa: questions\.jsonl line 1: .*img/0\.png \(field "
        r"'picture'\) is not a readable image \(.*DecompressionBombError",
    ):
        load_benchmark(str(spec), tmp_path / "data")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(
        BenchmarkDataError,
        match=r"^mmmu: mmmu row 0: image field 'image_1' holds bytes that are not "
        r"an image Pillow can decode \(.*DecompressionBombError",
    ):
        load_benchmark("mmmu", tmp_path / "saved")
    with pytest.raises(
        BenchmarkDataError,
        match=r"^mmmu: validation-00000-of-00001\.parquet row 0: image field "
        r"'image_1' .*DecompressionBombError",
    ):
        load_benchmark("mmmu", tmp_path / "parquet")


def test_a_16_bit_benchmark_image_is_scaled_to_8_bits(tmp_path):
    spec = _write_yaml_benchmark(tmp_path)
    values = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (8, 1))
    Image.fromarray(values).save(tmp_path / "data" / "shapes-qa" / "img" / "0.png")
    row = np.asarray(load_benchmark(str(spec), tmp_path / "data")[0].image)[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0)
    assert np.mean(row == 255) < 0.05  # convert("RGB") made 98% of it white
