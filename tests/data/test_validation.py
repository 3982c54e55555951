"""Tests for vigos.data.validation: the validation pass over the rows (processes, order, limit, progress) and
its cache."""

from __future__ import annotations

import json
import logging
import time

import datasets
import numpy as np
import pytest
from PIL import Image

from parquet_rows import CAPPED, FIELDS, image, mixed_rows, row, write
from vigos.data import validation
from vigos.data.examples import prepare_lazy_examples
from vigos.data.rows import BadRowError, load_rows
from vigos.data.validation import RowChecks, cache_key, cache_settings, validate_rows

datasets.disable_progress_bars()


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
