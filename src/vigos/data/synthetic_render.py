"""A synthetic scene and its drawing: shapes, copies and text at their positions on a plain canvas."""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from vigos.data.synthetic_kinds import BACKGROUND, MAX_COUNT, OBJECT_KINDS, SCENE_COLOURS, TEXT_COLOUR, ObjectKind

SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")


MAX_TEXT_CHARS = 8

# Geometry on the 112-pixel reference canvas; other sizes scale it.
_CANVAS = 112
_SIDE = {"large": 68, "small": 42}
_MARGIN = 5
_JITTER = 2
_COPY_SIDE = 34
_COPY_STEP = 42
_COPY_JITTER = 2
_COPY_CENTRE_Y = 58
_FONT_SIZE = 10
_TEXT_INSET = 2


@dataclass(frozen=True)
class Scene:
    """The ground truth of one image.

    ``count`` copies of ``kind`` in ``colour``; a scene with more than one
    copy is drawn as a small group in the center. ``text`` is a short word
    printed in a free strip at the top (at the bottom when the object is at
    the top), or ``None``.
    """

    kind: str
    colour: str
    count: int
    size: str
    position: str
    text: str | None


def check_scene(scene: Scene) -> ObjectKind:
    """Raise ``ValueError`` naming the field when ``scene`` cannot be drawn; return its kind."""
    if scene.kind not in OBJECT_KINDS:
        raise ValueError(f"scene kind {scene.kind!r} is not registered; known kinds: {sorted(OBJECT_KINDS)}")
    if scene.colour not in SCENE_COLOURS:
        raise ValueError(f"scene colour {scene.colour!r} is not one of {sorted(SCENE_COLOURS)}")
    if scene.size not in SIZES:
        raise ValueError(f"scene size {scene.size!r} is not one of {SIZES}")
    if scene.position not in POSITIONS:
        raise ValueError(f"scene position {scene.position!r} is not one of {POSITIONS}")
    if not isinstance(scene.count, int) or not 1 <= scene.count <= MAX_COUNT:
        raise ValueError(f"scene count {scene.count!r} must be an integer between 1 and {MAX_COUNT}")
    if scene.count > 1 and (scene.size, scene.position) != ("small", "center"):
        raise ValueError(
            "a scene with count > 1 is drawn as a small group in the center: set size='small' and position='center'"
        )
    if scene.text is not None and not (0 < len(scene.text) <= MAX_TEXT_CHARS and scene.text.isprintable()):
        raise ValueError(f"scene text {scene.text!r} must be 1 to {MAX_TEXT_CHARS} printable characters, or None")
    return OBJECT_KINDS[scene.kind]


def _single_centre(size: str, position: str) -> tuple[float, float]:
    half = _SIDE[size] / 2
    near, far, mid = _MARGIN + half, _CANVAS - _MARGIN - half, _CANVAS / 2
    return {"left": (near, mid), "right": (far, mid), "top": (mid, near), "bottom": (mid, far), "center": (mid, mid)}[
        position
    ]


def _copy_centres(count: int) -> list[tuple[float, float]]:
    """Centres of ``count`` copies: a row of up to two, then a second row."""
    mid, step = _CANVAS / 2, _COPY_STEP / 2
    rows = [count] if count <= 2 else [2, count - 2]
    ys = [_COPY_CENTRE_Y] if len(rows) == 1 else [_COPY_CENTRE_Y - step, _COPY_CENTRE_Y + step]
    centres = []
    for y, in_row in zip(ys, rows):
        xs = [mid] if in_row == 1 else [mid - step, mid + step]
        centres.extend((x, y) for x in xs)
    return centres


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except ImportError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render_scene(scene: Scene, image_size: int = 112, seed: int | None = None) -> Image.Image:
    """Draw ``scene`` as an ``image_size`` x ``image_size`` RGB image.

    A single object's square box is 68/112 (large) or 42/112 (small) of the
    side, at its position; ``count`` > 1 copies are 34/112 each on a grid in
    the center. With a ``seed`` every box moves by a few pixels (the same
    seed, the same image); without one the layout is exact. Shapes are drawn
    without anti-aliasing, so every object pixel has exactly
    ``SCENE_COLOURS[scene.colour]``.
    """
    kind = check_scene(scene)
    if image_size < 48:
        raise ValueError(f"image_size {image_size} is too small to draw a scene; use at least 48")
    scale = image_size / _CANVAS
    rng = random.Random(seed) if seed is not None else None

    def jitter(limit: int) -> tuple[int, int]:
        return (rng.randint(-limit, limit), rng.randint(-limit, limit)) if rng else (0, 0)

    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    if scene.count == 1:
        side, centres, limit = _SIDE[scene.size], [_single_centre(scene.size, scene.position)], _JITTER
    else:
        side, centres, limit = _COPY_SIDE, _copy_centres(scene.count), _COPY_JITTER
    rgb = SCENE_COLOURS[scene.colour]
    for cx, cy in centres:
        dx, dy = jitter(limit)
        x0, y0 = round((cx - side / 2 + dx) * scale), round((cy - side / 2 + dy) * scale)
        extent = round(side * scale) - 1
        kind.draw(draw, (x0, y0, x0 + extent, y0 + extent), rgb)
    if scene.text is not None:
        font = _font(max(8, round(_FONT_SIZE * scale)))
        inset = round(_TEXT_INSET * scale)
        left, top, _, bottom = draw.textbbox((0, 0), scene.text, font=font)
        # The strip opposite a top object; every layout leaves both strips free otherwise.
        y = image_size - inset - bottom if scene.position == "top" else inset - top
        draw.text((inset * 2 - left, y), scene.text, fill=TEXT_COLOUR, font=font)
    return image
