"""Loading rows from every local source kind, and the skip-or-stop rule for bad rows."""

from __future__ import annotations

import io
import json

import datasets
import pytest
from PIL import Image

from vigos.data import BadRowError, DataError, load_examples, load_rows, prepare_examples


def png_bytes(size=(64, 64), colour=(200, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_jsonl(tmp_path, rows):
    (tmp_path / "images").mkdir(exist_ok=True)
    lines = []
    for i, row in enumerate(rows):
        row = dict(row)
        if isinstance(row.get("image"), bytes):
            (tmp_path / "images" / f"{i}.png").write_bytes(row["image"])
            row["image"] = f"images/{i}.png"
        lines.append(json.dumps(row))
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = {"question": "What colour?", "answer": "red", "image": png_bytes()}


def test_jsonl_with_relative_paths(tmp_path):
    path = write_jsonl(tmp_path, [GOOD, {**GOOD, "answer": 7}])
    examples, report = load_examples(str(path))
    assert [e.answer for e in examples] == ["red", "7"] and report.kept == 2
    assert examples[0].image.mode == "RGB" and examples[0].image.size == (64, 64)
    assert examples[1].row == 1


def test_parquet_and_saved_dataset_and_vision_sr1_fields(tmp_path):
    features = datasets.Features({"problem": datasets.Value("string"), "images": datasets.Sequence(datasets.Image()),
                                  "answer": datasets.Value("string")})
    rows = datasets.Dataset.from_dict(
        {"problem": ["Q1", "Q2"], "images": [[{"bytes": png_bytes(), "path": None}]] * 2, "answer": ["a", "b"]},
        features=features)
    rows.to_parquet(str(tmp_path / "d.parquet"))
    datasets.DatasetDict({"train": rows, "test": rows.select([0])}).save_to_disk(str(tmp_path / "saved"))
    fields = dict(question_field="problem", image_field="images", answer_field="answer")
    for source, split, n in ((tmp_path / "d.parquet", "train", 2), (tmp_path / "saved", "test", 1)):
        examples, _ = load_examples(str(source), split=split, **fields)
        assert len(examples) == n and examples[0].question == "Q1" and examples[0].image.size == (64, 64)
    with pytest.raises(DataError, match="no split 'dev'.*dataset_split"):
        load_rows(str(tmp_path / "saved"), split="dev")


BAD = [
    ({**GOOD, "image": "images/missing.png"}, "missing image"),
    ({**GOOD, "image": b"not a png at all"}, "unreadable image"),
    ({**GOOD, "image": png_bytes((10, 10))}, "tiny image"),
    ({**GOOD, "question": "   "}, "empty question"),
    ({**GOOD, "answer": ""}, "empty answer"),
    ({**GOOD, "question": "word " * 50}, "prompt too long"),
]


def test_skip_counts_every_reason_and_keeps_order(tmp_path):
    rows = [GOOD] + [row for row, _ in BAD] + [{**GOOD, "answer": "last"}]
    path = write_jsonl(tmp_path, rows)
    examples, report = load_examples(str(path), max_prompt_length=20, prompt_length=lambda q, image: len(q.split()))
    assert [e.answer for e in examples] == ["red", "last"] and [e.row for e in examples] == [0, 7]
    assert report.skipped == {reason: 1 for _, reason in BAD}
    assert report.total == 8 and "2 of 8 rows kept" in report.summary()


@pytest.mark.parametrize("row, reason", BAD)
def test_error_mode_names_row_field_and_fix(tmp_path, row, reason):
    path = write_jsonl(tmp_path, [GOOD, row])
    with pytest.raises(BadRowError, match=r"row 1 \(field '(image|question|answer)'\).*set bad_rows: skip"):
        load_examples(str(path), bad_rows="error", max_prompt_length=20, prompt_length=lambda q, image: len(q.split()))


def test_wrong_field_and_mode_and_path(tmp_path):
    path = write_jsonl(tmp_path, [GOOD])
    with pytest.raises(DataError, match="no column 'problem' \\(set question_field\\).*question, answer, image"):
        load_examples(str(path), question_field="problem")
    with pytest.raises(DataError, match="bad_rows must be one of skip, error"):
        prepare_examples(load_rows(str(path)), bad_rows="ignore")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_rows(str(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_rows("./no/such/dir")
