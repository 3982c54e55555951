"""The synthetic world's rendering: pixels match the scene, in every kind, size, position and count."""

from __future__ import annotations

import itertools

import pytest

from synthetic_pixels import COUNT_KINDS, KINDS, centroid, components, in_region, object_pixels, palette_counts
from vigos.data.synthetic_kinds import BACKGROUND, COLOURS, MAX_COUNT, OBJECT_KINDS
from vigos.data.synthetic_render import POSITIONS, SIZES, Scene, render_scene


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("position", POSITIONS)
def test_single_object_pixels(kind, size, position):
    spec = OBJECT_KINDS[kind]
    for seed, colour in ((1, spec.prior_colour), (2, spec.other_colours[-1])):
        image = render_scene(Scene(kind, colour, 1, size, position, None), seed=seed)
        assert image.size == (112, 112) and image.mode == "RGB"
        counts = palette_counts(image)
        assert set(counts) == {colour}, f"only the scene colour is drawn, got {counts}"
        pixels = object_pixels(image, colour)
        assert in_region(centroid(pixels), position, 112), (centroid(pixels), position)
        assert components(pixels) == 1, "each kind draws one connected shape"
        assert all(image.getpixel(corner) == BACKGROUND for corner in itertools.product((0, 111), repeat=2))


@pytest.mark.parametrize("kind", KINDS)
def test_large_objects_cover_more_than_small(kind):
    colour = OBJECT_KINDS[kind].prior_colour
    area = {
        size: len(object_pixels(render_scene(Scene(kind, colour, 1, size, "center", None)), colour)) / 112**2
        for size in SIZES
    }
    assert area["large"] > 2 * area["small"]
    assert area["large"] >= 0.15 and area["small"] >= 0.05, area


@pytest.mark.parametrize("kind", COUNT_KINDS)
@pytest.mark.parametrize("count", range(1, MAX_COUNT + 1))
def test_count_scenes_draw_separate_copies(kind, count):
    colour = OBJECT_KINDS[kind].prior_colour
    for seed in (None, 3, 4):
        image = render_scene(Scene(kind, colour, count, "small", "center", "TAXI"), seed=seed)
        pixels = object_pixels(image, colour)
        assert components(pixels) == count
        assert in_region(centroid(pixels), "center", 112)
        assert set(palette_counts(image)) == {colour}


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("size", SIZES)
def test_printed_text_never_covers_the_object(position, size):
    for kind in KINDS:
        colour = OBJECT_KINDS[kind].prior_colour
        plain = render_scene(Scene(kind, colour, 1, size, position, None), seed=5)
        printed = render_scene(Scene(kind, colour, 1, size, position, "TAXI"), seed=5)
        assert object_pixels(printed, colour) == object_pixels(plain, colour)
        text_pixels = [p for p in printed.get_flattened_data() if p not in (BACKGROUND, COLOURS[colour])]
        assert len(text_pixels) > 20, "the text is visible"
        assert all(r == g == b for r, g, b in text_pixels), "text is grey, never a palette colour"


def test_render_is_deterministic_per_seed_and_jittered_across_seeds():
    scene = Scene("apple", "red", 1, "large", "left", "OK")
    assert render_scene(scene, seed=7).tobytes() == render_scene(scene, seed=7).tobytes()
    assert render_scene(scene).tobytes() == render_scene(scene).tobytes()
    assert len({render_scene(scene, seed=s).tobytes() for s in range(8)}) > 1


def test_other_image_sizes_scale_the_layout():
    image = render_scene(Scene("stop_sign", "blue", 1, "large", "right", "GO"), image_size=224, seed=1)
    pixels = object_pixels(image, "blue")
    assert image.size == (224, 224)
    assert in_region(centroid(pixels), "right", 224) and len(pixels) / 224**2 >= 0.15
    with pytest.raises(ValueError, match="image_size"):
        render_scene(Scene("stop_sign", "blue", 1, "large", "right", None), image_size=16)


@pytest.mark.parametrize(
    "scene, field",
    [
        (Scene("unicorn", "red", 1, "large", "left", None), "kind"),
        (Scene("apple", "white", 1, "large", "left", None), "colour"),
        (Scene("apple", "red", 1, "huge", "left", None), "size"),
        (Scene("apple", "red", 1, "large", "middle", None), "position"),
        (Scene("apple", "red", 0, "small", "center", None), "count"),
        (Scene("apple", "red", 2, "large", "left", None), "count > 1"),
        (Scene("apple", "red", 1, "large", "left", "A VERY LONG SIGN"), "text"),
    ],
)
def test_bad_scenes_name_the_field(scene, field):
    with pytest.raises(ValueError, match=field):
        render_scene(scene)
