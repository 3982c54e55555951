"""The benchmarks as the paper protocol reads them: the release's re-packaged copies, CV-Bench by its prompt field,
ViLP as published; and a judge that will not give a score in the form asked."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from judge_server import JudgeServer
from vigos.eval.benchmarks import get_benchmark
from vigos.eval.fixtures import write_fixture
from vigos.eval.fixtures_paper import write_paper_fixture
from vigos.eval.judge import JudgeClient, JudgeConfig, JudgeError
from vigos.eval.paper_copies import PAPER_COPIES, for_protocol
from vigos.eval.protocol_grading import apply_judge, record_item
from vigos.eval.sources import BenchmarkDataError
from vigos.prompts import student_spec


@pytest.mark.parametrize("name", PAPER_COPIES)
def test_each_release_copy_loads_in_its_schema(name, tmp_path):
    folder = write_paper_fixture(name, tmp_path, n=3)
    schema = pq.read_schema(folder / "data" / "test-00000-of-00001.parquet")
    assert schema.names == ["problem", "images", "answer"] and str(schema.field("problem").type) == "string"
    assert str(schema.field("images").type) == "list<element: struct<bytes: binary, path: string>>"
    benchmark = for_protocol(get_benchmark(name), "paper")
    assert benchmark.local_dir(tmp_path) == tmp_path / "paper" / name
    items = benchmark.load(tmp_path)
    assert [item.id for item in items] == ["0", "1", "2"] and all(item.grader == "judge" for item in items)
    assert items[0].prompt_question().startswith(("Which shape", "<image 1> <image 2>"))
    assert items[1].prompt_question() == items[1].question  # the problem as the release asks it, nothing added
    if name in ("mmmu", "mmmu-pro", "mmsi"):
        assert isinstance(items[0].image, list) and len(items[0].image) == 2  # each image its own, in order


def test_official_reads_the_published_copies_and_other_benchmarks_stay_as_they_are(tmp_path):
    mmmu = get_benchmark("mmmu")
    assert for_protocol(mmmu, "official") is mmmu
    vilp = get_benchmark("vilp-p")
    assert for_protocol(vilp, "paper") is vilp  # ViLP: its own train split and the one-word instruction


def test_a_jsonl_copy_with_image_lists_written_as_text_loads_and_its_bad_row_is_named(tmp_path):
    folder = tmp_path / "paper" / "mmsi"
    folder.mkdir(parents=True)
    for colour in ("red", "blue"):
        Image.new("RGB", (8, 8), colour).save(folder / f"{colour}.png")
    rows = [
        {"id": "a", "problem": "Which view is red?\nA. first\nB. second", "images": "['red.png', 'blue.png']"},
        {"id": "b", "problem": "What colour?", "images": '["blue.png"]', "answer": "blue"},
    ]
    rows[0]["answer"] = "A"
    rows.append({"id": "c", "problem": "No answer here.", "images": "['red.png']"})
    (folder / "copy.jsonl").write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    benchmark = for_protocol(get_benchmark("mmsi"), "paper")
    items, bad = benchmark.read(tmp_path, bad_rows="skip")
    assert [item.id for item in items] == ["a", "b"]
    assert [image.getpixel((0, 0)) for image in items[0].image] == [(255, 0, 0), (0, 0, 255)]
    assert bad[0].where == "copy.jsonl line 3" and "missing field 'answer'" in bad[0].problem
    with pytest.raises(BenchmarkDataError, match=r"copy\.jsonl line 3 is missing field 'answer'"):
        benchmark.read(tmp_path, bad_rows="error")


def test_cvbench_is_asked_by_its_prompt_field_and_a_row_without_one_is_bad(tmp_path):
    folder = write_fixture("cvbench", tmp_path, n=2)
    items = for_protocol(get_benchmark("cvbench"), "paper").load(tmp_path)
    assert all(item.prompt_question().endswith(item.meta["options"][-1]) for item in items)
    assert all("Select from the following choices." in item.prompt_question() for item in items)
    assert all(item.options is None for item in items)  # the prompt prints its choices once
    path = folder / "test_2d.parquet"
    table = pq.read_table(path)
    spoiled = table.to_pylist()
    spoiled[0]["prompt"] = None
    pq.write_table(type(table).from_pylist(spoiled, schema=table.schema), path)
    with pytest.raises(BenchmarkDataError, match="has no 'prompt' field"):
        for_protocol(get_benchmark("cvbench"), "paper").load(tmp_path)


def test_a_judge_that_never_gives_a_score_ends_in_a_judge_error(tmp_path):
    server = JudgeServer(score="It looks fine to me.")
    try:
        config = JudgeConfig(server.base_url, "judge-model", max_retries=1, backoff_s=0.0)
        with JudgeClient(config) as client:
            item = get_benchmark("mmvet")
            write_fixture("mmvet", tmp_path, n=1)
            record = record_item(item.load(tmp_path)[0], ["\\boxed{x}"], student_spec(), "official")
            with pytest.raises(JudgeError, match="is not a score: a number from 0.0 to 1.0"):
                apply_judge([record], client, "official")
        assert len(server.requests) == 2  # asked again once
    finally:
        server.close()
