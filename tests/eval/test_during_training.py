"""Benchmarks during training: `vigos train --eval_benchmarks ... --eval_steps N` logs each benchmark's numbers
every N steps, writes each evaluation's run folder, and leaves training's own random stream untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vigos.cli import main
from vigos.eval.during_training import benchmark_metrics
from vigos.eval.fixtures import write_fixture
from vigos.training.config import ViGOSConfig

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_metrics_name_each_benchmark_estimate_and_side():
    summary = {
        "metrics": {"benchmarks": {"a": {"avg@2": {"mean": 0.5}, "pass@2": {"mean": 0.75}, "n": 4}}},
        "vilp": {"a": {"score": {"avg@2": {"mean": 0.25}}, "prior": {"avg@2": {"mean": 1.0}}}},
    }
    assert benchmark_metrics(summary, 2) == {
        "eval_a_avg@2": 0.5,
        "eval_a_pass@2": 0.75,
        "eval_a_score_avg@2": 0.25,
        "eval_a_prior_avg@2": 1.0,
    }


def test_benchmarks_without_a_step_count_are_refused():
    with pytest.raises(ValueError, match="eval_benchmarks is set: set eval_steps too"):
        ViGOSConfig(output_dir="unused", report_to="none", eval_benchmarks=["vilp-f"])


def _train(tmp_path: Path, name: str, *extra: str) -> list[dict]:
    out = tmp_path / name
    args = ["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--output_dir", str(out), "--max_steps", "2"]
    assert main([*args, *extra]) == 0
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_training_evaluates_every_n_steps_without_moving_its_own_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    write_fixture("vilp-f", tmp_path / "data", n=2)
    evaluated = _train(
        tmp_path,
        "with-eval",
        *("--eval_benchmarks", "vilp-f", "--eval_data_dir", str(tmp_path / "data")),
        *("--eval_steps", "1", "--eval_limit", "4", "--eval_k", "2"),
    )
    logged = [r for r in evaluated if "eval_vilp-f_avg@2" in r]
    assert [r["step"] for r in logged] == [1, 2]
    assert all(0 <= r["eval_vilp-f_avg@2"] <= r["eval_vilp-f_pass@2"] <= 1 for r in logged)
    assert "eval_vilp-f_score_avg@2" in logged[0] and "eval_vilp-f_prior_avg@2" in logged[0]
    for step in (1, 2):
        summary = json.loads((tmp_path / "with-eval" / "eval" / f"step-{step}" / "summary.json").read_text())
        assert summary["items"] == {"vilp-f": 4}
    # The same run without evaluations: the same losses step for step.
    plain = _train(tmp_path, "without")
    losses = [[r.get(key) for r in runs if "valid_rate" in r] for runs in (evaluated, plain) for key in ("loss",)]
    assert losses[0] == losses[1]


def test_a_benchmark_without_its_copy_or_judge_stops_training_before_it_starts(tmp_path, monkeypatch, capsys):
    """Checked when the trainer is built, not at the first evaluation: a missing local copy, and MM-Vet's
    partial credit without a judge, each name the training option to set."""
    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    write_fixture("mmvet", tmp_path / "data", n=2)
    args = ["train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--max_steps", "2", "--eval_steps", "1"]
    args += ["--eval_data_dir", str(tmp_path / "data")]
    assert main([*args, "--output_dir", str(tmp_path / "a"), "--eval_benchmarks", "cvbench"]) == 2
    assert "eval_benchmarks: " in capsys.readouterr().err
    assert main([*args, "--output_dir", str(tmp_path / "b"), "--eval_benchmarks", "mmvet"]) == 2
    err = capsys.readouterr().err
    assert "mmvet: the official protocol grades these with an LLM judge" in err
    assert "eval_judge_url and eval_judge_model" in err and "leave them out of eval_benchmarks" in err
    for run in ("a", "b"):
        assert not (tmp_path / run / "metrics.jsonl").exists()


@pytest.mark.slow
def test_mmvet_during_training_is_scored_by_the_judge(tmp_path, monkeypatch):
    from judge_server import JudgeServer

    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    write_fixture("mmvet", tmp_path / "data", n=2)
    server = JudgeServer(score="0.5")
    try:
        records = _train(
            tmp_path,
            "mmvet",
            *("--eval_benchmarks", "mmvet", "--eval_data_dir", str(tmp_path / "data"), "--eval_steps", "2"),
            *("--eval_judge_url", server.base_url, "--eval_judge_model", "judge"),
        )
    finally:
        server.close()
    logged = [r for r in records if "eval_mmvet_avg@1" in r]
    assert [r["step"] for r in logged] == [2] and logged[0]["eval_mmvet_avg@1"] == pytest.approx(0.5)
    assert server.requests
