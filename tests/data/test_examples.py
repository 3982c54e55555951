"""Tests for vigos.data.examples: rows read when needed (LazyExamples) against the eager path, rows with several
images, training on lazy rows, and the torch dataset. The validation pass they rely on is tested in
test_validation.py."""

from __future__ import annotations

import gc
import json
import pickle
import weakref

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from parquet_rows import CAPPED, FIELDS, image, mixed_rows, png, row, write
from train_args import tiny_run_args
from vigos.data.examples import (
    ExampleDataset,
    LazyExamples,
    collate_examples,
    load_examples,
    prepare_examples,
    prepare_lazy_examples,
)
from vigos.data.rows import BadRowError, Example
from vigos.errors import DataError

datasets.disable_progress_bars()


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


# --- training on lazy rows ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_training_on_lazy_rows_gives_the_losses_of_examples_held_in_memory(tiny_model_dir, tmp_path):
    """The same rows, order and losses as the path that held every decoded example in a list."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, set_seed

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


# --- the torch dataset -------------------------------------------------------------------------------------------


def test_example_dataset_batches_are_lists_of_examples():
    examples = [Example(f"q{i}", str(i), Image.new("RGB", (32, 32)), row=i) for i in range(5)]
    dataset = ExampleDataset(examples)
    assert len(dataset) == 5 and dataset[3] is examples[3]
    batches = list(torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate_examples))
    assert [[e.row for e in batch] for batch in batches] == [[0, 1], [2, 3], [4]]
    assert all(isinstance(batch, list) and isinstance(batch[0], Example) for batch in batches)
