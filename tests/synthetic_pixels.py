"""Pixel helpers shared by the tests of the synthetic world (rendering, kinds, labels): palette counts, shapes."""

from __future__ import annotations

import itertools
from collections import Counter

from PIL import Image

from vigos.data.synthetic_kinds import OBJECT_KINDS, SCENE_COLOURS

KINDS = sorted(OBJECT_KINDS)
COUNT_KINDS = [name for name in KINDS if OBJECT_KINDS[name].prior_count is not None]


def palette_counts(image: Image.Image) -> Counter:
    """How many pixels have exactly each scene colour (the palette and the obscured grey), by name."""
    by_rgb = {rgb: name for name, rgb in SCENE_COLOURS.items()}
    return Counter(by_rgb[p] for p in image.get_flattened_data() if p in by_rgb)


def object_pixels(image: Image.Image, colour: str) -> list[tuple[int, int]]:
    rgb, width = SCENE_COLOURS[colour], image.width
    return [(i % width, i // width) for i, p in enumerate(image.get_flattened_data()) if p == rgb]


def components(pixels: list[tuple[int, int]]) -> int:
    """Connected components of a pixel set, 8-connectivity, by flood fill."""
    remaining, found = set(pixels), 0
    while remaining:
        found += 1
        stack = [remaining.pop()]
        while stack:
            x, y = stack.pop()
            for dx, dy in itertools.product((-1, 0, 1), repeat=2):
                neighbour = (x + dx, y + dy)
                if neighbour in remaining:
                    remaining.remove(neighbour)
                    stack.append(neighbour)
    return found


def in_region(centroid: tuple[float, float], position: str, size: int) -> bool:
    """The centroid lies in the part of the canvas that ``position`` names."""
    x, y = (c / size - 0.5 for c in centroid)
    near, off = 0.08, 0.1  # displacement needed toward the side; slack across it
    return {
        "left": x < -near and abs(y) < off,
        "right": x > near and abs(y) < off,
        "top": y < -near and abs(x) < off,
        "bottom": y > near and abs(x) < off,
        "center": abs(x) < off and abs(y) < off,
    }[position]


def centroid(pixels: list[tuple[int, int]]) -> tuple[float, float]:
    return sum(x for x, _ in pixels) / len(pixels), sum(y for _, y in pixels) / len(pixels)
