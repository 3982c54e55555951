"""Tests for vigos.demo.pipeline: `vigos demo --quick` end to end, every stage runs and the report's numbers come
from the run."""

from __future__ import annotations

import json
import shutil

import pytest

from vigos.cli import main
from vigos.demo.results import PROBE_CURVES


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--workers", "2", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    for stage in ("1/6", "2/6", "3/6", "4/6", "5/6", "6/6"):
        assert f"[demo] {stage}" in printed
    for name in ("report.md", "report.html", "report.json", "scores.png", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    for method in ("warm_start", "opsd", "vigos"):
        summary = json.loads((out / "eval" / f"{method}-s0" / "summary.json").read_text())
        vilp = next(iter(summary["vilp"].values()))
        assert report["results"][method]["score_avg"][0] == pytest.approx(vilp["score"][f"avg@{summary['k']}"]["mean"])
        assert report["results"][method]["prior_avg"][0] == pytest.approx(vilp["prior"][f"avg@{summary['k']}"]["mean"])
    assert "Score (prior-conflicting images)" in report["verdict"] and report["verdict"] in printed
    # Both world settings, each with its paired difference and a verdict read off its interval.
    assert set(report["paired"]) == {"shortcut", "no_shortcut"}
    for setting in ("shortcut", "no_shortcut"):
        for key in ("score", "prior"):
            difference = report["paired"][setting][key]
            assert difference["low"] <= difference["high"]
            assert difference["verdict"] in ("ViGOS ahead", "OPSD ahead", "no difference resolved")
    for label in ("opsd", "vigos", "opsd-no_shortcut", "vigos-no_shortcut"):
        assert (out / "train" / f"{label}-s0" / "adapter_config.json").exists()
        # Each run evaluated itself on the probe items as it trained.
        logged = [
            json.loads(line) for line in (out / "train" / f"{label}-s0" / "metrics.jsonl").read_text().splitlines()
        ]
        assert [r["step"] for r in logged if PROBE_CURVES[0] in r] == [1, 2, 3]
        assert "ungrounded_obscured" in report["results"][label]
    train = [
        json.loads(line) for line in (out / "world" / "shortcut" / "train" / "data.jsonl").read_text().splitlines()
    ]
    assert sum(row["obscured"] for row in train) == round(0.25 * len(train))
    assert set(report["warm_start_abilities"]["perception"]) >= {"describes_kind", "describes_colour", "describes_all"}
    taught, fresh = (set(report["warm_start_abilities"][role]) for role in ("perception_taught", "perception"))
    assert {"describes_kind", "describes_position"} <= taught <= fresh | {"describes_text"}
    assert "on images it was taught on" in (out / "report.md").read_text()
    assert any("Shortcut rows" in line for line in report["premises"])
    # The thread count is pinned and recorded: the warm start with workers x threads, each run with threads.
    assert report["machine"]["torch_threads"] == 2
    assert "2 process(es) of 1 torch thread(s)" in (out / "report.md").read_text()
    # A second run finds every stage done and rebuilds only the report.
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert "processes" not in capsys.readouterr().out
    # The same runs one after another in this process (same warm start, same thread count) give the
    # same adapters and the same answers: the worker processes change only the wall time.
    again = tmp_path / "again"
    for stage in ("model", "world", "warm_start"):
        shutil.copytree(out / stage, again / stage)
    assert main(["demo", "--quick", "--out", str(again), "--workers", "1", "--threads", "1"]) == 0
    for run in ("opsd-s0", "vigos-no_shortcut-s0"):
        weights = "adapter_model.safetensors"
        assert (again / "train" / run / weights).read_bytes() == (out / "train" / run / weights).read_bytes()
    assert json.loads((again / "report.json").read_text())["results"] == report["results"]


def test_demo_refuses_a_thread_count_below_one(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
