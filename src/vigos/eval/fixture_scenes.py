"""The pictures and files the benchmark fixtures are made of: coloured shapes, text images, parquet writing."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from vigos.eval.sources import option_letter

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 40)}
SHAPES = ("circle", "square", "triangle", "star")
_DRAWN_SHAPES = SHAPES[:3]
_SIZE = (96, 72)


@dataclass(frozen=True)
class Scene:
    """What a fixture image shows: ``count`` shapes of one kind and colour."""

    shape: str
    color: str
    count: int

    def draw(self, size: tuple[int, int] = _SIZE) -> Image.Image:
        image = Image.new("RGB", size, "white")
        pen = ImageDraw.Draw(image)
        cell = size[0] // max(self.count, 1)
        radius = min(cell, size[1]) // 3
        for i in range(self.count):
            cx, cy = cell * i + cell // 2, size[1] // 2
            box = (cx - radius, cy - radius, cx + radius, cy + radius)
            fill = COLORS[self.color]
            if self.shape == "circle":
                pen.ellipse(box, fill=fill)
            elif self.shape == "square":
                pen.rectangle(box, fill=fill)
            else:
                pen.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill)
        return image


def _scene(rng: random.Random, **fixed: Any) -> Scene:
    values = {"shape": rng.choice(_DRAWN_SHAPES), "color": rng.choice(list(COLORS)), "count": rng.randint(1, 3)}
    return Scene(**{**values, **fixed})


def _text_image(lines: list[str]) -> Image.Image:
    """A screenshot-like image of text (MMMU-Pro's vision setting)."""
    image = Image.new("RGB", (320, 18 * len(lines) + 12), "white")
    pen = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        pen.text((8, 6 + 18 * i), line, fill="black")
    return image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _write_parquet(path: Path, rows: list[dict[str, Any]], features: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([features.encode_example(row) for row in rows], schema=features.arrow_schema)
    pq.write_table(table, path)


def _shape_choice(rng: random.Random, scene: Scene) -> tuple[list[str], str]:
    """Shape-name options in a random order and the letter of the one drawn."""
    options = list(SHAPES)
    rng.shuffle(options)
    return options, option_letter(options.index(scene.shape))
