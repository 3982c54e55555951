"""The synthetic world's language: whether a description states a colour the image does not show."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vigos.data.synthetic_kinds import OBSCURED_COLOUR, SCENE_COLOURS
from vigos.data.synthetic_text import states_unshown_colour

NAMES = sorted(SCENE_COLOURS)


def test_unshown_colours_cases():
    assert states_unshown_colour("A small green leaf on the left.", OBSCURED_COLOUR)
    assert not states_unshown_colour("A small grey leaf on the left.", OBSCURED_COLOUR)
    assert not states_unshown_colour("A large red apple. The text reads BUS.", "red")
    assert states_unshown_colour("A red-orange carrot", "orange")
    assert not states_unshown_colour("A reddish leaf", "green")


@given(st.sampled_from(NAMES), st.sampled_from(NAMES), st.text(alphabet="abc ."))
def test_a_description_states_an_unshown_colour_exactly_when_it_names_another_one(shown, named, filler):
    text = f"{filler} a {named} object {filler}"
    assert states_unshown_colour(text, shown) == (named != shown)
