"""A synthetic, shortcut-prone visual world with known ground truth.

Every image shows one kind of object (a leaf, a banana, the sky, ...) drawn
with Pillow on a plain light background. Each question first states the text
prior of the kind ("Leaves are green.") and then asks about the image ("What
colour is the leaf in the image?"). The image either agrees with the prior or
contradicts it (a red leaf), as in the ViLP benchmark. A training split that
is mostly prior-agreeing makes the prior a tempting shortcut; the two
evaluation splits hold agreeing and conflicting images in equal numbers.

Because the generator knows the true attributes of every image (its
:class:`Scene`), it can also say whether a model's *description* states what
is in the image (:func:`mentions_attribute`), which no benchmark of real
photos can.

Two question types exist:

``colour``
    "Leaves are green. What colour is the leaf in the image?" One object of
    any size at any position; the answer is a colour name.
``count``
    "A clover has three leaves. How many leaves are in the image?" Separate
    small copies of the object in the center, all in the prior colour; the
    answer is a digit.

Extend the world with :func:`register_object_kind`: an :class:`ObjectKind`
names its text prior and a ``draw`` function that fills a square box with one
colour. A kind supports ``count`` questions when it has a ``prior_count``.
The palette, the kinds and their drawings live in :mod:`vigos.data.synthetic_kinds`
and are re-exported here.

Everything is deterministic from seeds (``random.Random``, never the global
generator), so a split written twice is identical byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vigos.data.synthetic_kinds import (
    BACKGROUND,
    COLOURS,
    MAX_COUNT,
    OBJECT_KINDS,
    TEXT_COLOUR,
    ObjectKind,
    register_object_kind,
)
from vigos.data.synthetic_render import POSITIONS, SIZES, Scene, check_scene, render_scene
from vigos.prompts import DESCRIPTION_CLOSE, THINK_CLOSE, THINK_OPEN

__all__ = [
    "BACKGROUND",
    "COLOURS",
    "MAX_COUNT",
    "OBJECT_KINDS",
    "POSITIONS",
    "QUESTION_TYPES",
    "SIZES",
    "TEXT_COLOUR",
    "ObjectKind",
    "Scene",
    "SyntheticExample",
    "check_scene",
    "count_word",
    "describe_scene",
    "make_any_colour_split",
    "make_example",
    "make_question",
    "make_split",
    "make_world",
    "mentions_attribute",
    "read_split",
    "register_object_kind",
    "render_scene",
    "warmup_target",
    "write_split",
]

QUESTION_TYPES = ("colour", "count")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# Printed words avoid colour and number words, so a description that quotes
# the text never states an attribute value by accident.
TEXTS = ("OK", "HI", "GO", "ZOO", "BUS", "TAXI")
TEXT_PROBABILITY = 0.25

_POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}


@dataclass(frozen=True)
class SyntheticExample:
    """One question about one rendered image, with its ground truth.

    ``answer`` is what the image shows; ``prior_answer`` is what the text
    prior in the question suggests; ``conflict`` is ``answer != prior_answer``.
    ``description`` is a canonical true description of the image.
    """

    id: str
    image: Image.Image
    question: str
    answer: str
    prior_answer: str
    conflict: bool
    scene: Scene
    description: str
    question_type: str

    def to_row(self) -> dict[str, Any]:
        """The JSONL row of this example (the image as ``images/<id>.png``)."""
        return {
            "id": self.id,
            "image": f"images/{self.id}.png",
            "question": self.question,
            "answer": self.answer,
            "prior_answer": self.prior_answer,
            "conflict": self.conflict,
            "kind": self.scene.kind,
            "colour": self.scene.colour,
            "count": self.scene.count,
            "size": self.scene.size,
            "position": self.scene.position,
            "text": self.scene.text,
            "description": self.description,
            "question_type": self.question_type,
        }


# --- rendering ---------------------------------------------------------------


# --- questions, descriptions, targets ---------------------------------------


def count_word(count: int) -> str:
    """``2`` -> ``"two"`` (digits beyond the table stay digits)."""
    return NUMBER_WORDS[count] if 0 <= count < len(NUMBER_WORDS) else str(count)


def describe_scene(scene: Scene, *, state_count: bool = False) -> str:
    """The canonical true description: ``"A small red leaf on the left."``.

    With ``state_count`` a single object is "One ..." rather than "A ...", so
    that the description of a count example always states the count.
    """
    kind = check_scene(scene)
    if scene.count == 1 and not state_count:
        head = f"A {scene.size} {scene.colour} {kind.noun}"
    else:
        noun = kind.noun if scene.count == 1 else kind.plural
        head = f"{count_word(scene.count).capitalize()} {scene.size} {scene.colour} {noun}"
    text = f" The text reads {scene.text}." if scene.text is not None else ""
    return f"{head} {_POSITION_PHRASES[scene.position]}.{text}"


def make_question(kind: ObjectKind, question_type: str) -> str:
    """The question: the kind's prior statement, then the ask."""
    if question_type == "colour":
        return f"{kind.prior_statement} What colour is the {kind.noun} in the image?"
    if question_type == "count":
        if kind.count_statement is None:
            raise ValueError(f"object kind {kind.name!r} has no count prior, so it cannot take count questions")
        return f"{kind.count_statement} How many {kind.plural} are in the image?"
    raise ValueError(f"question_type {question_type!r} is not one of {QUESTION_TYPES}")


def warmup_target(example: SyntheticExample) -> str:
    """The ideal student completion, starting after the pre-filled ``<description>``.

    ``" A small red leaf on the left. </description>\\n<think> The leaf in the
    image is red. </think>\\n\\boxed{red}"``
    """
    kind = OBJECT_KINDS[example.scene.kind]
    if example.question_type == "count":
        noun = kind.noun if example.scene.count == 1 else kind.plural
        reasoning = f"I count {count_word(example.scene.count)} {noun}."
    else:
        reasoning = f"The {kind.noun} in the image is {example.scene.colour}."
    return (
        f" {example.description} {DESCRIPTION_CLOSE}\n{THINK_OPEN} {reasoning} {THINK_CLOSE}\n"
        f"\\boxed{{{example.answer}}}"
    )


def mentions_attribute(text: str, value: str) -> bool:
    """Whether ``text`` states ``value`` as a whole word, ignoring case.

    Word boundaries are strict: "reddish" does not state "red", "red-orange"
    states both "red" and "orange". A count is stated by its digit or its
    word ("2" and "two" mention each other). Several words in ``value`` match
    across any whitespace. This is a test of mention, not of truth: "not red"
    mentions "red".
    """
    needle = value.strip().lower()
    if not needle:
        raise ValueError("mentions_attribute needs a non-empty attribute value")
    options = {needle}
    if needle.isdecimal() and needle.isascii() and int(needle) < len(NUMBER_WORDS):
        options.add(NUMBER_WORDS[int(needle)])
    if needle in NUMBER_WORDS:
        options.add(str(NUMBER_WORDS.index(needle)))
    for option in options:
        words = r"\s+".join(re.escape(part) for part in option.split())
        if re.search(rf"(?<!\w){words}(?!\w)", text, flags=re.IGNORECASE):
            return True
    return False


# --- examples and splits ----------------------------------------------------


def make_example(
    rng: random.Random,
    *,
    conflict: bool,
    question_type: str | None = None,
    image_size: int = 112,
    index: int = 0,
    kind: str | None = None,
    colour: str | None = None,
) -> SyntheticExample:
    """Draw one example from ``rng``.

    ``question_type`` ``None`` picks one of :data:`QUESTION_TYPES`; ``kind``
    ``None`` picks a registered kind that supports the question type.
    ``conflict`` makes the image contradict the prior: another colour from
    the kind's ``other_colours``, or another count from 1 to
    :data:`MAX_COUNT`. ``colour`` fixes the colour of a colour question's
    object to any palette colour instead (``conflict`` must then say whether
    it differs from the prior). The random draws do not depend on
    ``conflict`` or ``colour``, so two generators in the same state give
    examples that differ only in the asked attribute.
    """
    if question_type is None:
        question_type = rng.choice(QUESTION_TYPES)
    if question_type not in QUESTION_TYPES:
        raise ValueError(f"question_type {question_type!r} is not one of {QUESTION_TYPES}")
    candidates = [
        name for name in sorted(OBJECT_KINDS) if question_type == "colour" or OBJECT_KINDS[name].prior_count is not None
    ]
    if kind is None:
        if not candidates:
            raise ValueError(f"no registered object kind supports {question_type!r} questions")
        kind = rng.choice(candidates)
    if kind not in OBJECT_KINDS:
        raise ValueError(f"kind {kind!r} is not registered; known kinds: {sorted(OBJECT_KINDS)}")
    if kind not in candidates:
        raise ValueError(f"object kind {kind!r} has no count prior, so it cannot take count questions")
    spec = OBJECT_KINDS[kind]
    if colour is not None:
        if question_type != "colour" or colour not in COLOURS:
            raise ValueError(f"colour {colour!r} needs a colour question and one of {sorted(COLOURS)}")
        if conflict != (colour != spec.prior_colour):
            raise ValueError(
                f"conflict={conflict} contradicts colour {colour!r} (the {kind} prior is {spec.prior_colour!r})"
            )
    if question_type == "colour":
        size, position = rng.choice(SIZES), rng.choice(POSITIONS)
    else:
        size, position = "small", "center"
    text = rng.choice(TEXTS) if rng.random() < TEXT_PROBABILITY else None
    render_seed = rng.randrange(2**31)
    if question_type == "colour":
        other = rng.choice(spec.other_colours)
        if colour is None:
            colour = other if conflict else spec.prior_colour
        count = 1
        prior_answer = spec.prior_colour
    else:
        assert spec.prior_count is not None
        other_count = rng.choice([c for c in range(1, MAX_COUNT + 1) if c != spec.prior_count])
        colour, count = spec.prior_colour, (other_count if conflict else spec.prior_count)
        prior_answer = str(spec.prior_count)
    scene = Scene(kind=kind, colour=colour, count=count, size=size, position=position, text=text)
    answer = colour if question_type == "colour" else str(count)
    return SyntheticExample(
        id=f"{index:06d}-{kind}-{question_type}",
        image=render_scene(scene, image_size=image_size, seed=render_seed),
        question=make_question(spec, question_type),
        answer=answer,
        prior_answer=prior_answer,
        conflict=answer != prior_answer,
        scene=scene,
        description=describe_scene(scene, state_count=question_type == "count"),
        question_type=question_type,
    )


def make_split(
    n: int, *, conflict_fraction: float, seed: int, image_size: int = 112, question_types: Sequence[str] = ("colour",)
) -> list[SyntheticExample]:
    """``n`` examples, exactly ``round(n * conflict_fraction)`` of them conflicting.

    Conflicts and question types (in equal shares, cycling through
    ``question_types``) are placed in a shuffled order. Two splits of the same
    ``n``, ``seed`` and types, one with fraction 0 and one with fraction 1,
    are paired: example ``i`` of each has the same question, kind, size,
    position and text, and only the asked attribute differs.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not 0.0 <= conflict_fraction <= 1.0:
        raise ValueError(f"conflict_fraction must be between 0 and 1, got {conflict_fraction!r}")
    types = list(question_types)
    if not types or any(t not in QUESTION_TYPES for t in types):
        raise ValueError(f"question_types {tuple(types)!r} must be a non-empty choice from {QUESTION_TYPES}")
    rng = random.Random(seed)
    n_conflict = round(n * conflict_fraction)
    flags = [i < n_conflict for i in range(n)]
    qtypes = [types[i % len(types)] for i in range(n)]
    rng.shuffle(flags)
    rng.shuffle(qtypes)
    return [
        make_example(rng, conflict=flag, question_type=qtype, image_size=image_size, index=i)
        for i, (flag, qtype) in enumerate(zip(flags, qtypes))
    ]


def make_any_colour_split(n: int, *, seed: int, image_size: int = 112) -> list[SyntheticExample]:
    """``n`` colour examples whose kind and colour are drawn independently and uniformly.

    Any kind in any palette colour, so the colour is not predictable from the
    kind: what a model learns to say about these images it must read from
    the pixels (the warm start's perception data).
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        kind, colour = rng.choice(sorted(OBJECT_KINDS)), rng.choice(sorted(COLOURS))
        examples.append(
            make_example(
                rng,
                conflict=colour != OBJECT_KINDS[kind].prior_colour,
                question_type="colour",
                image_size=image_size,
                index=i,
                kind=kind,
                colour=colour,
            )
        )
    return examples


def write_split(examples: Sequence[SyntheticExample], out_dir: str | Path) -> Path:
    """Write ``out_dir/images/<id>.png`` and ``out_dir/data.jsonl``; return the JSONL path."""
    ids = Counter(example.id for example in examples)
    repeated = sorted(i for i, n in ids.items() if n > 1)
    if repeated:
        raise ValueError(f"example ids {repeated} appear twice; ids name the image files and must be unique")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for example in examples:
        row = example.to_row()
        example.image.save(out / row["image"], format="PNG")
        lines.append(json.dumps(row, ensure_ascii=False))
    path = out / "data.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


_ROW_FIELDS = (
    "id",
    "image",
    "question",
    "answer",
    "prior_answer",
    "conflict",
    "kind",
    "colour",
    "count",
    "size",
    "position",
    "text",
    "description",
    "question_type",
)


def read_split(jsonl_path: str | Path) -> list[SyntheticExample]:
    """Load a split written by :func:`write_split` (images resolved next to the JSONL)."""
    path = Path(jsonl_path)
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, row {number}: not valid JSON ({error}); rebuild it with write_split") from None
        missing = [f for f in _ROW_FIELDS if f not in row]
        if missing:
            raise ValueError(f"{path}, row {number}: missing field(s) {missing}; rows need {list(_ROW_FIELDS)}")
        with Image.open(path.parent / row["image"]) as image:
            image.load()
            pixels = image.convert("RGB")
        scene = Scene(
            kind=row["kind"],
            colour=row["colour"],
            count=row["count"],
            size=row["size"],
            position=row["position"],
            text=row["text"],
        )
        examples.append(
            SyntheticExample(
                id=row["id"],
                image=pixels,
                question=row["question"],
                answer=row["answer"],
                prior_answer=row["prior_answer"],
                conflict=row["conflict"],
                scene=scene,
                description=row["description"],
                question_type=row["question_type"],
            )
        )
    return examples


def _split_seed(seed: int, name: str) -> int:
    """A per-split seed that depends on nothing but ``seed`` and ``name``."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "big")


def make_world(
    out_dir: str | Path,
    *,
    n_train: int,
    n_eval: int,
    train_conflict_fraction: float = 0.1,
    seed: int = 0,
    image_size: int = 112,
    question_types: Sequence[str] = ("colour",),
) -> dict[str, Path]:
    """Write the splits ``train``, ``eval_agree`` and ``eval_conflict`` under ``out_dir/<split>/``.

    ``train`` holds ``n_train`` examples, a ``train_conflict_fraction`` of
    them conflicting. ``eval_agree`` and ``eval_conflict`` hold ``n_eval``
    examples each, all agreeing and all conflicting, paired as
    :func:`make_split` describes. ``out_dir/world.json`` records the settings.
    The same arguments write the same bytes. Returns ``{split: jsonl path}``.
    """
    out = Path(out_dir)
    eval_seed = _split_seed(seed, "eval")
    plan = {
        "train": (n_train, train_conflict_fraction, _split_seed(seed, "train")),
        "eval_agree": (n_eval, 0.0, eval_seed),
        "eval_conflict": (n_eval, 1.0, eval_seed),
    }
    paths = {}
    for split, (n, fraction, split_seed) in plan.items():
        examples = make_split(
            n, conflict_fraction=fraction, seed=split_seed, image_size=image_size, question_types=question_types
        )
        paths[split] = write_split(examples, out / split)
    manifest = {
        "seed": seed,
        "image_size": image_size,
        "n_train": n_train,
        "n_eval": n_eval,
        "train_conflict_fraction": train_conflict_fraction,
        "question_types": list(question_types),
        "kinds": sorted(OBJECT_KINDS),
        "splits": {split: f"{split}/data.jsonl" for split in paths},
    }
    (out / "world.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return paths
