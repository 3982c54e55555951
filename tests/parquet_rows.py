"""Parquet datasets of rows with a list of images, written and loaded back as vigos loads them, for the tests
of vigos.data's examples (lazy rows) and of its validation pass."""

from __future__ import annotations

import io

import datasets
from PIL import Image

from vigos.data.rows import load_rows

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


CAPPED = dict(max_images_per_row=2, **FIELDS)
