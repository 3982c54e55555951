"""Run configurations and run-folder readers shared by the tests of the evaluation runner and `vigos eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vigos.eval.options import EvalConfig

BENCHMARKS = ["vilp-f", "mathvista", "cvbench"]


def make_config(model: Any, data_dir: Path, out_dir: Path, **overrides: Any) -> EvalConfig:
    options: dict[str, Any] = dict(
        model=str(model),
        benchmarks=list(BENCHMARKS),
        data_dir=str(data_dir),
        out_dir=str(out_dir),
        k=2,
        max_new_tokens=12,
        batch_size=2,
        engine="hf",
    )
    options.update(overrides)
    return EvalConfig(**options)


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
