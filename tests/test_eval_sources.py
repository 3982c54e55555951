"""Reading local copies: file discovery, row readers and image decoding."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from vigos.eval.sources import (
    BenchmarkDataError,
    Row,
    answer_to_letter,
    bare_letter,
    find_files,
    read_rows,
    tile_images,
    to_image,
)


def _png(color: str, size: tuple[int, int] = (4, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_to_image_accepts_every_published_encoding(tmp_path):
    raw = _png("red")
    (tmp_path / "a.png").write_bytes(raw)
    values = [
        Image.new("L", (4, 3), 128),
        {"bytes": raw, "path": None},
        {"bytes": None, "path": "a.png"},
        raw,
        "a.png",
        str(tmp_path / "a.png"),
        base64.b64encode(_png("red", (40, 40))).decode(),
    ]
    for value in values:
        image = to_image(value, base_dir=tmp_path, where="row 0", field="image")
        assert image.mode == "RGB"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "empty or of unsupported type"),
        ("missing.png", r"missing\.png \(field 'image'\) does not exist"),
        (b"not an image", "not an image"),
        ({"bytes": None, "path": None}, "neither bytes nor a path"),
        ("%" * 100, "not base64 image data"),
        ("eHh4" * 25, "bytes that are not an image"),
    ],
)
def test_to_image_failures_name_row_and_field(value, message, tmp_path):
    with pytest.raises(BenchmarkDataError, match=message) as error:
        to_image(value, base_dir=tmp_path, where="t.parquet row 7", field="image")
    assert "t.parquet row 7" in str(error.value)


def test_tile_images_keeps_order_at_a_common_height():
    red, blue = Image.new("RGB", (10, 20), "red"), Image.new("RGB", (5, 10), "blue")
    tiled = tile_images([red, blue])
    assert tiled.size == (10 + 8 + 10, 20)
    assert tiled.getpixel((0, 0)) == (255, 0, 0) and tiled.getpixel((27, 19)) == (0, 0, 255)
    assert tile_images([red]) is red


def test_find_files_tries_patterns_in_order(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test-1.parquet").touch()
    (tmp_path / "data" / "test-0.parquet").touch()
    (tmp_path / "notes.txt").touch()
    found = find_files(tmp_path, ("test.parquet", "data/test-*.parquet"), what="x", layout="L")
    assert [p.name for p in found] == ["test-0.parquet", "test-1.parquet"]
    with pytest.raises(BenchmarkDataError, match=r"(?s)no file matching 'a\.parquet' .*data/, notes\.txt.*Expected layout: L"):
        find_files(tmp_path, ("a.parquet",), what="x", layout="L")


def test_read_rows_json_mapping_and_jsonl(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"v1_0": {"q": 1}, "v1_1": {"q": 2}}))
    (tmp_path / "r.jsonl").write_text('{"q": 3}\n\n{"q": 4}\n')
    rows = list(read_rows([tmp_path / "m.json", tmp_path / "r.jsonl"], split="test", layout="L"))
    assert [where for where, _ in rows] == ["m.json entry v1_0", "m.json entry v1_1", "r.jsonl line 1", "r.jsonl line 3"]
    assert rows[1][1] == {"__key__": "v1_1", "q": 2}
    (tmp_path / "bad.jsonl").write_text('{"q": 1}\n{oops\n')
    with pytest.raises(BenchmarkDataError, match=r"bad\.jsonl line 2: invalid JSON"):
        list(read_rows([tmp_path / "bad.jsonl"], split="test", layout="L"))


def test_saved_dataset_dict_without_the_split_lists_its_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_dict({"q": [1]})
    DatasetDict({"dev": ds, "val": ds}).save_to_disk(str(tmp_path / "saved"))
    assert find_files(tmp_path / "saved", ("*.parquet",), what="x", layout="L") == [tmp_path / "saved"]
    with pytest.raises(BenchmarkDataError, match=r"no split 'test' \(it has \['dev', 'val'\]\)"):
        list(read_rows([tmp_path / "saved"], split="test", layout="L"))
    DatasetDict({"only": ds}).save_to_disk(str(tmp_path / "single"))
    assert [row for _, row in read_rows([tmp_path / "single"], split="test", layout="L")] == [{"q": 1}]


def _row(**data):
    return Row("f.parquet row 3", data, base_dir=Path("."), benchmark="bench", layout="LAYOUT")


def test_row_failures_name_benchmark_row_field_and_layout():
    row = _row(question="q", answer=None)
    with pytest.raises(BenchmarkDataError) as error:
        row.require("answer")
    assert str(error.value) == (
        "bench: f.parquet row 3 is missing field 'answer' (fields present: answer, question).\nExpected layout: LAYOUT"
    )
    assert row.get("answer", "x") == "x" and row.text("question") == "q"
    with pytest.raises(BenchmarkDataError, match=r"missing image field 'decoded_image' or 'image'"):
        row.image("decoded_image", "image")


def test_row_options_accept_lists_and_their_string_repr():
    assert _row(options="['1 cm', \"it's\"]").options() == ["1 cm", "it's"]
    assert _row(options=("a", 2)).options() == ["a", "2"]
    assert _row(options="").options() == []
    with pytest.raises(BenchmarkDataError, match="not a list of options"):
        _row(options="[unclosed").options()
    with pytest.raises(BenchmarkDataError, match="of type int"):
        _row(options=3).options()


def test_choice_answer_accepts_mmmu_answer_lists_and_rejects_strays():
    row = _row()
    assert row.choice_answer("['A', 'C']", ["x", "y", "z"]) == ("A", ["A", "C"])
    assert row.choice_answer("(b)", ["x", "y"]) == ("B", ["B"])
    assert row.choice_answer("y", ["x", "y"], "text") == ("B", ["B"])
    with pytest.raises(BenchmarkDataError, match=r"answer 'E' that is neither an option letter A-B"):
        row.choice_answer("E", ["x", "y"])


def test_bare_letter():
    assert [bare_letter(a) for a in ("(B)", "b", " C. ", "12", "yes")] == ["B", "B", "C", "12", "yes"]


options_lists = st.lists(st.text(min_size=1, max_size=8).map(str.strip).filter(bool), min_size=1, max_size=10, unique=True)


@given(options=options_lists, data=st.data())
def test_answer_to_letter_round_trips_letters_text_and_index(options, data):
    index = data.draw(st.integers(0, len(options) - 1))
    letter = string.ascii_uppercase[index]
    assert answer_to_letter(letter, options, "letter") == letter
    assert answer_to_letter(f"({letter.lower()})", options, "letter") == letter
    assert answer_to_letter(options[index], options, "text") == letter
    assert answer_to_letter(index, options, "index") == letter
    if str(index) not in options:  # auto reads an option's text before an integer position
        assert answer_to_letter(index, options) == letter
    assert answer_to_letter(len(options), options, "index") is None


@given(options=st.lists(st.text(max_size=12).map(str.strip), max_size=12))
def test_options_survive_the_string_repr_mmmu_publishes(options):
    assert _row(options=str(options)).options() == options
