"""The object kinds of the synthetic world: the palette, each kind's text prior, its drawing.

An :class:`ObjectKind` names a prior ("Leaves are green.") and a ``draw``
function that fills a square box with one connected shape in one colour,
without anti-aliasing, so that every object pixel has exactly its palette
colour. :func:`register_object_kind` adds a kind to :data:`OBJECT_KINDS`,
which :mod:`vigos.data.synthetic` draws from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import ImageDraw

Box = tuple[int, int, int, int]
RGB = tuple[int, int, int]
DrawFn = Callable[[ImageDraw.ImageDraw, Box, RGB], None]

# Pairwise RGB distances are at least ~90, and every colour is far from the
# background and from the grey of printed text, so a pixel's colour name is
# never in doubt. No white: it would vanish on the light background.
COLOURS: dict[str, RGB] = {
    "red": (215, 30, 30),
    "green": (40, 160, 60),
    "blue": (30, 80, 220),
    "yellow": (240, 220, 20),
    "orange": (245, 125, 20),
    "purple": (130, 50, 190),
    "black": (30, 30, 30),
    "pink": (245, 120, 200),
}
BACKGROUND: RGB = (240, 240, 240)
TEXT_COLOUR: RGB = (110, 110, 110)
# An object drawn in this flat grey shows no palette colour: the world's "unreadable colour" (a faded
# or covered object), whose question is answered from the text prior alone. It is not a palette colour:
# no kind's prior and no conflict uses it. Its slight blue tint keeps it apart from every neutral grey
# that the anti-aliased printed text blends into the background.
OBSCURED_COLOUR = "grey"
SCENE_COLOURS: dict[str, RGB] = {**COLOURS, OBSCURED_COLOUR: (160, 160, 176)}

MAX_COUNT = 4
_KIND_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class ObjectKind:
    """One kind of object and its text prior.

    ``draw(draw, box, rgb)`` fills the square ``box`` (x0, y0, x1, y1,
    inclusive) with one connected shape in the single colour ``rgb`` and
    draws nothing outside the box. ``other_colours`` are the colours of
    prior-conflicting images. ``noun`` and ``plural`` default to the name with
    spaces for underscores and that plus "s". A kind with ``prior_count`` and
    ``count_statement`` ("A clover has three leaves.") also serves count
    questions.
    """

    name: str
    prior_colour: str
    other_colours: tuple[str, ...]
    draw: DrawFn
    prior_statement: str
    noun: str = ""
    plural: str = ""
    prior_count: int | None = None
    count_statement: str | None = None

    def __post_init__(self) -> None:
        where = f"object kind {self.name!r}"
        if not isinstance(self.name, str) or not _KIND_NAME.match(self.name):
            raise ValueError(f"{where}: name must be lowercase letters, digits and underscores, starting with a letter")
        if self.prior_colour not in COLOURS:
            raise ValueError(f"{where}: prior_colour {self.prior_colour!r} is not one of {sorted(COLOURS)}")
        others = tuple(self.other_colours)
        if not others:
            raise ValueError(f"{where}: other_colours is empty; conflicting images need at least one colour")
        for colour in others:
            if colour not in COLOURS:
                raise ValueError(f"{where}: other_colours holds {colour!r}, not one of {sorted(COLOURS)}")
        if self.prior_colour in others or len(set(others)) != len(others):
            raise ValueError(f"{where}: other_colours must be distinct and must not hold the prior colour")
        if not callable(self.draw):
            raise ValueError(f"{where}: draw must be a function (draw, box, rgb) -> None")
        if not self.prior_statement.strip():
            raise ValueError(f"{where}: prior_statement is empty")
        if (self.prior_count is None) != (self.count_statement is None):
            raise ValueError(f"{where}: give both prior_count and count_statement, or neither")
        if self.prior_count is not None and not 1 <= self.prior_count <= MAX_COUNT:
            raise ValueError(f"{where}: prior_count must be between 1 and {MAX_COUNT}")
        object.__setattr__(self, "other_colours", others)
        if not self.noun:
            object.__setattr__(self, "noun", self.name.replace("_", " "))
        if not self.plural:
            object.__setattr__(self, "plural", self.noun + "s")


# --- drawings and the registry ----------------------------------------------


def _at(box: Box, fx: float, fy: float) -> tuple[float, float]:
    """The point at fractions (fx, fy) of ``box``."""
    x0, y0, x1, y1 = box
    return x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)


def _rect(box: Box, fx0: float, fy0: float, fx1: float, fy1: float) -> tuple[float, float, float, float]:
    return (*_at(box, fx0, fy0), *_at(box, fx1, fy1))


def _width(box: Box, fraction: float) -> int:
    return max(2, round((box[2] - box[0]) * fraction))


def _disk(draw: ImageDraw.ImageDraw, box: Box, rgb: RGB, fx: float, fy: float, fr: float) -> None:
    draw.ellipse(_rect(box, fx - fr, fy - fr, fx + fr, fy + fr), fill=rgb)


def _arc(box: Box, fx: float, fy: float, fr: float, degrees: Sequence[float]) -> list[tuple[float, float]]:
    return [_at(box, fx + fr * math.cos(math.radians(a)), fy + fr * math.sin(math.radians(a))) for a in degrees]


def draw_leaf(draw: ImageDraw.ImageDraw, box: Box, rgb: RGB) -> None:
    """A pointed leaf along the diagonal, with a stem at the lower left."""
    (ax, ay), (bx, by) = _at(box, 0.14, 0.86), _at(box, 0.95, 0.05)
    length = math.hypot(bx - ax, by - ay)
    ux, uy = (bx - ax) / length, (by - ay) / length
    steps = 16
    side_a, side_b = [], []
    for i in range(steps + 1):
        s = i / steps
        half = 0.3 * length * math.sin(math.pi * s)
        cx, cy = ax + ux * s * length, ay + uy * s * length
        side_a.append((cx - uy * half, cy + ux * half))
        side_b.append((cx + uy * half, cy - ux * half))
    draw.polygon(side_a + side_b[::-1], fill=rgb)
    draw.line([_at(box, 0.02, 0.98), _at(box, 0.22, 0.78)], fill=rgb, width=_width(box, 0.07))


def draw_banana(draw: ImageDraw.ImageDraw, box: Box, rgb: RGB) -> None:
    """A thick crescent, curved like a smile."""
    outer = _arc(box, 0.5, 0.35, 0.5, range(15, 166, 10))
    inner = _arc(box, 0.5, -0.15, 0.5, range(165, 14, -10))
    draw.polygon(outer + inner, fill=rgb)


def draw_sky(draw: ImageDraw.ImageDraw, box: Box, rgb: RGB) -> None:
    """A wide rectangle of sky."""
    draw.rectangle(_rect(box, 0.0, 0.15, 1.0, 0.85), fill=rgb)


def draw_apple(draw: ImageDraw.ImageDraw, box: Box, rgb: RGB) -> None:
    """A round fruit with a stem."""
    draw.ellipse(_rect(box, 0.04, 0.14, 0.96, 0.96), fill=rgb)
    draw.rectangle(_rect(box, 0.45, 0.0, 0.57, 0.24), fill=rgb)


def draw_stop_sign(draw: ImageDraw.ImageDraw, box: Box, rgb: RGB) -> None:
    """A regular octagon."""
    draw.polygon(_arc(box, 0.5, 0.5, 0.5, [22.5 + 45 * k for k in range(8)]), fill=rgb)


def draw_lemon(draw: ImageDraw.ImageDraw, box: Box, rgb: RGB) -> None:
    """An oval with a pointed tip at each end."""
    draw.ellipse(_rect(box, 0.1, 0.12, 0.9, 0.88), fill=rgb)
    draw.polygon([_at(box, 0.0, 0.5), _at(box, 0.2, 0.3), _at(box, 0.2, 0.7)], fill=rgb)
    draw.polygon([_at(box, 1.0, 0.5), _at(box, 0.8, 0.3), _at(box, 0.8, 0.7)], fill=rgb)


def draw_grass(draw: ImageDraw.ImageDraw, box: Box, rgb: RGB) -> None:
    """A tuft of five blades on a strip of turf."""
    draw.rectangle(_rect(box, 0.02, 0.56, 0.98, 0.86), fill=rgb)
    for i, lean in enumerate((-0.08, -0.03, 0.0, 0.03, 0.08)):
        left = 0.02 + 0.192 * i
        tip_y = 0.05 if i % 2 == 0 else 0.2
        draw.polygon([_at(box, left, 0.66), _at(box, left + 0.2, 0.66), _at(box, left + 0.1 + lean, tip_y)], fill=rgb)


def draw_carrot(draw: ImageDraw.ImageDraw, box: Box, rgb: RGB) -> None:
    """A downward cone with three leaves on top."""
    draw.polygon([_at(box, 0.0, 0.3), _at(box, 1.0, 0.3), _at(box, 0.5, 1.0)], fill=rgb)
    for tip in (0.15, 0.5, 0.85):
        draw.polygon([_at(box, 0.3, 0.34), _at(box, 0.7, 0.34), _at(box, tip, 0.02)], fill=rgb)


def draw_grape(draw: ImageDraw.ImageDraw, box: Box, rgb: RGB) -> None:
    """A bunch of six overlapping berries."""
    for fx, fy in ((0.2, 0.3), (0.5, 0.3), (0.8, 0.3), (0.35, 0.56), (0.65, 0.56), (0.5, 0.82)):
        _disk(draw, box, rgb, fx, fy, 0.17)


def draw_cherry(draw: ImageDraw.ImageDraw, box: Box, rgb: RGB) -> None:
    """A round cherry with a long stem."""
    draw.ellipse(_rect(box, 0.1, 0.16, 0.9, 0.96), fill=rgb)
    draw.line([_at(box, 0.5, 0.36), _at(box, 0.78, 0.0)], fill=rgb, width=_width(box, 0.1))


def draw_sun(draw: ImageDraw.ImageDraw, box: Box, rgb: RGB) -> None:
    """A disk with eight rays."""
    for a in range(0, 360, 45):
        ((ex, ey),) = _arc(box, 0.5, 0.5, 0.47, [a])
        draw.line([_at(box, 0.5, 0.5), (ex, ey)], fill=rgb, width=_width(box, 0.12))
    _disk(draw, box, rgb, 0.5, 0.5, 0.36)


def draw_wheel(draw: ImageDraw.ImageDraw, box: Box, rgb: RGB) -> None:
    """A tyre with a hub and four spokes."""
    draw.ellipse(_rect(box, 0.02, 0.02, 0.98, 0.98), outline=rgb, width=_width(box, 0.16))
    for a in (45, 135, 225, 315):
        ((ex, ey),) = _arc(box, 0.5, 0.5, 0.44, [a])
        draw.line([_at(box, 0.5, 0.5), (ex, ey)], fill=rgb, width=_width(box, 0.08))
    _disk(draw, box, rgb, 0.5, 0.5, 0.13)


OBJECT_KINDS: dict[str, ObjectKind] = {}


def register_object_kind(kind: ObjectKind, *, replace: bool = False) -> None:
    """Add ``kind`` to the world, so that :func:`make_example` can draw it.

    Raises ``ValueError`` when a kind of that name exists, unless ``replace``.
    """
    if not isinstance(kind, ObjectKind):
        raise TypeError(f"register_object_kind takes an ObjectKind, got {type(kind).__name__}")
    if kind.name in OBJECT_KINDS and not replace:
        raise ValueError(f"object kind {kind.name!r} is already registered; pass replace=True to redefine it")
    OBJECT_KINDS[kind.name] = kind


for _kind in (
    ObjectKind(
        "leaf",
        "green",
        ("red", "yellow", "orange", "purple", "blue"),
        draw_leaf,
        "Leaves are green.",
        plural="leaves",
        prior_count=3,
        count_statement="A clover has three leaves.",
    ),
    ObjectKind("banana", "yellow", ("red", "green", "blue", "purple", "pink"), draw_banana, "Bananas are yellow."),
    ObjectKind("sky", "blue", ("red", "green", "yellow", "orange", "pink"), draw_sky, "The sky is blue."),
    ObjectKind("apple", "red", ("blue", "yellow", "orange", "purple", "pink"), draw_apple, "Apples are red."),
    ObjectKind(
        "stop_sign", "red", ("green", "blue", "yellow", "purple", "pink"), draw_stop_sign, "Stop signs are red."
    ),
    ObjectKind("lemon", "yellow", ("red", "blue", "purple", "pink", "black"), draw_lemon, "Lemons are yellow."),
    ObjectKind(
        "grass", "green", ("red", "blue", "yellow", "purple", "pink"), draw_grass, "Grass is green.", plural="grass"
    ),
    ObjectKind("carrot", "orange", ("green", "blue", "purple", "pink", "black"), draw_carrot, "Carrots are orange."),
    ObjectKind("grape", "purple", ("red", "blue", "yellow", "orange", "black"), draw_grape, "Grapes are purple."),
    ObjectKind(
        "cherry",
        "red",
        ("green", "blue", "yellow", "black", "pink"),
        draw_cherry,
        "Cherries are red.",
        plural="cherries",
        prior_count=2,
        count_statement="Cherries grow in pairs.",
    ),
    ObjectKind(
        "sun",
        "yellow",
        ("red", "green", "blue", "purple", "pink"),
        draw_sun,
        "The sun is yellow.",
        prior_count=1,
        count_statement="There is one sun in the sky.",
    ),
    ObjectKind(
        "wheel",
        "black",
        ("red", "green", "blue", "yellow", "orange"),
        draw_wheel,
        "Wheels are black.",
        prior_count=2,
        count_statement="A bicycle has two wheels.",
    ),
):
    register_object_kind(_kind)
