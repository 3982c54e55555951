"""Benchmark adapters read tiny copies written in each suite's published schema."""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from vigos.eval.benchmarks import BENCHMARKS, get_benchmark, load_benchmark, register_benchmark
from vigos.eval.fixture_scenes import COLORS
from vigos.eval.fixtures import FIXTURE_WRITERS, write_fixture
from vigos.eval.items import DEFAULT_GRADERS, Benchmark, EvalItem, format_options
from vigos.eval.sources import BenchmarkDataError

BUILTIN = sorted(FIXTURE_WRITERS)
N = 4
# Published rows per item: MMMU-Pro has two settings, each ViLP row three images.
ITEMS_PER_ROW = {"mmmu-pro": 2, "vilp-f": 3, "vilp-p": 3}


def _drop_column(path: Path, column: str) -> None:
    table = pq.read_table(path)
    pq.write_table(table.drop_columns([column]), path)


def test_every_paper_suite_is_registered_with_a_fixture_writer():
    expected = {
        "mmvet",
        "mmmu",
        "mmmu-pro",
        "mathverse",
        "mathvista",
        "mmsi",
        "realworldqa",
        "cvbench",
        "vilp-f",
        "vilp-p",
    }
    assert expected <= set(BENCHMARKS)
    assert set(FIXTURE_WRITERS) == expected


@pytest.mark.parametrize("name", BUILTIN)
def test_fixture_loads_into_well_formed_items(name, tmp_path):
    folder = write_fixture(name, tmp_path, n=N)
    assert folder == BENCHMARKS[name].local_dir(tmp_path)

    items = load_benchmark(name, tmp_path)

    assert len(items) == N * ITEMS_PER_ROW.get(name, 1)
    assert len({item.id for item in items}) == len(items)
    for item in items:
        assert item.benchmark == name
        assert item.question.strip() and item.answer.strip()
        images = item.image if isinstance(item.image, list) else [item.image]
        assert images and all(isinstance(image, Image.Image) and image.mode == "RGB" for image in images)
        assert item.grader in DEFAULT_GRADERS
        if item.options is not None:
            assert item.answer in string.ascii_uppercase[: len(item.options)]
            assert format_options(item.options) in item.prompt_question()
            assert item.prompt_question().startswith(item.question)
        if item.grader == "multiple_choice":
            assert len(item.answer) == 1 and item.answer in string.ascii_uppercase


@pytest.mark.parametrize("name", BUILTIN)
def test_limit_stops_early(name, tmp_path):
    write_fixture(name, tmp_path, n=N)
    assert len(load_benchmark(name, tmp_path, limit=2)) == 2
    with pytest.raises(ValueError, match="limit"):
        load_benchmark(name, tmp_path, limit=0)


def test_mmmu_keeps_subject_image_order_and_open_questions(tmp_path):
    write_fixture("mmmu", tmp_path, n=6)
    items = {item.id: item for item in load_benchmark("mmmu", tmp_path)}
    assert {item.category for item in items.values()} == {"Art", "Math"}
    # Each image its own, in order, so that <image 1> and <image 2> resolve.
    two_images = [item for item in items.values() if isinstance(item.image, list)]
    assert two_images and all(len(item.image) == 2 for item in two_images)
    assert all(item.options == ["<image 1>", "<image 2>"] for item in two_images)
    open_items = [item for item in items.values() if item.options is None]
    assert open_items and all(item.grader == "auto" and item.answer.isdigit() for item in open_items)


def test_mmmu_pro_vision_setting_does_not_print_options(tmp_path):
    write_fixture("mmmu-pro", tmp_path, n=3)
    items = load_benchmark("mmmu-pro", tmp_path)
    standard = {item.id.split(":", 1)[1]: item for item in items if item.split == "standard-10"}
    vision = {item.id.split(":", 1)[1]: item for item in items if item.split == "vision"}
    assert standard.keys() == vision.keys()
    for key, item in vision.items():
        assert item.options is None and "A." not in item.prompt_question()
        assert item.meta["options"] == standard[key].options and len(item.meta["options"]) == 10
        assert item.answer == standard[key].answer


def test_mathvista_maps_choice_text_to_letter_and_keeps_free_form(tmp_path):
    write_fixture("mathvista", tmp_path, n=4)
    rows = pq.read_table(tmp_path / "mathvista" / "data" / "testmini-00000-of-00001.parquet").to_pylist()
    for row, item in zip(rows, load_benchmark("mathvista", tmp_path), strict=True):
        if row["question_type"] == "multi_choice":
            assert item.options[ord(item.answer) - ord("A")] == row["answer"] and item.grader == "multiple_choice"
        else:
            assert item.answer == row["answer"] and item.grader == "math" and item.options is None


def test_mathverse_vision_only_question_falls_back_to_query(tmp_path):
    write_fixture("mathverse", tmp_path, n=5)
    items = load_benchmark("mathverse", tmp_path)
    vision_only = [item for item in items if item.category == "Vision Only"]
    assert vision_only and all(item.question.startswith("According to the question shown") for item in vision_only)


def test_realworldqa_moves_answer_instruction_to_meta(tmp_path):
    write_fixture("realworldqa", tmp_path, n=2)
    for item in load_benchmark("realworldqa", tmp_path):
        assert "Please answer directly" not in item.question
        assert item.meta["instruction"].startswith("Please answer directly")


def test_cvbench_reads_both_files_and_strips_answer_parentheses(tmp_path):
    write_fixture("cvbench", tmp_path, n=4)
    items = load_benchmark("cvbench", tmp_path)
    assert {item.category for item in items} == {"Count", "Depth"}
    assert {item.meta["type"] for item in items} == {"2D", "3D"}


def test_mmsi_shows_each_view_as_its_own_image(tmp_path):
    write_fixture("mmsi", tmp_path, n=2)
    for item in load_benchmark("mmsi", tmp_path):
        assert isinstance(item.image, list) and len(item.image) == 2
        assert "Options:" in item.question and item.options is None


def test_vilp_items_split_prior_and_conflict_and_match_their_images(tmp_path):
    write_fixture("vilp-f", tmp_path, n=4)
    with_fact = load_benchmark("vilp-f", tmp_path)
    without_fact = load_benchmark("vilp-p", tmp_path)
    for f_item, p_item in zip(with_fact, without_fact, strict=True):
        assert (f_item.id, f_item.answer, f_item.conflict) == (p_item.id, p_item.answer, p_item.conflict)
        assert f_item.conflict is (f_item.meta["image_index"] != 1)
        assert f_item.split == ("conflict" if f_item.conflict else "agree")
        fact = f_item.meta["published_question"].split(".")[0]
        assert fact in f_item.question and fact not in p_item.question
        assert f_item.question.startswith("Please answer with one word:")
        center = f_item.image.getpixel((f_item.image.width // 2, f_item.image.height // 2))
        assert center == COLORS[f_item.answer]
    assert sum(item.conflict for item in with_fact) == 2 * sum(not item.conflict for item in with_fact)


def test_mmvet_category_joins_capabilities(tmp_path):
    write_fixture("mmvet", tmp_path, n=2)
    items = load_benchmark("mmvet", tmp_path)
    assert [item.category for item in items] == ["math,rec", "rec"]
    assert all(item.grader == "judge" for item in items)


def _mmvet_parquet(root, id_field: str, capability, capability_type, extra: dict | None = None) -> None:
    """One MM-Vet row as a parquet copy with the published schema: its id column, its capability type and
    any ``extra`` string columns (name: value)."""
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    features = Features(
        {
            id_field: Value("string"),
            "image": ImageFeature(),
            "question": Value("string"),
            "answer": Value("string"),
            "capability": capability_type,
            **{name: Value("string") for name in extra or {}},
        }
    )
    data = {
        id_field: ["v1_0"],
        "image": [Image.new("RGB", (8, 8), "red")],
        "question": ["Colour?"],
        "answer": ["red"],
        "capability": [capability],
        **{name: [value] for name, value in (extra or {}).items()},
    }
    (root / "mmvet" / "data").mkdir(parents=True)
    Dataset.from_dict(data, features=features).to_parquet(str(root / "mmvet" / "data" / "test-00000-of-00001.parquet"))


def test_mmvet_lmms_lab_parquet_layout_loads(tmp_path):
    from datasets import Value

    _mmvet_parquet(tmp_path, "question_id", "rec,ocr", Value("string"), extra={"image_source": "x"})
    [item] = load_benchmark("mmvet", tmp_path)
    assert (item.id, item.category, item.answer) == ("v1_0", "ocr,rec", "red")


def test_saved_dataset_dict_is_read_with_the_benchmark_split(tmp_path):
    from datasets import Dataset, DatasetDict

    write_fixture("mmmu", tmp_path / "parquet", n=3)
    shards = sorted((tmp_path / "parquet" / "mmmu").glob("*/*.parquet"))
    validation = Dataset.from_parquet([str(p) for p in shards])
    dev = validation.select([0])
    DatasetDict({"dev": dev, "validation": validation}).save_to_disk(str(tmp_path / "saved" / "mmmu"))
    items = load_benchmark("mmmu", tmp_path / "saved")
    assert len(items) == 3 and items[0].image.mode == "RGB"


# --- errors name what is missing ---------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN)
def test_missing_folder_names_path_and_layout(name, tmp_path):
    benchmark = BENCHMARKS[name]
    with pytest.raises(BenchmarkDataError) as error:
        load_benchmark(name, tmp_path)
    message = str(error.value)
    assert str(benchmark.local_dir(tmp_path)) in message and benchmark.expected_layout in message


@pytest.mark.parametrize("name", [n for n in BUILTIN if n != "mmmu-pro"])  # its folders: test_half_copies_...
def test_empty_folder_names_expected_files(name, tmp_path):
    BENCHMARKS[name].local_dir(tmp_path).mkdir()
    with pytest.raises(BenchmarkDataError, match=r"no file matching .*\(it holds: \(empty\)\)"):
        load_benchmark(name, tmp_path)


MISSING_FIELD_CASES = [
    ("mmmu", "Art/validation-00000-of-00001.parquet", "answer"),
    ("mmmu-pro", "vision/test-00000-of-00001.parquet", "options"),
    ("mathvista", "data/testmini-00000-of-00001.parquet", "pid"),
    ("mathverse", "testmini.parquet", "question_type"),
    ("mmsi", "MMSI_Bench.parquet", "images"),
    ("realworldqa", "data/test-00000-of-00001.parquet", "answer"),
    ("cvbench", "test_3d.parquet", "choices"),
    ("vilp-f", "ViLP.parquet", "image3"),
    ("vilp-p", "ViLP.parquet", "answer2"),
]


@pytest.mark.parametrize(("name", "file", "column"), MISSING_FIELD_CASES)
def test_missing_field_is_named_with_row_and_layout(name, file, column, tmp_path):
    folder = write_fixture(name, tmp_path, n=2)
    _drop_column(folder / file, column)
    with pytest.raises(BenchmarkDataError) as error:
        load_benchmark(name, tmp_path)
    message = str(error.value)
    assert f"missing field {column!r}" in message or f"missing image field {column!r}" in message
    assert "row 0" in message and "Expected layout" in message


def test_mmvet_missing_question_and_missing_image(tmp_path):
    folder = write_fixture("mmvet", tmp_path, n=2)
    entries = json.loads((folder / "mm-vet.json").read_text())
    del entries["v1_1"]["question"]
    (folder / "mm-vet.json").write_text(json.dumps(entries))
    with pytest.raises(BenchmarkDataError, match=r"entry v1_1 is missing field 'question'"):
        load_benchmark("mmvet", tmp_path)
    (folder / "images" / "v1_0.png").unlink()
    with pytest.raises(BenchmarkDataError, match=r"v1_0\.png .*does not exist"):
        load_benchmark("mmvet", tmp_path)


def test_half_copies_name_the_missing_part(tmp_path):
    for name in ("mmmu-pro", "cvbench"):
        write_fixture(name, tmp_path, n=2)
    for path in (tmp_path / "mmmu-pro" / "vision").iterdir():
        path.unlink()
    (tmp_path / "mmmu-pro" / "vision").rmdir()
    (tmp_path / "cvbench" / "test_3d.parquet").unlink()
    with pytest.raises(BenchmarkDataError, match=r"mmmu-pro/vision does not exist"):
        load_benchmark("mmmu-pro", tmp_path)
    with pytest.raises(BenchmarkDataError, match=r"test_3d\.parquet is missing"):
        load_benchmark("cvbench", tmp_path)


def test_answer_outside_the_options_is_reported(tmp_path):
    folder = write_fixture("mathvista", tmp_path, n=1)
    path = folder / "data" / "testmini-00000-of-00001.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[0]["answer"] = "hexagon"
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), path)
    with pytest.raises(BenchmarkDataError, match=r"answer 'hexagon' .* 4 options"):
        load_benchmark("mathvista", tmp_path)


# --- registry -----------------------------------------------------------------------------------------


def test_unknown_name_lists_benchmarks_and_close_matches():
    with pytest.raises(ValueError) as error:
        get_benchmark("mmvte")
    message = str(error.value)
    assert "Did you mean 'mmvet'" in message
    assert all(name in message for name in BUILTIN)


def test_names_ignore_case_dashes_and_underscores():
    assert get_benchmark("MMMU_Pro") is BENCHMARKS["mmmu-pro"]
    assert get_benchmark("CV-Bench") is BENCHMARKS["cvbench"]
    assert get_benchmark("ViLP_F") is BENCHMARKS["vilp-f"]


def test_register_refuses_clashes_unless_replacing(registry):
    clone = Benchmark("mm_vet", "copy", "nowhere", BENCHMARKS["mmvet"].loader)
    with pytest.raises(ValueError, match="clashes with registered 'mmvet'"):
        register_benchmark(clone)
    register_benchmark(clone, replace=True)
    assert get_benchmark("mmvet") is clone and "mmvet" not in registry


def test_write_fixture_refuses_unknown_benchmarks(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark"):
        write_fixture("nope", tmp_path)
    with pytest.raises(ValueError, match="at least 1"):
        write_fixture("mmvet", tmp_path, n=0)


# --- items and answers ---------------------------------------------------------------------------------


def test_prompt_question_without_options_has_no_trailing_lines():
    item = EvalItem("b", "1", "How many?", Image.new("RGB", (2, 2)), "3")
    assert item.prompt_question() == "How many?"
    item.options = ["1", "3"]
    assert item.prompt_question() == "How many?\nA. 1\nB. 3"


def test_mmvet_authors_hub_copy_with_id_and_capability_lists_loads(tmp_path):
    from datasets import Sequence, Value

    # The authors' Hub copy names its rows `id` and lists the capabilities.
    _mmvet_parquet(tmp_path, "id", ["rec", "ocr"], Sequence(Value("string")))
    [item] = load_benchmark("mmvet", tmp_path)
    assert (item.id, item.category, item.answer) == ("v1_0", "ocr,rec", "red")


def test_mmvet_official_zip_as_unpacked_one_folder_deeper_loads(tmp_path):
    folder = write_fixture("mmvet", tmp_path / "flat", n=2)
    nested = tmp_path / "zip" / "mmvet"
    nested.mkdir(parents=True)
    shutil.copytree(folder, nested / "mm-vet")  # unzip mm-vet.zip in data_dir/mmvet
    flat, unpacked = load_benchmark("mmvet", tmp_path / "flat"), load_benchmark("mmvet", tmp_path / "zip")
    assert [(i.id, i.question, i.answer) for i in unpacked] == [(i.id, i.question, i.answer) for i in flat]


def test_realworldqa_older_shard_names_load(tmp_path):
    folder = write_fixture("realworldqa", tmp_path, n=4)
    items = load_benchmark("realworldqa", tmp_path)
    (shard,) = (folder / "data").glob("test-*.parquet")
    shard.rename(folder / "data" / "test_0412-00000-of-00001.parquet")
    assert [i.id for i in load_benchmark("realworldqa", tmp_path)] == [i.id for i in items]
