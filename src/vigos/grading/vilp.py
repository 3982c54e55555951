"""ViLP's own answer comparison: one-word answers made canonical, then compared exactly.

ViLP's authors grade without a judge: both the model's word and the reference
are lower-cased, stripped and lose one trailing period; then, in three single
look-ups applied one after the other, a number word becomes its digits, a
word becomes the canonical term of its synonym group, and a plural becomes its
singular. The answers match when the results are equal and not ``"none"``.
The word groups below record which words their scorer treats as the same
(e.g. "cuboid" and "Cube", "Butterflies" and "butterfly"); each look-up is one
step, never repeated, so a word is only ever mapped once per stage, as theirs is.
"""

from __future__ import annotations

__all__ = ["normalize_vilp", "vilp_equal"]

_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty"
).split()

# canonical term: the words (and multi-word phrases) mapped to it at the synonym stage.
_SYNONYM_GROUPS: dict[str, tuple[str, ...]] = {
    "fridge": ("refrigerator", "refrigerators"),
    "oven": ("stove", "fireplace"),
    "crocodile": ("alligator",),
    "dolphin": ("porpoise",),
    "car": ("automobile",),
    "new york city": ("nyc", "new york"),
    "los angeles": ("la",),
    "united states": ("usa",),
    "carbon dioxide": ("co2",),
    "carbondioxide": ("co₂", "carbon dioxide"),
    "oxygen": ("o2",),
    "nitrogen": ("n2",),
    "water": ("h2o",),
    "turtle": ("tortoise",),
    "motorcycle": ("motorbike",),
    "phone": ("cellphone", "telephone"),
    "computer": ("pc",),
    "television": ("tv",),
    "faucet": ("tap",),
    "airplane": ("aeroplane", "plane"),
    "cube": ("cubic", "cubical", "cubes", "cuboids", "cuboid", "square", "squares"),
    "stripes": ("striped",),
    "checkerboard": ("checkered",),
    "spots": ("polka-dots", "dots"),
    "dog": ("dalmatian",),
    "triangle": ("triangular", "triangles"),
    "round": ("circular", "circle", "circles", "spherical", "spheres", "sphere", "roundpherical", "roundph"),
    "wood": ("logs",),
    "curved": ("zigzag",),
    "hexagon": ("hexagonal", "hexagons"),
    "flower": ("bud", "blossoms"),
    "hippo": ("hippopotamus",),
    "rhino": ("rhinoceros",),
    "bicycle": ("bike",),
    "bus": ("schoolbus",),
    "ship": ("boat", "boats", "sailboat", "airship"),
    "torus": ("donut", "donuts"),
    "kangaroo": ("wallaby",),
    "cup": ("teacup",),
    "kettle": ("teapot",),
    "chicken": ("rooster", "roosters"),
    "crow": ("raven",),
    "vine": ("vineyard",),
    "bush": ("bushe",),
    "glass": ("crystal",),
    "straw": ("hay", "thatch"),
    "bee": ("beesap",),
    "AC": ("aircondition", "airconditioner", "air-conditioner"),
    "dinosaur": ("t-rex", "trex"),
    "person": ("man", "woman", "people", "men", "women"),
    "bigben": ("clocktower",),
    "rainbow": ("multicolored",),
    "glasses": ("goggles", "night-vision", "binoculars"),
    "eraser": ("brush",),
    "snake": ("serpent",),
    "shoe": ("slippers", "slipper"),
    "cushion": ("pillow",),
    "guitar": ("ukulele",),
    "violin": ("cello",),
    "metal": ("steel",),
    "pickle": ("cucumber",),
    "space": ("galaxy",),
    "sea": ("underwater", "ocean"),
    "diamond": ("faceted", "jewelry", "jewelries"),
    "bag": ("backpack",),
    "octopus": ("squid",),
    "cat": ("kitten",),
    "octagon": ("octagonal",),
    "lolipop": ("candy",),
    "pipe": ("pipeline",),
    "pitaya": ("dragonfruit",),
    "eye": ("eyesight",),
    "seismometer": ("seismograph",),
}

# Singulars whose regular English plural (-s, -es after s/sh/ch/x, -ies after a consonant + y) the scorer maps
# back to them at the plural stage.
_REGULAR_SINGULARS = (
    "butterfly bee ant wasp kangaroo koala wombat tree book goat squirrel rabbit panda giraffe lion tiger cow horse "
    "cat dog whale shark dolphin flower diamond brick wind wheel chicken firefly beak needle spinner cloud earthquake "
    "seal pencil petal fork seahorse key carrot crayon skyscraper bird bicycle watch lemon pipe spinneret bubble "
    "camel stripe lung gill feather scale drum rope shoe bush elephant porcupine clock antelope eye chameleon rocket "
    "turbine ostrich pumpkin shrub field"
).split()
# The plural stage's other entries: irregular plurals, and spellings it treats as the same word.
_OTHER_SINGULARS: dict[str, tuple[str, ...]] = {
    "leaf": ("leaves",),
    "knife": ("knives",),
    "wolf": ("wolves",),
    "mouse": ("mice",),
    "goose": ("geese",),
    "child": ("children",),
    "tooth": ("teeth",),
    "foot": ("feet",),
    "fungus": ("fungi",),
    "stimulus": ("stimuli",),
    "medium": ("media",),
    "octopus": ("octopi",),
    "cactus": ("cacti",),
    "fire": ("flame",),
    "lolipop": ("lollipops", "lollipop", "lolipops"),
}


def _plural(word: str) -> str:
    if word.endswith(("s", "sh", "ch", "x")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _inverted(groups: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {word: canonical for canonical, words in groups.items() for word in words}


_NUMBERS = {word: str(value) for value, word in enumerate(_NUMBER_WORDS)}
_SYNONYMS = _inverted(_SYNONYM_GROUPS)
_SINGULARS = {_plural(word): word for word in _REGULAR_SINGULARS} | _inverted(_OTHER_SINGULARS)


def normalize_vilp(answer: object) -> str:
    """``answer`` in the canonical form ViLP's scorer compares: lower-cased, stripped, one trailing period
    dropped, then a number word, a synonym and a plural each looked up once, in that order."""
    text = str(answer).lower().strip()
    text = text.removesuffix(".")
    for table in (_NUMBERS, _SYNONYMS, _SINGULARS):
        text = table.get(text, text)
    return text


def vilp_equal(prediction: str | None, reference: str) -> bool:
    """Whether a one-word answer matches ViLP's reference as its scorer decides (no answer never matches)."""
    if prediction is None:
        return False
    normalized = normalize_vilp(prediction)
    return normalized == normalize_vilp(reference) and normalized != "none"
