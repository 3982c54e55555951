"""The datasets of the data benchmark (bench/bench_data.py): rows shaped like Vision-SR1-47K, in two layouts.

Columns ``problem``, ``images`` (a list holding one image) and ``answer``;
about 1-megapixel JPEGs (100-300 KB each, like photos and figures), or small
square ones for tests (``image_side``). Layouts:

- ``parquet``: a directory ``data/train-0000k-of-0000n.parquet`` as on the hub,
  the images embedded as bytes in a ``List(Image())`` column (hub shards and
  100-row row groups, no dictionary encoding of the bytes);
- ``jsonl``: ``train.jsonl`` and one JPEG file per row under ``images/``, the
  rows naming them by relative path.

A pool of a few hundred distinct images is drawn once and its bytes are reused
across rows (every row stores its own copy; every row's question and answer
are its own). Everything written is cached under the data directory and
published by a rename, so a half-written pool or dataset is never seen.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

LAYOUTS = ("parquet", "jsonl")
# Bump when the generated data changes for the same arguments, so cached datasets are redone.
DATA_VERSION = 1
# About one megapixel each; the pool cycles through them.
SHAPES = ((1000, 1000), (1024, 1024), (1120, 896), (896, 1120))
PARQUET_SHARD_ROWS = 2000  # about 400 MB a shard at 200 KB an image (hub shards are a few hundred MB)
PARQUET_ROW_GROUP = 100  # what `datasets` writes for image columns
JSONL_DIR_FILES = 1000  # image files per subdirectory


def default_data_dir() -> Path:
    """``$VIGOS_CACHE/bench-data``, else ``~/.cache/vigos/bench-data``."""
    return Path(os.environ.get("VIGOS_CACHE") or Path.home() / ".cache" / "vigos") / "bench-data"


# --------------------------------------------------------------------------- generation


def _draw_image(seed: int, size: tuple[int, int], noise: float) -> bytes:
    """A JPEG of smooth colour fields, shapes, lines, text and sensor-like noise (100-300 KB at ~1 MP)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    width, height = size
    scale = (width * height / 10**6) ** 0.5
    field = rng.integers(0, 256, (int(rng.integers(4, 12)), int(rng.integers(4, 12)), 3), dtype=np.uint8)
    image = Image.fromarray(field).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(10, 300) * scale), y0 + int(rng.integers(10, 300) * scale)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        elif kind == 1:
            draw.ellipse([x0, y0, x1, y1], outline=colour, width=int(rng.integers(1, 8)))
        else:
            draw.line([x0, y0, x1, y1], fill=colour, width=int(rng.integers(1, 6)))
    for _ in range(30):
        xy = (int(rng.integers(0, max(width - 100, 1))), int(rng.integers(0, max(height - 20, 1))))
        draw.text(xy, f"x={int(rng.integers(0, 1000))}", fill=(0, 0, 0))
    pixels = np.asarray(image, dtype=np.int16)
    if noise:
        pixels = pixels + rng.normal(0.0, noise, pixels.shape).astype(np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def _shapes(image_side: int | None) -> tuple[tuple[int, int], ...]:
    return SHAPES if image_side is None else ((image_side, image_side),)


def image_pool(data_dir: Path, count: int, *, image_side: int | None = None, seed: int = 0) -> list[bytes]:
    """``count`` distinct JPEGs (bytes), drawn once and cached under ``data_dir``."""
    shape = "1mp" if image_side is None else f"{image_side}px"
    where = Path(data_dir) / f"pool-v{DATA_VERSION}-{shape}-n{count}-s{seed}"
    names = [f"{k:05d}.jpg" for k in range(count)]
    if not (where / "done").exists():
        scratch = Path(tempfile.mkdtemp(prefix=where.name + ".", dir=data_dir))
        shapes = _shapes(image_side)
        for k, name in enumerate(names):
            # A small image has little detail to carry noise; keep it plain so it stays small.
            noise = 4.0 if image_side is None else 0.0
            (scratch / name).write_bytes(_draw_image(seed * 1_000_003 + k, shapes[k % len(shapes)], noise))
        (scratch / "done").write_text("")
        publish(scratch, where)
    return [(where / name).read_bytes() for name in names]


def publish(scratch: Path, final: Path) -> None:
    """Move a finished directory into place; a concurrent writer that got there first wins."""
    try:
        os.replace(scratch, final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(scratch, ignore_errors=True)


_OBJECTS = ("triangles", "circles", "squares", "stars", "apples", "cars", "birds", "books")
_COLOURS = ("red", "blue", "green", "yellow", "black", "orange", "purple", "grey")


def row_text(index: int, *, seed: int = 0) -> tuple[str, str]:
    """The ``problem`` and ``answer`` of row ``index``: distinct for every row, a few sentences and a short answer."""
    import random

    rng = random.Random(seed * 1_000_003 + index)
    a, b = rng.randint(2, 999), rng.randint(2, 999)
    thing, colour = rng.choice(_OBJECTS), rng.choice(_COLOURS)
    kind = index % 3
    if kind == 0:
        problem = (
            f"Item {index}. The figure shows {a} {colour} {thing} in the left panel and {b} in the right "
            f"panel. How many {colour} {thing} are shown in total?"
        )
        answer = str(a + b)
    elif kind == 1:
        problem = (
            f"Item {index}. In the chart, the bar labelled '{colour}' reaches {a} and the bar labelled "
            f"'{thing}' reaches {b}. What is the difference between the two bars?"
        )
        answer = str(abs(a - b))
    else:
        problem = (
            f"Item {index}. A rectangle in the diagram is {a} units wide and {b} units tall. Based on the "
            "image, what is its area in square units?"
        )
        answer = str(a * b)
    return problem, answer


def _features():
    import datasets

    return datasets.Features(
        {
            "problem": datasets.Value("string"),
            "images": datasets.List(datasets.Image()),
            "answer": datasets.Value("string"),
        }
    )


def _write_parquet(root: Path, rows: int, pool: list[bytes], seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _features().arrow_schema  # carries the `huggingface` metadata: datasets reads an Image list
    shards = max(1, -(-rows // PARQUET_SHARD_ROWS))
    (root / "data").mkdir(parents=True)
    for shard in range(shards):
        start, stop = shard * PARQUET_SHARD_ROWS, min(rows, (shard + 1) * PARQUET_SHARD_ROWS)
        path = root / "data" / f"train-{shard:05d}-of-{shards:05d}.parquet"
        with pq.ParquetWriter(path, schema, use_dictionary=False, compression="snappy") as writer:
            for group in range(start, stop, PARQUET_ROW_GROUP):
                indices = range(group, min(stop, group + PARQUET_ROW_GROUP))
                texts = [row_text(i, seed=seed) for i in indices]
                table = pa.Table.from_pydict(
                    {
                        "problem": [p for p, _ in texts],
                        "images": [[{"bytes": pool[i % len(pool)], "path": f"{i:06d}.jpg"}] for i in indices],
                        "answer": [a for _, a in texts],
                    },
                    schema=schema,
                )
                writer.write_table(table, row_group_size=PARQUET_ROW_GROUP)


def _write_jsonl(root: Path, rows: int, pool: list[bytes], seed: int) -> None:
    root.mkdir(parents=True)
    with (root / "train.jsonl").open("w", encoding="utf-8") as out:
        for i in range(rows):
            relative = f"images/{i // JSONL_DIR_FILES:03d}/{i:06d}.jpg"
            if i % JSONL_DIR_FILES == 0:
                (root / relative).parent.mkdir(parents=True)
            (root / relative).write_bytes(pool[i % len(pool)])
            problem, answer = row_text(i, seed=seed)
            out.write(json.dumps({"problem": problem, "images": [relative], "answer": answer}) + "\n")


def dataset_root(data_dir: Path, rows: int, layout: str, *, distinct: int, image_side: int | None, seed: int) -> Path:
    shape = "1mp" if image_side is None else f"{image_side}px"
    return Path(data_dir) / f"sr1like-v{DATA_VERSION}-{shape}-n{distinct}-s{seed}" / f"{rows}-{layout}"


def generate(
    data_dir: Path | str, rows: int, layout: str, *, distinct: int = 256, image_side: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """Write (once) a generated dataset; returns its info: ``source`` (what to pass as ``--dataset``), size, timing.

    ``image_side`` None: about 1-megapixel images; else square images of that
    side (tests). A finished dataset is reused; a half-written one is never seen
    (written aside, then moved into place).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    data_dir = Path(data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    root = dataset_root(data_dir, rows, layout, distinct=distinct, image_side=image_side, seed=seed)
    info_path = root / "bench_data.json"
    if not info_path.exists():
        import pyarrow.parquet  # noqa: F401  (imports outside the timed part)

        _features()
        started = time.perf_counter()
        pool = image_pool(data_dir, min(distinct, rows), image_side=image_side, seed=seed)
        pool_s = time.perf_counter() - started
        root.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
        target = scratch / "out"
        (_write_parquet if layout == "parquet" else _write_jsonl)(target, rows, pool, seed)
        info = dict(
            rows=rows,
            layout=layout,
            distinct_images=len(pool),
            image_side=image_side,
            seed=seed,
            image_shapes=[list(s) for s in _shapes(image_side)],
            mean_image_bytes=sum(len(b) for b in pool) / len(pool),
            disk_bytes=_disk_bytes(target),
            pool_seconds=pool_s,
            write_seconds=time.perf_counter() - started - pool_s,
            version=DATA_VERSION,
            note=f"{len(pool)} distinct images, their bytes reused across rows (each row stores its own "
            "copy); every row's problem and answer are distinct",
        )
        (target / "bench_data.json").write_text(json.dumps(info, indent=1) + "\n")
        publish(target, root)
        shutil.rmtree(scratch, ignore_errors=True)
    info = json.loads(info_path.read_text())
    info["root"] = str(root)
    info["source"] = str(root / "train.jsonl") if layout == "jsonl" else str(root)
    return info


def _disk_bytes(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())
