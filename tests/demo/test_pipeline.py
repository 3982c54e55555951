"""Tests for vigos.demo.pipeline: `vigos demo --quick` end to end, every stage runs and the report's numbers come
from the run."""

from __future__ import annotations

import json

import pytest

from vigos.cli import main


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
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
        assert "ungrounded_obscured" in report["results"][label]
    train = [
        json.loads(line) for line in (out / "world" / "shortcut" / "train" / "data.jsonl").read_text().splitlines()
    ]
    assert sum(row["obscured"] for row in train) == round(0.25 * len(train))
    assert set(report["warm_start_abilities"]["perception"]) >= {"describes_kind", "describes_colour", "describes_all"}
    assert any("Shortcut rows" in line for line in report["premises"])
    # A second run finds every stage done and rebuilds only the report.
    assert main(["demo", "--quick", "--out", str(out)]) == 0
