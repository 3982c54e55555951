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
    assert (out / "train" / "vigos-s0" / "adapter_config.json").exists()
    # A second run finds every stage done and rebuilds only the report.
    assert main(["demo", "--quick", "--out", str(out)]) == 0
