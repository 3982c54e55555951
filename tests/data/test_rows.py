"""vigos.data.rows: every local source kind, the field mapping, and the skip-or-stop rule for bad rows."""

from __future__ import annotations

import io
import json
import logging

import datasets
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vigos.data.examples import load_examples, prepare_examples
from vigos.data.rows import SKIP_REASONS, BadRowError, DataReport, DatasetNotFoundError, load_rows
from vigos.errors import DataError

datasets.disable_progress_bars()


def png_bytes(size=(64, 48), colour=(200, 0, 0), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_jsonl(directory, rows, name="data.jsonl"):
    """Rows whose ``image`` is bytes get a PNG file under images/ and a relative path in the JSONL."""
    (directory / "images").mkdir(exist_ok=True)
    lines = []
    for i, row in enumerate(rows):
        row = dict(row)
        if isinstance(row.get("image"), bytes):
            (directory / "images" / f"{i}.png").write_bytes(row["image"])
            row["image"] = f"images/{i}.png"
        lines.append(json.dumps(row))
    path = directory / name
    path.write_text("\n".join(lines) + "\n")
    return path


def image_rows(n=3, field="image"):
    return {
        "question": [f"Q{i}" for i in range(n)],
        "answer": [f"a{i}" for i in range(n)],
        field: [{"bytes": png_bytes(colour=(i, 0, 0)), "path": None} for i in range(n)],
    }


IMAGE_FEATURES = datasets.Features(
    {"question": datasets.Value("string"), "answer": datasets.Value("string"), "image": datasets.Image()}
)
GOOD = {"question": "What colour?", "answer": "red", "image": png_bytes(), "source": "unit", "difficulty": 2}
WORDS = dict(max_prompt_length=20, prompt_length=lambda question, images: len(question.split()))


# --- source kinds -------------------------------------------------------------------------------------------


def test_jsonl_with_relative_paths_numbers_and_meta(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path, [GOOD, {**GOOD, "answer": 7}, {**GOOD, "answer": 2.5, "question": "  How many?  "}])
    monkeypatch.chdir(tmp_path.parent)  # image paths resolve against the JSONL's directory, not the cwd
    examples, report = load_examples(str(path))
    assert [e.answer for e in examples] == ["red", "7", "2.5"]
    assert examples[2].question == "How many?"
    assert [e.row for e in examples] == [0, 1, 2] and report.kept == report.total == 3 and report.skipped == {}
    assert examples[0].image.mode == "RGB" and examples[0].image.size == (64, 48)
    assert examples[0].image.getpixel((0, 0)) == (200, 0, 0)
    assert examples[0].meta == {"source": "unit", "difficulty": 2}


def test_parquet_with_image_bytes_and_with_paths(tmp_path):
    datasets.Dataset.from_dict(image_rows(), features=IMAGE_FEATURES).to_parquet(str(tmp_path / "bytes.parquet"))
    examples, report = load_examples(str(tmp_path / "bytes.parquet"))
    assert [e.question for e in examples] == ["Q0", "Q1", "Q2"] and report.kept == 3
    assert [e.image.getpixel((1, 1)) for e in examples] == [(0, 0, 0), (1, 0, 0), (2, 0, 0)]

    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(png_bytes(colour=(0, 9, 0)))
    datasets.Dataset.from_dict({"question": ["Q"], "answer": ["a"], "image": ["pics/a.png"]}).to_parquet(
        str(tmp_path / "paths.parquet")
    )
    examples, _ = load_examples(str(tmp_path / "paths.parquet"))
    assert examples[0].image.getpixel((0, 0)) == (0, 9, 0)


def test_saved_dataset_dict_picks_the_split(tmp_path):
    rows = datasets.Dataset.from_dict(image_rows(), features=IMAGE_FEATURES)
    datasets.DatasetDict({"train": rows, "test": rows.select([2])}).save_to_disk(str(tmp_path / "saved"))
    examples, _ = load_examples(str(tmp_path / "saved"), split="test")
    assert [e.question for e in examples] == ["Q2"] and examples[0].row == 0
    with pytest.raises(DataError, match=r"no split 'dev'; it has train, test \(set dataset_split\)"):
        load_rows(str(tmp_path / "saved"), split="dev")
    rows.save_to_disk(str(tmp_path / "single"))
    assert load_rows(str(tmp_path / "single")).num_rows == 3
    examples, _ = prepare_examples(rows.select([2, 0]))  # an indices mapping, as after shuffle or select
    assert [(e.row, e.question) for e in examples] == [(0, "Q2"), (1, "Q0")]


def test_parquet_directory_splits_by_file_names(tmp_path):
    rows = datasets.Dataset.from_dict(image_rows(), features=IMAGE_FEATURES)
    (tmp_path / "snap" / "data").mkdir(parents=True)
    rows.to_parquet(str(tmp_path / "snap" / "data" / "train-00000-of-00001.parquet"))
    rows.select([0]).to_parquet(str(tmp_path / "snap" / "data" / "test-00000-of-00001.parquet"))
    (tmp_path / "snap" / "README.md").write_text("# a hub snapshot\n")
    assert load_rows(str(tmp_path / "snap")).num_rows == 3
    assert load_rows(str(tmp_path / "snap"), split="test").num_rows == 1
    with pytest.raises(DataError, match=r"no split 'validation'; its parquet files form the splits train, test"):
        load_rows(str(tmp_path / "snap"), split="validation")


def test_vision_sr1_fields_with_an_image_list(tmp_path):
    features = datasets.Features(
        {
            "problem": datasets.Value("string"),
            "images": datasets.List(datasets.Image()),
            "answer": datasets.Value("string"),
        }
    )
    one, two = (
        {"bytes": png_bytes(colour=(1, 2, 3)), "path": None},
        {"bytes": png_bytes(colour=(9, 9, 9)), "path": None},
    )
    rows = datasets.Dataset.from_dict(
        {
            "problem": ["<image>What is x?", "<image><image>Compare."],
            "images": [[one], [two, one]],
            "answer": ["3", "B"],
        },
        features=features,
    )
    rows.to_parquet(str(tmp_path / "sr1.parquet"))
    examples, report = load_examples(
        str(tmp_path / "sr1.parquet"), question_field="problem", image_field="images", answer_field="answer"
    )
    assert [e.answer for e in examples] == ["3", "B"] and examples[0].meta == {}
    assert examples[0].image.getpixel((0, 0)) == (1, 2, 3)  # a list of one image gives the image
    assert [image.getpixel((0, 0)) for image in examples[1].image] == [(9, 9, 9), (1, 2, 3)]  # every image, in order
    assert report.several_images == 1 and "1 with several images (all are used)" in report.summary()
    examples, report = load_examples(
        str(tmp_path / "sr1.parquet"),
        question_field="problem",
        image_field="images",
        answer_field="answer",
        images_per_row="first",
    )
    assert examples[1].image.getpixel((0, 0)) == (9, 9, 9) and examples[1].images == [examples[1].image]
    assert "1 with several images (the first is used: images_per_row=first)" in report.summary()
    with pytest.raises(
        DataError,
        match=r"no column 'question' \(set question_field\); its columns are: "
        r"problem, images, answer",
    ):
        prepare_examples(rows)


# --- bad rows -----------------------------------------------------------------------------------------------


BAD = [
    ({**GOOD, "image": "images/missing.png"}, "missing image", "image", r"image file 'images/missing.png' not found"),
    ({**GOOD, "image": b"\x89PNG but random bytes after"}, "unreadable image", "image", r"unreadable image"),
    ({**GOOD, "image": png_bytes((10, 10))}, "tiny image", "image", r"10x10, under min_image_side=28"),
    ({**GOOD, "question": "   "}, "empty question", "question", r"the question is empty"),
    ({**GOOD, "answer": ""}, "empty answer", "answer", r"the answer is empty"),
    ({**GOOD, "question": "word " * 50}, "prompt too long", "question", r"50 tokens, over max_prompt_length=20"),
    ({**GOOD, "image": None}, "missing image", "image", r"no image"),
]


def test_skip_counts_every_reason_and_keeps_the_good_rows_in_order(tmp_path, caplog):
    rows = [GOOD] + [row for row, *_ in BAD] + [{**GOOD, "answer": "last"}]
    path = write_jsonl(tmp_path, rows)
    caplog.set_level(logging.INFO, logger="vigos.data")
    examples, report = load_examples(str(path), **WORDS)
    assert [e.answer for e in examples] == ["red", "last"] and [e.row for e in examples] == [0, 8]
    assert report.skipped == {
        "missing image": 2,
        "unreadable image": 1,
        "tiny image": 1,
        "empty question": 1,
        "empty answer": 1,
        "prompt too long": 1,
    }
    assert set(report.skipped) <= set(SKIP_REASONS)
    assert report.total == 9 and report.kept == 2
    assert report.summary().startswith("2 of 9 rows kept; skipped 7 (1 empty answer, 1 empty question, 2 missing image")
    assert len(report.examples_of_skips) == 5 and report.examples_of_skips[0].startswith("row 1 (field 'image')")
    assert "2 of 9 rows kept" in caplog.text and "skipped row 1 (field 'image')" in caplog.text


@pytest.mark.parametrize("row, reason, field, detail", BAD, ids=[b[1] for b in BAD])
def test_error_mode_names_the_row_field_and_fix(tmp_path, row, reason, field, detail):
    path = write_jsonl(tmp_path, [GOOD, GOOD, row])
    with pytest.raises(
        BadRowError, match=rf"^row 2 \(field '{field}'\): .*{detail}.* or set bad_rows: skip$"
    ) as caught:
        load_examples(str(path), bad_rows="error", **WORDS)
    assert (caught.value.row, caught.value.field, caught.value.reason) == (2, field, reason)
    assert isinstance(caught.value, ValueError)


def test_bad_images_inside_an_image_column_are_rows_not_crashes(tmp_path):
    """A corrupt image in a datasets Image column would raise from inside datasets on plain iteration."""
    rows = image_rows(4)
    rows["image"][1] = {"bytes": b"not an image", "path": None}
    rows["image"][2] = {"bytes": None, "path": "gone.png"}
    dataset = datasets.Dataset.from_dict(rows, features=IMAGE_FEATURES)
    examples, report = prepare_examples(dataset, base_dir=tmp_path)
    assert [e.row for e in examples] == [0, 3] and report.skipped == {"unreadable image": 1, "missing image": 1}
    with pytest.raises(BadRowError, match=r"^row 1 \(field 'image'\): unreadable image bytes"):
        prepare_examples(dataset, bad_rows="error", base_dir=tmp_path)


def test_a_failing_prompt_length_is_a_bad_row(tmp_path):
    def prompt_length(question, images):
        if "odd" in question:
            raise ValueError("absolute aspect ratio must be smaller than 200")
        return 5

    rows = datasets.Dataset.from_dict({**image_rows(2), "question": ["fine", "odd one"]}, features=IMAGE_FEATURES)
    examples, report = prepare_examples(rows, max_prompt_length=10, prompt_length=prompt_length)
    assert len(examples) == 1 and report.skipped == {"prompt failed": 1}
    assert "ValueError: absolute aspect ratio" in report.examples_of_skips[0]
    examples, report = prepare_examples(rows, prompt_length=prompt_length)  # no max_prompt_length: not called
    assert len(examples) == 2


def test_non_text_question_and_nan_answer(tmp_path):
    path = write_jsonl(tmp_path, [{**GOOD, "question": ["a", "list"]}, {**GOOD, "answer": None}, GOOD])
    examples, report = load_examples(str(path))
    assert len(examples) == 1 and report.skipped == {"question not text": 1, "empty answer": 1}
    table = datasets.Dataset.from_dict(
        {**image_rows(2), "answer": [float("nan"), 4.0]},
        features=datasets.Features({**IMAGE_FEATURES, "answer": datasets.Value("float64")}),
    )
    examples, report = prepare_examples(table)
    assert [e.answer for e in examples] == ["4.0"] and report.skipped == {"empty answer": 1}


def test_limit_stops_after_that_many_kept_examples(tmp_path):
    path = write_jsonl(tmp_path, [GOOD, {**GOOD, "question": ""}, GOOD, GOOD, GOOD])
    examples, report = load_examples(str(path), limit=2)
    assert [e.row for e in examples] == [0, 2] and report.total == 3 and report.stopped_at_limit == 2
    assert report.summary() == "2 of 3 rows kept; skipped 1 (1 empty question); stopped at limit=2"
    examples, report = load_examples(str(path), limit=4)
    assert len(examples) == 4 and report.stopped_at_limit is None


# --- image paths out of the dataset's folder (issue #13 item 2) -----------------------------------------------


def test_image_paths_out_of_the_dataset_folder_are_bad_rows_unless_allowed(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "secret.png").write_bytes(png_bytes(colour=(7, 7, 7)))
    rows = [GOOD, {**GOOD, "image": "../secret.png"}, {**GOOD, "image": str(tmp_path / "secret.png")}]
    path = write_jsonl(data, rows)
    examples, report = load_examples(str(path))
    assert [e.row for e in examples] == [0] and report.skipped == {"image outside folder": 2}
    assert report.examples_of_skips[0] == (
        f"row 1 (field 'image'): image path '../secret.png' resolves to {tmp_path / 'secret.png'}, outside the "
        f"dataset folder {data}; set allow_image_paths_outside: true to allow it"
    )
    with pytest.raises(
        BadRowError,
        match=r"^row 1 \(field 'image'\): image path '\.\./secret\.png' resolves to .*"
        r"set allow_image_paths_outside: true to allow it — fix the row or set "
        r"bad_rows: skip$",
    ) as caught:
        load_examples(str(path), bad_rows="error")
    assert caught.value.reason == "image outside folder"
    for lazy in (False, True):
        examples, report = load_examples(str(path), lazy=lazy, allow_image_paths_outside=True)
        assert report.kept == 3 and [examples[i].image.getpixel((0, 0)) for i in (1, 2)] == [(7, 7, 7)] * 2


# --- text that is not UTF-8 (issue #13 item 10) ----------------------------------------------------------------


def write_lines(path, lines: list[bytes]):
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def line(**row) -> bytes:
    return json.dumps({**{k: v for k, v in GOOD.items() if k != "image"}, "image": "images/0.png", **row}).encode()


LATIN_1 = b'{"question": "caf\xe9 ou th\xe9?", "answer": "red", "image": "images/0.png"}'


@pytest.mark.parametrize("mixed", [False, True], ids=["one type per column", "a column of mixed types"])
def test_a_jsonl_line_that_is_not_utf8_is_a_bad_row_named_by_its_line(tmp_path, mixed):
    write_jsonl(tmp_path, [GOOD])  # images/0.png
    # With mixed types in a column, datasets parses the file in Python and the bytes failed the whole load.
    path = write_lines(tmp_path / "data.jsonl", [line(answer=7 if mixed else "red"), LATIN_1, line(answer="x")])
    examples, report = load_examples(str(path))
    assert [(e.row, e.answer) for e in examples] == [(0, "7" if mixed else "red"), (2, "x")]
    assert report.skipped == {"text not UTF-8": 1} and report.total == 3
    [skip] = report.examples_of_skips
    assert skip.startswith(
        "row 1 (field 'question'): the value holds bytes that are not UTF-8 (line 2 of "
        """data.jsonl: b'{"question": "caf\\xe9 ou th\\xe9?"""
    )
    with pytest.raises(
        BadRowError,
        match=r"^row 1 \(field 'question'\): the value holds bytes that are not UTF-8 "
        r"\(line 2 of data\.jsonl: .*\) — save the file as UTF-8 or set bad_rows: "
        r"skip$",
    ) as caught:
        load_examples(str(path), bad_rows="error")
    assert caught.value.reason == "text not UTF-8"


def test_a_parquet_string_that_is_not_utf8_is_a_bad_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # A writer that does not check its strings (pyarrow does): a binary column viewed as strings.
    questions = pa.array([b"fine", b"caf\xe9", b"also fine"], type=pa.binary()).view(pa.string())
    images = pa.array(
        [{"bytes": png_bytes(), "path": None}] * 3, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    )
    table = pa.table({"question": questions, "answer": ["a", "b", "c"], "image": images})
    pq.write_table(table, tmp_path / "data.parquet")
    examples, report = load_examples(str(tmp_path / "data.parquet"))
    assert [e.question for e in examples] == ["fine", "also fine"] and report.skipped == {"text not UTF-8": 1}
    with pytest.raises(
        BadRowError,
        match=r"^row 1 \(field 'question'\): the value holds bytes that are not UTF-8 "
        r"\(b'caf\\xe9'\)",
    ):
        load_examples(str(tmp_path / "data.parquet"), bad_rows="error")


def test_bytes_that_are_not_utf8_where_no_row_can_be_set_apart_stop_with_the_line(tmp_path):
    write_lines(tmp_path / "list.json", [b"[" + line(), b", " + LATIN_1 + b"]"])
    with pytest.raises(
        DataError,
        match=r"list\.json': line 2 of list\.json holds bytes that are not UTF-8 .*a JSON "
        r"list is one document, so its rows cannot be skipped",
    ):
        load_rows(str(tmp_path / "list.json"))
    write_lines(tmp_path / "key.jsonl", [line(), b'{"qu\xe9stion": "q", "answer": "a", "image": "x.png"}'])
    with pytest.raises(DataError, match=r"line 2 of key\.jsonl holds bytes that are not UTF-8 outside a text value"):
        load_rows(str(tmp_path / "key.jsonl"))


# --- configuration errors -----------------------------------------------------------------------------------


def test_wrong_field_and_wrong_mode_are_config_errors(tmp_path):
    path = write_jsonl(tmp_path, [GOOD, {**GOOD, "image": "images/missing.png"}])
    with pytest.raises(
        DataError,
        match=r"no column 'images' \(set image_field\); its columns are: "
        r"question, answer, image, source, difficulty — did you mean 'image'\?",
    ):
        load_examples(str(path), image_field="images", bad_rows="skip")
    with pytest.raises(DataError, match=r"no column 'problem' \(set question_field\)"):
        load_examples(str(path), question_field="problem", bad_rows="error")
    with pytest.raises(DataError, match=r"bad_rows must be one of skip, error; got 'ignore'"):
        prepare_examples(load_rows(str(path)), bad_rows="ignore")
    with pytest.raises(DataError, match=r"pass one split \(set dataset_split\)"):
        prepare_examples(datasets.DatasetDict({"train": load_rows(str(path))}))


def test_missing_and_unusable_sources_have_clear_messages(tmp_path):
    for missing in (tmp_path / "nope.jsonl", tmp_path / "no" / "such" / "dir", "./not-here"):
        with pytest.raises(DatasetNotFoundError, match=rf"dataset path '{missing}' not found") as caught:
            load_rows(str(missing))
        assert isinstance(caught.value, FileNotFoundError)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"holds no saved dataset .* it holds: notes\.txt"):
        load_rows(str(tmp_path / "empty"))
    (tmp_path / "broken.jsonl").write_text(json.dumps({"question": "q"}) + '\n{"question": \n')
    with pytest.raises(DataError, match=r"broken\.jsonl: line 2 is not valid JSON"):
        load_rows(str(tmp_path / "broken.jsonl"))
    (tmp_path / "table.csv").write_text("question,answer\n")
    with pytest.raises(DataError, match=r"is not parquet, JSONL or JSON"):
        load_rows(str(tmp_path / "table.csv"))


def test_hub_id_offline_says_the_hub_is_unreachable():
    with pytest.raises(
        DataError,
        match=r"could not load dataset 'nobody/no-such-dataset': not a local file or "
        r"directory and the hub is unreachable \(.+\)",
    ):
        load_rows("nobody/no-such-dataset")


# --- property -----------------------------------------------------------------------------------------------


TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["", "  ", "\t\n", " x "]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=6))
def test_a_row_is_kept_exactly_when_question_and_answer_have_text(pairs):
    image = {"bytes": png_bytes(), "path": None}
    rows = datasets.Dataset.from_dict(
        {"question": [q for q, _ in pairs], "answer": [a for _, a in pairs], "image": [image] * len(pairs)},
        features=IMAGE_FEATURES,
    )
    examples, report = prepare_examples(rows)
    expected = [(i, q.strip(), a.strip()) for i, (q, a) in enumerate(pairs) if q.strip() and a.strip()]
    assert [(e.row, e.question, e.answer) for e in examples] == expected
    assert report.kept + sum(report.skipped.values()) == report.total == len(pairs)


# --- the report -------------------------------------------------------------------------------------------------


def test_report_summary_says_how_several_images_are_used():
    summary = DataReport(total=3, kept=3, several_images=2).summary()
    assert summary == "3 of 3 rows kept; 2 with several images (all are used)"
    assert "(the first is used" in DataReport(total=1, kept=1, several_images=1, images_per_row="first").summary()
    assert "several" not in DataReport(total=1, kept=1).summary()
