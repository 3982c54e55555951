"""The data benchmark's generator (bench/bench_data.py) at a tiny size: both layouts load with the expected columns."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import bench_data  # noqa: E402
from vigos.data.examples import load_examples  # noqa: E402
from vigos.data.rows import load_rows


@pytest.mark.parametrize("layout", bench_data.LAYOUTS)
def test_generated_dataset_loads(tmp_path, layout):
    info = bench_data.generate(tmp_path, 6, layout, distinct=3, image_side=64)
    rows = load_rows(info["source"])
    assert len(rows) == 6
    assert set(rows.column_names) == {"problem", "images", "answer"}
    if layout == "parquet":
        assert type(rows.features["images"].feature).__name__ == "Image"  # embedded bytes, as on the hub
    else:
        assert all(not Path(p).is_absolute() for row in rows["images"] for p in row)
    assert len(set(rows["problem"])) == 6  # every row's question is its own; images repeat from a pool of 3
    examples, report = load_examples(
        info["source"], question_field="problem", image_field="images", answer_field="answer"
    )
    assert report.kept == 6
    assert all(example.images[0].size == (64, 64) for example in examples)

    # A second call reuses the written dataset.
    marker = Path(info["root"]) / "bench_data.json"
    before = marker.stat().st_mtime_ns
    again = bench_data.generate(tmp_path, 6, layout, distinct=3, image_side=64)
    assert again["source"] == info["source"] and marker.stat().st_mtime_ns == before
    assert json.loads(marker.read_text())["rows"] == 6


def test_rows_per_second_from_logs():
    assert bench_data.rows_per_second(["checked 5000 of 47000 rows (4990 kept)"]) is None
    assert (
        bench_data.rows_per_second(
            ["validation: 5000 of 47000 rows, 812.5 rows/s", "47,000 rows checked, 1,234 rows/s"]
        )
        == 1234
    )
    assert bench_data.rows_per_second(["Generating train split: 6 examples [00:00, 2135.59 examples/s]"]) is None
