"""Reading local copies: file discovery, row readers and image decoding."""

from __future__ import annotations

import base64
import io
import json
import string
from pathlib import Path

import numpy as np
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
    with pytest.raises(
        BenchmarkDataError, match=r"(?s)no file matching 'a\.parquet' .*data/, notes\.txt.*Expected layout: L"
    ):
        find_files(tmp_path, ("a.parquet",), what="x", layout="L")


def test_read_rows_json_mapping_and_jsonl(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"v1_0": {"q": 1}, "v1_1": {"q": 2}}))
    (tmp_path / "r.jsonl").write_text('{"q": 3}\n\n{"q": 4}\n')
    rows = list(read_rows([tmp_path / "m.json", tmp_path / "r.jsonl"], split="test", layout="L"))
    assert [where for where, _ in rows] == [
        "m.json entry v1_0",
        "m.json entry v1_1",
        "r.jsonl line 1",
        "r.jsonl line 3",
    ]
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


options_lists = st.lists(
    st.text(min_size=1, max_size=8).map(str.strip).filter(bool), min_size=1, max_size=10, unique=True
)


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


# --- issue #13: 16-bit images, decompression bombs, paths out of the folder, text that is not UTF-8 -------------


def _gradient_16_bit_png() -> bytes:
    values = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (8, 1))
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_16_bit_image_is_scaled_to_8_bits_not_clipped(tmp_path):
    raw = _gradient_16_bit_png()
    (tmp_path / "g.png").write_bytes(raw)
    for value in (raw, {"bytes": raw, "path": None}, "g.png", Image.open(io.BytesIO(raw))):
        row = np.asarray(to_image(value, base_dir=tmp_path, where="r", field="image"))[0, :, 0].astype(int)
        assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0)
        assert np.mean(row == 255) < 0.05  # convert("RGB") made 98% of it white


def test_a_decompression_bomb_names_the_row_and_field(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    Image.new("RGB", (100, 100), "red").save(buffer, format="PNG")
    (tmp_path / "big.png").write_bytes(buffer.getvalue())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels: over twice the limit
    with pytest.raises(
        BenchmarkDataError,
        match=r"^t\.parquet row 7: image field 'image' holds bytes that are not an "
        r"image Pillow can decode \(.*DecompressionBombError",
    ):
        to_image(buffer.getvalue(), base_dir=tmp_path, where="t.parquet row 7", field="image")
    with pytest.raises(
        BenchmarkDataError,
        match=r"^t\.jsonl line 2: .*big\.png \(field 'image'\) is not a readable "
        r"image \(.*DecompressionBombError",
    ):
        to_image("big.png", base_dir=tmp_path, where="t.jsonl line 2", field="image")


def test_image_paths_must_stay_inside_the_folder_unless_allowed(tmp_path):
    (tmp_path / "bench" / "data").mkdir(parents=True)
    (tmp_path / "bench" / "img").mkdir()
    (tmp_path / "bench" / "img" / "in.png").write_bytes(_png("blue"))
    (tmp_path / "secret.png").write_bytes(_png("red"))
    (tmp_path / "bench" / "img" / "link.png").symlink_to(tmp_path / "secret.png")
    data, root = tmp_path / "bench" / "data", tmp_path / "bench"
    # Relative to the data file's folder, inside the benchmark's folder: read.
    assert to_image("../img/in.png", base_dir=data, root=root, where="r", field="f").getpixel((0, 0)) == (0, 0, 255)
    for value in (
        "../../secret.png",
        str(tmp_path / "secret.png"),
        "../img/link.png",
        {"bytes": None, "path": "../../secret.png"},
    ):
        shown = value["path"] if isinstance(value, dict) else value
        with pytest.raises(BenchmarkDataError) as error:
            to_image(value, base_dir=data, root=root, where="q.jsonl line 3", field="picture")
        assert str(error.value) == (
            f"q.jsonl line 3: image path {shown!r} (field 'picture') resolves to {tmp_path / 'secret.png'}, outside "
            f"the benchmark folder {root}; keep the images under it "
            "(a benchmark YAML may set allow_paths_outside: true)."
        )
        image = to_image(value, base_dir=data, root=root, where="r", field="f", allow_outside=True)
        assert image.getpixel((0, 0)) == (255, 0, 0)
    with pytest.raises(BenchmarkDataError, match="outside the benchmark folder"):
        to_image("../img/in.png", base_dir=data, where="r", field="f")  # root defaults to base_dir


def test_text_that_is_not_utf8_names_the_line_or_field(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "r.jsonl").write_bytes(b'{"q": "fine"}\n{"q": "caf\xe9"}\n')
    with pytest.raises(
        BenchmarkDataError,
        match=r"^r\.jsonl line 2: bytes that are not UTF-8 \(b'.*caf\\xe9.*'\); "
        r"save the file as UTF-8\.$",
    ):
        list(read_rows([tmp_path / "r.jsonl"], split="test", layout="L"))
    (tmp_path / "m.json").write_bytes(b'{\n"a": {"q": "fine"},\n"b": {"q": "caf\xe9"}}')
    with pytest.raises(BenchmarkDataError, match=r"^m\.json line 3: bytes that are not UTF-8"):
        list(read_rows([tmp_path / "m.json"], split="test", layout="L"))
    table = pa.table({"q": pa.array([b"fine", b"caf\xe9"], type=pa.binary()).view(pa.string())})
    pq.write_table(table, tmp_path / "t.parquet")
    rows = [
        Row(where, data, base_dir=tmp_path, benchmark="bench", layout="L")
        for where, data in read_rows([tmp_path / "t.parquet"], split="test", layout="L")
    ]
    assert rows[0].text("q") == "fine"
    with pytest.raises(
        BenchmarkDataError,
        match=r"^bench: t\.parquet row 1 has field 'q' holding bytes that are not "
        r"UTF-8 \(b'caf\\xe9'\)",
    ):
        rows[1].text("q")
