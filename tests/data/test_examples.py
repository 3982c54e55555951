"""Rows read when needed (LazyExamples), the validation pass (parallel, cached) and rows with several images."""

from __future__ import annotations

import gc
import io
import json
import logging
import pickle
import time
import weakref

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from train_args import tiny_run_args
from vigos.data import validation
from vigos.data.examples import LazyExamples, load_examples, prepare_examples, prepare_lazy_examples
from vigos.data.rows import BadRowError, DataReport, load_rows
from vigos.data.validation import RowChecks, cache_key, cache_settings, validate_rows
from vigos.errors import DataError

datasets.disable_progress_bars()

FEATURES = datasets.Features(
    {
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "images": datasets.List(datasets.Image()),
        "source": datasets.Value("string"),
    }
)
FIELDS = dict(question_field="question", image_field="images", answer_field="answer")


def png(colour=(200, 0, 0), size=(32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def image(data: bytes) -> dict:
    return {"bytes": data, "path": None}


def row(i: int, images: list | None = None, **fields) -> dict:
    """Row ``i``: question Q<i>, answer a<i>, one image of colour (i, 0, 0) unless ``images`` says otherwise."""
    return {
        "question": f"Q{i}",
        "answer": f"a{i}",
        "images": [image(png((i, 0, 0)))] if images is None else images,
        "source": f"s{i}",
        **fields,
    }


def write(tmp_path, rows: list[dict], name: str = "data.parquet") -> datasets.Dataset:
    """``rows`` as a parquet file, loaded back as vigos loads it (a memory-mapped Dataset with a fingerprint)."""
    columns = {key: [r[key] for r in rows] for key in FEATURES}
    datasets.Dataset.from_dict(columns, features=FEATURES).to_parquet(str(tmp_path / name))
    return load_rows(str(tmp_path / name))


def mixed_rows(n: int = 24) -> list[dict]:
    """Good one- and two-image rows with a bad row of every kind between them."""
    rows = []
    for i in range(n):
        kind = i % 8
        if kind == 1:
            rows.append(row(i, [image(png((i, 0, 0))), image(png((0, i, 0)))]))
        elif kind == 3:
            rows.append(row(i, [image(png((i, 0, 0))), image(b"not an image")]))
        elif kind == 4:
            rows.append(row(i, question="  "))
        elif kind == 5:
            rows.append(row(i, [image(png((i, 0, 0), size=(10, 10)))]))
        elif kind == 6:
            rows.append(row(i, [image(png())] * 3))
        else:
            rows.append(row(i))
    return rows


def expected(rows: list[dict]) -> list[tuple]:
    """What every kept row must give: (row, question, answer, meta, colour of each image), worked out by hand."""
    out = []
    for index, r in enumerate(rows):
        if index % 8 in (3, 4, 5, 6):
            continue
        colours = [(index, 0, 0)] + ([(0, index, 0)] if index % 8 == 1 else [])
        out.append((index, r["question"], r["answer"], {"source": r["source"]}, colours))
    return out


def seen(examples) -> list[tuple]:
    return [
        (e.row, e.question, e.answer, e.meta, [im.getpixel((5, 5)) for im in e.images])
        for e in (examples[i] for i in range(len(examples)))
    ]


CAPPED = dict(max_images_per_row=2, **FIELDS)


# --- lazy rows ----------------------------------------------------------------------------------------------


def test_lazy_examples_are_the_rows_in_order_and_match_the_eager_path(tmp_path):
    rows = mixed_rows()
    dataset = write(tmp_path, rows)
    lazy, report = prepare_lazy_examples(dataset, **CAPPED)
    assert isinstance(lazy, LazyExamples) and isinstance(lazy, torch.utils.data.Dataset)
    assert seen(lazy) == expected(rows)
    assert lazy.kept.dtype == np.int64 and list(lazy.kept) == [r for r, *_ in expected(rows)]
    eager, eager_report = prepare_examples(dataset, **CAPPED)
    assert seen(eager) == seen(lazy) and eager_report == report
    assert isinstance(lazy[1].image, list) and isinstance(lazy[0].image, Image.Image)  # a list only for several
    assert report.skipped == {"unreadable image": 3, "empty question": 3, "tiny image": 3, "too many images": 3}
    # A DataLoader (as the Trainer builds it, here with a worker process) sees the same rows.
    loader = torch.utils.data.DataLoader(lazy, batch_size=4, num_workers=1, collate_fn=list)
    assert [(e.row, e.question) for batch in loader for e in batch] == [(e[0], e[1]) for e in expected(rows)]


def test_lazy_examples_keep_nothing_decoded_and_pickle_small(tmp_path):
    small = write(tmp_path, [row(i) for i in range(20)], "small.parquet")
    big = write(tmp_path, [row(i, [image(png((i, 0, 0), size=(400, 400)))]) for i in range(20)], "big.parquet")
    sizes = []
    for dataset in (small, big):
        lazy, _ = prepare_lazy_examples(dataset, **FIELDS)
        example = lazy[3]
        alive = weakref.ref(example.image)
        del example
        gc.collect()
        assert alive() is None  # nothing inside the dataset holds on to a decoded image
        copy = pickle.loads(pickle.dumps(lazy))
        assert seen(copy) == seen(lazy)
        sizes.append(len(pickle.dumps(lazy)))
    assert max(sizes) < 8000 and abs(sizes[0] - sizes[1]) < 200  # paths and the index, not the images


def test_an_image_that_changed_after_validation_names_the_row(tmp_path):
    (tmp_path / "img").mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (i, 0, 0)).save(tmp_path / "img" / f"{i}.png")
    path = tmp_path / "data.jsonl"
    path.write_text(
        "\n".join(json.dumps({"question": f"Q{i}", "answer": "a", "image": f"img/{i}.png"}) for i in range(3))
    )
    lazy, _ = load_examples(str(path), lazy=True)
    assert isinstance(lazy, LazyExamples) and lazy[2].image.getpixel((0, 0)) == (2, 0, 0)
    (tmp_path / "img" / "1.png").unlink()
    with pytest.raises(
        BadRowError,
        match=r"^row 1 \(field 'image'\): image file 'img/1.png' not found .*"
        r"passed validation, so the image changed since",
    ) as caught:
        lazy[1]
    assert caught.value.row == 1


# --- several images per row ---------------------------------------------------------------------------------


def test_every_image_of_a_row_is_checked_and_the_bad_one_named(tmp_path):
    rows = [
        row(0, [image(png()), image(png())]),
        row(1, [image(png()), image(b"junk")]),
        row(2, [image(png()), image(png(size=(10, 10)))]),
        row(3, [image(png()), None]),
    ]
    dataset = write(tmp_path, rows)
    lengths = []
    examples, report = prepare_examples(
        dataset,
        max_prompt_length=100,
        **FIELDS,
        prompt_length=lambda question, images: lengths.append(len(images)) or 1,
    )
    assert [e.row for e in examples] == [0] and len(examples[0].images) == 2 and lengths == [2]
    assert report.examples_of_skips == [
        "row 1 (field 'images'): image 2 of 2: unreadable image bytes (UnidentifiedImageError: cannot identify "
        "image file (4 bytes))",
        "row 2 (field 'images'): image 2 of 2: the image is 10x10, under min_image_side=28",
        "row 3 (field 'images'): image 2 of 2: no image",
    ]
    with pytest.raises(
        BadRowError,
        match=r"^row 1 \(field 'images'\): image 2 of 2: unreadable image bytes .* — "
        r"fix the row or set bad_rows: skip$",
    ):
        prepare_examples(dataset, bad_rows="error", **FIELDS)


def test_a_row_over_the_image_cap_is_skipped_or_stops_the_run(tmp_path):
    dataset = write(tmp_path, [row(0), row(1, [image(png())] * 3), row(2, [])])
    examples, report = prepare_examples(dataset, **CAPPED)
    assert [e.row for e in examples] == [0]
    assert report.skipped == {"too many images": 1, "missing image": 1}
    assert report.examples_of_skips[0] == "row 1 (field 'images'): the row has 3 images, over max_images_per_row=2"
    with pytest.raises(
        BadRowError,
        match=r"^row 1 \(field 'images'\): the row has 3 images, over "
        r"max_images_per_row=2 — fix the row, raise max_images_per_row, set "
        r"images_per_row: first or set bad_rows: skip$",
    ) as caught:
        prepare_examples(dataset, bad_rows="error", **CAPPED)
    assert caught.value.reason == "too many images"
    examples, report = prepare_examples(dataset, max_images_per_row=None, **FIELDS)
    assert [len(e.images) for e in examples] == [1, 3] and report.skipped == {"missing image": 1}
    with pytest.raises(DataError, match=r"max_images_per_row must be at least 1"):
        prepare_examples(dataset, max_images_per_row=0, **FIELDS)
    with pytest.raises(DataError, match=r"images_per_row must be one of all, first; got 'some'"):
        prepare_examples(dataset, images_per_row="some", **FIELDS)


def test_images_per_row_first_uses_and_checks_only_the_first(tmp_path):
    rows = [row(0, [image(png((1, 0, 0))), image(b"junk"), image(png())]), row(1, [image(png())] * 12)]
    examples, report = prepare_examples(write(tmp_path, rows), images_per_row="first", max_images_per_row=2, **FIELDS)
    assert [e.row for e in examples] == [0, 1] and examples[0].image.getpixel((0, 0)) == (1, 0, 0)
    assert all(isinstance(e.image, Image.Image) for e in examples)
    assert report.several_images == 2
    assert report.summary() == "2 of 2 rows kept; 2 with several images (the first is used: images_per_row=first)"


def test_report_summary_says_how_several_images_are_used():
    summary = DataReport(total=3, kept=3, several_images=2).summary()
    assert summary == "3 of 3 rows kept; 2 with several images (all are used)"
    assert "(the first is used" in DataReport(total=1, kept=1, several_images=1, images_per_row="first").summary()
    assert "several" not in DataReport(total=1, kept=1).summary()


# --- the validation pass: processes, order, limit -----------------------------------------------------------


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 3 rows, so a few dozen rows make many units of work for the processes."""
    monkeypatch.setattr(validation, "_CHUNK_ROWS", 3)


@pytest.mark.parametrize("limit", [None, 7])
def test_parallel_equals_serial(tmp_path, small_chunks, limit):
    dataset = write(tmp_path, mixed_rows(40))
    serial = validate_rows(dataset, limit=limit, num_proc=1, **CAPPED)
    parallel = validate_rows(dataset, limit=limit, num_proc=2, **CAPPED)
    assert np.array_equal(serial[0], parallel[0]) and serial[1] == parallel[1]
    if limit:
        assert len(serial[0]) == limit and serial[1].stopped_at_limit == limit


def test_error_mode_names_the_first_bad_row_also_in_parallel(tmp_path, small_chunks):
    rows = [row(i) for i in range(30)]
    rows[0]["question"] = "slow"  # the first chunk finishes last
    rows[4] = row(4, [image(b"junk")])
    rows[20] = row(20, question="")
    dataset = write(tmp_path, rows)

    def prompt_length(question, images):
        if question == "slow":
            time.sleep(1.0)
        return 1

    for num_proc in (1, 2):
        with pytest.raises(BadRowError, match=r"^row 4 \(field 'images'\): unreadable image bytes") as caught:
            validate_rows(
                dataset,
                bad_rows="error",
                num_proc=num_proc,
                max_prompt_length=10,
                prompt_length=prompt_length,
                **FIELDS,
            )
        assert caught.value.row == 4
    kept, report = validate_rows(dataset, bad_rows="error", limit=4, num_proc=2, **FIELDS)  # stops before row 4
    assert list(kept) == [0, 1, 2, 3] and report.total == 4


def test_progress_is_logged_with_rows_per_second(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(validation, "_PROGRESS_EVERY", 10)
    monkeypatch.setattr(validation, "_CHUNK_ROWS", 5)
    caplog.set_level(logging.INFO, logger="vigos.data")
    validate_rows(write(tmp_path, [row(i) for i in range(20)]), **FIELDS)
    assert "checked 10 of 20 rows (10 kept)" in caplog.text and "rows/s" in caplog.text
    assert "checked 20 rows in" in caplog.text and "20 of 20 rows kept" in caplog.text


# --- the cache ----------------------------------------------------------------------------------------------


def test_a_cached_validation_decodes_nothing(tmp_path, monkeypatch, caplog):
    dataset = write(tmp_path, mixed_rows())
    cache = tmp_path / "cache"
    calls = []
    options = dict(
        max_prompt_length=50,
        prompt_length=lambda q, images: calls.append(q) or 1,
        prompt_length_key="words-v1",
        cache_dir=cache,
        **CAPPED,
    )
    kept, report = validate_rows(dataset, **options)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".json" and calls  # one whole file, no temporary left

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an image on a cached run")

    monkeypatch.setattr(validation, "resolve_image", no_decoding)
    monkeypatch.setattr(Image, "open", no_decoding)
    calls.clear()
    caplog.set_level(logging.INFO, logger="vigos.data")
    again = validate_rows(load_rows(str(tmp_path / "data.parquet")), **options)
    assert np.array_equal(again[0], kept) and again[1] == report and calls == []
    assert "checked before:" in caplog.text and str(files[0]) in caplog.text
    lazy, cached_report = prepare_lazy_examples(dataset, **options)  # the whole lazy path reads it too
    assert cached_report == report and len(lazy) == len(kept)
    with pytest.raises(ValueError, match=r"needs prompt_length_key"):
        validate_rows(dataset, **{**options, "prompt_length_key": None})


def test_a_damaged_cache_file_is_checked_again(tmp_path, caplog):
    dataset = write(tmp_path, [row(i) for i in range(3)])
    kept, _ = validate_rows(dataset, cache_dir=tmp_path / "cache", **FIELDS)
    (file,) = (tmp_path / "cache").iterdir()
    file.write_text("{not json")
    again, _ = validate_rows(dataset, cache_dir=tmp_path / "cache", **FIELDS)
    assert np.array_equal(again, kept) and "ignoring the validation cache" in caplog.text
    assert json.loads(file.read_text())["kept"] == [0, 1, 2]


def test_the_cache_key_changes_with_every_setting(tmp_path):
    dataset = write(tmp_path, [row(i) for i in range(4)])
    base = dict(checks=RowChecks(**FIELDS), bad_rows="skip", limit=None, prompt_length_key=None)
    variants = [
        {"checks": RowChecks(**{**FIELDS, "question_field": "source"})},
        {"checks": RowChecks(**{**FIELDS, "answer_field": "source"})},
        {"checks": RowChecks(**{**FIELDS, "image_field": "other"})},
        {"checks": RowChecks(min_image_side=29, **FIELDS)},
        {"checks": RowChecks(max_prompt_length=100, **FIELDS)},
        {"checks": RowChecks(images_per_row="first", **FIELDS)},
        {"checks": RowChecks(max_images_per_row=None, **FIELDS)},
        {"checks": RowChecks(base_dir=tmp_path, **FIELDS)},
        {"checks": RowChecks(allow_image_paths_outside=True, **FIELDS)},
        {"bad_rows": "error"},
        {"limit": 2},
        {"prompt_length_key": "another processor"},
    ]
    keys = {cache_key(cache_settings(dataset, **{**base, **variant})) for variant in [{}] + variants}
    assert len(keys) == len(variants) + 1
    reloaded = load_rows(str(tmp_path / "data.parquet"))
    assert cache_key(cache_settings(reloaded, **base)) == cache_key(cache_settings(dataset, **base))
    other_data = write(tmp_path, [row(i) for i in range(5)], "b.parquet")
    for other in (dataset.select([0, 1]), dataset.select([1, 0, 2, 3]), other_data):
        assert cache_key(cache_settings(other, **base)) not in keys  # other rows, other order, other data
    # A changed setting misses the cache: a second file.
    validate_rows(dataset, cache_dir=tmp_path / "cache", **FIELDS)
    validate_rows(dataset, cache_dir=tmp_path / "cache", min_image_side=16, **FIELDS)
    validate_rows(dataset, cache_dir=tmp_path / "cache", **FIELDS)
    assert len(list((tmp_path / "cache").iterdir())) == 2


# --- the student prompt on a real processor -----------------------------------------------------------------


def test_student_prompt_length_counts_every_image_and_its_key_follows_the_prompt(tiny_model_dir):
    from transformers import AutoProcessor

    from vigos.training.config import ViGOSConfig
    from vigos.training.recipe import student_prompt_key, student_prompt_length

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    config = ViGOSConfig(output_dir="unused", report_to="none")
    length = student_prompt_length(processor, config)
    one, two = Image.new("RGB", (56, 56)), Image.new("RGB", (112, 56))
    a, b, aa, ab, aaa = (length("What?", images) for images in ([one], [two], [one, one], [one, two], [one] * 3))
    assert aaa - aa == aa - a > 0  # each image adds its own tokens
    assert ab - aa == b - a == 4  # 112x56 is 8 merged patches, 56x56 is 4
    key = student_prompt_key(processor, config)
    assert key == student_prompt_key(processor, config) and len(key) == 64
    assert key != student_prompt_key(
        processor, ViGOSConfig(output_dir="unused", report_to="none", student_prompt="Look. {question}")
    )


# --- training on lazy rows ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_training_on_lazy_rows_gives_the_losses_of_examples_held_in_memory(tiny_model_dir, tmp_path):
    """The same rows, order and losses as the path that held every decoded example in a list."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, set_seed

    from vigos.data.examples import ExampleDataset
    from vigos.data.rows import Example
    from vigos.training.recipe import apply_lora
    from vigos.training.trainer import ViGOSTrainer

    colours = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 220, 30), (200, 0, 200), (0, 200, 200)]
    rows = [
        row(i, [image(png(rgb, size=(56, 56)))], question=f"What colour is square {i}?")
        for i, rgb in enumerate(colours)
    ]
    in_memory = ExampleDataset(
        [
            Example(r["question"], r["answer"], Image.new("RGB", (56, 56), rgb), row=i, meta={"source": r["source"]})
            for i, (r, rgb) in enumerate(zip(rows, colours))
        ]
    )
    lazy, _ = prepare_lazy_examples(write(tmp_path, rows), **FIELDS)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)

    def losses(dataset) -> list[float]:
        set_seed(0)
        model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
        args = tiny_run_args(tmp_path / "out", max_completion_length=12, num_generations=1)
        trainer = ViGOSTrainer(apply_lora(model, args), args, dataset, processor)
        trainer.train()
        return [h["loss"] for h in trainer.state.log_history if "loss" in h]

    expected_losses = losses(in_memory)
    assert len(expected_losses) == 2 and losses(lazy) == expected_losses
