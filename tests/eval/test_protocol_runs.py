"""Both protocols end to end from the command line on every benchmark's fixture: the tiny real model, the
published schemas (and the release's copies for ``paper``), a real judge server on 127.0.0.1."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from eval_runs import lines_of
from judge_server import JudgeServer
from vigos.eval.command import add_eval_arguments, eval_command
from vigos.eval.fixtures import FIXTURE_WRITERS, write_fixture
from vigos.eval.fixtures_paper import write_paper_fixture
from vigos.eval.paper_copies import PAPER_COPIES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EVERY_BENCHMARK = sorted(FIXTURE_WRITERS)


@pytest.fixture(scope="module")
def every_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("every-benchmark")
    for name in EVERY_BENCHMARK:
        write_fixture(name, root, n=4 if name == "cvbench" else 2)  # CV-Bench: a row of each source
    for name in PAPER_COPIES:
        write_paper_fixture(name, root, n=2)
    return root


@pytest.fixture
def judge_server() -> Iterator[JudgeServer]:
    server = JudgeServer(score="0.5")
    yield server
    server.close()


def _run(model: Path, data: Path, out: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    argv = ["--model", str(model), "--benchmarks", ",".join(EVERY_BENCHMARK), "--data-dir", str(data)]
    argv += ["--out-dir", str(out), "--k", "2", "--max-new-tokens", "6", "--engine", "hf", "--no-progress"]
    return eval_command(parser.parse_args(argv + list(extra)))


def test_official_runs_every_benchmark_with_its_own_scorer(tiny_model_dir, every_copy, tmp_path, judge_server):
    judge = ["--judge-url", judge_server.base_url, "--judge-model", "judge"]
    assert _run(tiny_model_dir, every_copy, tmp_path, *judge) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["protocol"] == "official" and set(summary["items"]) == set(EVERY_BENCHMARK)
    assert "**Protocol:** official" in (tmp_path / "report.md").read_text()
    mmvet = lines_of(tmp_path / "responses" / "mmvet.jsonl")
    # MM-Vet alone went to the judge, for a 0-1 score per sample.
    assert all(record["scores"] == [0.5, 0.5] for record in mmvet)
    assert summary["metrics"]["benchmarks"]["mmvet"]["avg@2"]["mean"] == 0.5 and summary["partial_credit"] == ["mmvet"]
    assert "**Partial credit:** MM-Vet: the mean of the judge's 0-1 scores" in (tmp_path / "report.md").read_text()
    assert len(judge_server.requests) == sum(len(record["samples"]) for record in mmvet)
    vilp = lines_of(tmp_path / "responses" / "vilp-f.jsonl")
    assert all(record["grader"] == "vilp" and record["grading"] == "rule" for record in vilp)
    assert "official" in summary["metrics"]["benchmarks"]["cvbench"]  # CV-Bench's own overall score


def test_paper_runs_every_benchmark_with_one_judge_call_per_item(tiny_model_dir, every_copy, tmp_path, judge_server):
    judge = ["--judge-url", judge_server.base_url, "--judge-model", "judge"]
    assert _run(tiny_model_dir, every_copy, tmp_path, "--protocol", "paper", *judge) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["protocol"] == "paper" and set(summary["items"]) == set(EVERY_BENCHMARK)
    assert "**Protocol:** paper" in (tmp_path / "report.md").read_text()
    records = [r for name in EVERY_BENCHMARK for r in lines_of(tmp_path / "responses" / f"{name}.jsonl")]
    # One call per item (items asked the very same thing share it), each with a verdict line per sample.
    sent = judge_server.prompts()
    assert (
        len(set(sent))
        == len(sent)
        == len({(r["question"], r["answer"], tuple(s["answer"] for s in r["samples"])) for r in records})
    )
    assert all(request["max_tokens"] >= 16 for request in judge_server.requests)
    assert all(record["grading"] == "judge" and len(record["samples"]) == 2 for record in records)
    # The release's copies: problem as the question, every image of the row.
    mmsi = lines_of(tmp_path / "responses" / "mmsi.jsonl")
    assert mmsi[0]["question"].startswith("<image 1> <image 2> Which shape")
    cvbench = lines_of(tmp_path / "responses" / "cvbench.jsonl")
    assert all("Select from the following choices." in record["question"] for record in cvbench)  # its prompt field
    assert summary["judge"]["used"] is True and summary["judge"]["items"] == len(records)


def test_paper_without_a_judge_stops_naming_the_options(tiny_model_dir, every_copy, tmp_path, capsys):
    assert _run(tiny_model_dir, every_copy, tmp_path / "run", "--protocol", "paper") == 2
    assert "paper protocol grades every item with an LLM judge: pass --judge-url" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_official_with_mmvet_and_no_judge_stops_naming_the_options(tiny_model_dir, every_copy, tmp_path, capsys):
    assert _run(tiny_model_dir, every_copy, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "mmvet: the official protocol grades these with an LLM judge's 0-1 partial credit" in err
    assert "--judge-url and --judge-model" in err
