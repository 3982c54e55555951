"""Tests for vigos.diagnose: the `vigos diagnose` command on the tiny model and synthetic data."""

from __future__ import annotations

import argparse
import json

from vigos.diagnose import add_diagnose_arguments, diagnose_command


def cli(argv):
    parser = argparse.ArgumentParser()
    add_diagnose_arguments(parser)
    return diagnose_command(parser.parse_args(argv))


def test_diagnose_command(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VIGOS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "diag.json"
    code = cli(
        [
            "--model",
            str(tiny_model_dir),
            "--data",
            "synthetic:train:8",
            "--agree-data",
            "synthetic:eval_agree:8",
            "--conflict-data",
            "synthetic:eval_conflict:8",
            "--sample-size",
            "2",
            "--max-new-tokens",
            "6",
            "--counterfactual",
            "shuffle",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    metrics = result["metrics"]
    assert result["method"] == "vigos" and metrics["rows"] == 2 and metrics["sensitivity_n"] == 2
    assert "grounding_n" in metrics and "leakage" in metrics
    printed = capsys.readouterr().out
    assert "sensitivity_changed" in printed and "valid_rate" in printed

    assert cli(["--model", str(tiny_model_dir), "--agree-data", "synthetic:eval_agree:8"]) == 2
    assert "needs both --agree-data and --conflict-data" in capsys.readouterr().err
