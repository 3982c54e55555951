"""A benchmark row that cannot be read is skipped with a warning naming it, or stops the run naming it."""

from __future__ import annotations

import argparse
import json
import logging

import pyarrow.parquet as pq
import pytest

from vigos.eval.benchmarks import get_benchmark
from vigos.eval.command import add_eval_arguments, eval_command
from vigos.eval.fixtures import write_fixture
from vigos.eval.sources import BenchmarkDataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _spoil_cvbench(root, *, answers: dict[int, str]) -> None:
    """Give the 2D rows at the given positions answers that name no option."""
    path = root / "cvbench" / "test_2d.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    for index, answer in answers.items():
        rows[index]["answer"] = answer
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), path)


def test_skip_leaves_the_bad_row_out_and_names_it(tmp_path, caplog):
    write_fixture("cvbench", tmp_path, n=4)
    _spoil_cvbench(tmp_path, answers={0: "(H)"})
    with caplog.at_level(logging.WARNING):
        items, bad = get_benchmark("cvbench").read(tmp_path, bad_rows="skip")
    assert [item.id for item in items] == ["2D_1", "3D_2", "3D_3"]  # the rest, in order
    assert len(bad) == 1 and bad[0].where == "test_2d.parquet row 0"
    assert "answer '(H)'" in bad[0].problem and "test_2d.parquet row 0" in caplog.text


def test_error_stops_at_the_bad_row_and_names_the_option(tmp_path):
    write_fixture("cvbench", tmp_path, n=4)
    _spoil_cvbench(tmp_path, answers={1: "(H)"})
    with pytest.raises(BenchmarkDataError, match=r"(?s)test_2d\.parquet row 1 has answer '\(H\)'.*--bad-rows skip"):
        get_benchmark("cvbench").read(tmp_path, bad_rows="error")


def test_a_copy_of_bad_rows_only_fails_either_way(tmp_path):
    write_fixture("cvbench", tmp_path, n=2)
    _spoil_cvbench(tmp_path, answers={0: "(H)"})
    (tmp_path / "cvbench" / "test_3d.parquet").write_bytes((tmp_path / "cvbench" / "test_2d.parquet").read_bytes())
    with pytest.raises(BenchmarkDataError, match=r"every row read is bad; the first: .*row 0"):
        get_benchmark("cvbench").read(tmp_path, bad_rows="skip")


def _args(tmp_path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    return parser.parse_args(
        ["--model", "tiny:qwen2_5_vl", "--benchmarks", "cvbench", "--data-dir", str(tmp_path / "data")]
        + ["--out-dir", str(tmp_path / "out"), "--k", "1", "--max-new-tokens", "4", "--engine", "hf", "--no-progress"]
        + list(extra)
    )


def test_the_cli_skips_by_default_and_records_the_row(tiny_model_dir, tmp_path, capsys):
    write_fixture("cvbench", tmp_path / "data", n=4)
    _spoil_cvbench(tmp_path / "data", answers={0: "(H)"})
    args = _args(tmp_path)
    args.model = str(tiny_model_dir)
    assert eval_command(args) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["items"] == {"cvbench": 3}
    assert [row["where"] for row in summary["skipped_rows"]["cvbench"]] == ["test_2d.parquet row 0"]
    assert "**Skipped rows:** CV-Bench 1" in (tmp_path / "out" / "report.md").read_text()


def test_the_cli_stops_with_bad_rows_error(tmp_path, capsys):
    write_fixture("cvbench", tmp_path / "data", n=4)
    _spoil_cvbench(tmp_path / "data", answers={0: "(H)"})
    assert eval_command(_args(tmp_path, "--bad-rows", "error")) == 2
    err = capsys.readouterr().err
    assert "test_2d.parquet row 0 has answer '(H)'" in err and "--bad-rows skip" in err
    assert not (tmp_path / "out").exists()  # stopped before any model loaded or folder was claimed
