"""The synthetic world's object kinds: the palette, and registering a new kind."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from PIL import ImageDraw

from synthetic_pixels import components, object_pixels, palette_counts
from vigos.data.synthetic import make_example
from vigos.data.synthetic_kinds import (
    BACKGROUND,
    COLOURS,
    OBJECT_KINDS,
    OBSCURED_COLOUR,
    SCENE_COLOURS,
    TEXT_COLOUR,
    ObjectKind,
    register_object_kind,
)

# --- palette ------------------------------------------------------------------


def test_colours_are_far_apart_and_off_the_background():
    assert OBSCURED_COLOUR not in COLOURS and set(SCENE_COLOURS) == {*COLOURS, OBSCURED_COLOUR}
    for a, b in itertools.combinations(SCENE_COLOURS, 2):
        assert math.dist(SCENE_COLOURS[a], SCENE_COLOURS[b]) >= 90, (a, b)
    for name, rgb in SCENE_COLOURS.items():
        assert math.dist(rgb, BACKGROUND) >= 90, name
        assert math.dist(rgb, TEXT_COLOUR) >= 90, name


# --- extension ----------------------------------------------------------------


def draw_ball(draw: ImageDraw.ImageDraw, box, rgb) -> None:
    draw.ellipse(box, fill=rgb)


@pytest.fixture
def ball():
    kind = ObjectKind(
        "ball",
        "orange",
        ("blue", "pink"),
        draw_ball,
        "Basketballs are orange.",
        noun="basketball",
        prior_count=1,
        count_statement="A game uses one ball.",
    )
    register_object_kind(kind)
    try:
        yield kind
    finally:
        OBJECT_KINDS.pop("ball")


def test_registered_kind_is_usable(ball):
    rng = random.Random(0)
    example = make_example(rng, conflict=True, question_type="colour", kind="ball")
    assert example.question == "Basketballs are orange. What colour is the basketball in the image?"
    assert example.answer in ("blue", "pink") and example.prior_answer == "orange"
    assert set(palette_counts(example.image)) == {example.answer}
    counted = make_example(rng, conflict=True, question_type="count", kind="ball")
    assert components(object_pixels(counted.image, "orange")) == counted.scene.count != 1
    drawn = {make_example(random.Random(s), conflict=False).scene.kind for s in range(200)}
    assert "ball" in drawn
    with pytest.raises(ValueError, match="already registered"):
        register_object_kind(ball)
    register_object_kind(ball, replace=True)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(name="Bad Name"), "name"),
        (dict(prior_colour="white"), "prior_colour"),
        (dict(other_colours=()), "empty"),
        (dict(other_colours=("orange", "blue")), "must not hold the prior"),
        (dict(prior_count=2), "both"),
        (dict(prior_count=9, count_statement="Many."), "between"),
    ],
)
def test_object_kind_validation(fields, message):
    base = dict(
        name="ball", prior_colour="orange", other_colours=("blue",), draw=draw_ball, prior_statement="Balls are orange."
    )
    with pytest.raises(ValueError, match=message):
        ObjectKind(**{**base, **fields})
