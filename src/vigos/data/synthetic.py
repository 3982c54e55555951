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
    OBSCURED_COLOUR,
    SCENE_COLOURS,
    TEXT_COLOUR,
    ObjectKind,
    register_object_kind,
)
from vigos.data.synthetic_render import POSITIONS, SIZES, Scene, check_scene, render_scene
from vigos.data.synthetic_text import (
    QUESTION_TYPES,
    count_word,
    describe_scene,
    make_question,
    mentions_attribute,
    states_unshown_colour,
)
from vigos.prompts import DESCRIPTION_CLOSE, THINK_CLOSE, THINK_OPEN

__all__ = [
    "BACKGROUND",
    "COLOURS",
    "MAX_COUNT",
    "OBJECT_KINDS",
    "OBSCURED_COLOUR",
    "SCENE_COLOURS",
    "POSITIONS",
    "QUESTION_TYPES",
    "SIZES",
    "TEXT_COLOUR",
    "ObjectKind",
    "Scene",
    "SyntheticExample",
    "states_unshown_colour",
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

# Printed words avoid colour and number words, so a description that quotes
# the text never states an attribute value by accident.
TEXTS = ("OK", "HI", "GO", "ZOO", "BUS", "TAXI")
TEXT_PROBABILITY = 0.25


@dataclass(frozen=True)
class SyntheticExample:
    """One question about one rendered image, with its ground truth.

    ``answer`` is what the image shows; ``prior_answer`` is what the text
    prior in the question suggests; ``conflict`` is ``answer != prior_answer``.
    ``description`` is a canonical true description of the image.
    ``obscured``: the asked colour cannot be read (the object is drawn in
    :data:`OBSCURED_COLOUR`) and ``answer`` is the text prior's, as answers
    in real data often are: the shortcut a teacher that knows the answer
    can teach.
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
    obscured: bool = False

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
            "obscured": self.obscured,
        }


# --- questions, descriptions, targets ---------------------------------------


def warmup_target(example: SyntheticExample) -> str:
    """The ideal student completion, starting after the pre-filled ``<description>``.

    ``" A small red leaf on the left. </description>\\n<think> The leaf in the
    image is red. </think>\\n\\boxed{red}"``
    """
    kind = OBJECT_KINDS[example.scene.kind]
    if example.question_type == "count":
        noun = kind.noun if example.scene.count == 1 else kind.plural
        reasoning = f"I count {count_word(example.scene.count)} {noun}."
    elif getattr(example, "obscured", False):
        reasoning = f"The {kind.noun} is drawn in {OBSCURED_COLOUR}; its colour cannot be seen. {kind.prior_statement}"
    else:
        reasoning = f"The {kind.noun} in the image is {example.scene.colour}."
    return (
        f" {example.description} {DESCRIPTION_CLOSE}\n{THINK_OPEN} {reasoning} {THINK_CLOSE}\n"
        f"\\boxed{{{example.answer}}}"
    )


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
    obscured: bool = False,
) -> SyntheticExample:
    """Draw one example from ``rng``.

    ``question_type`` ``None`` picks one of :data:`QUESTION_TYPES`; ``kind``
    ``None`` picks a registered kind that supports the question type.
    ``conflict`` makes the image contradict the prior: another colour from
    the kind's ``other_colours``, or another count from 1 to
    :data:`MAX_COUNT`. ``colour`` fixes the colour of a colour question's
    object to any palette colour instead (``conflict`` must then say whether
    it differs from the prior). ``obscured`` draws a colour question's
    object in :data:`OBSCURED_COLOUR` and answers with the prior colour
    (``conflict`` must be False). The random draws do not depend on
    ``conflict``, ``colour`` or ``obscured``, so two generators in the same
    state give examples that differ only in the asked attribute.
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
    if obscured and (question_type != "colour" or conflict or colour is not None):
        raise ValueError("obscured needs a colour question, conflict=False and no colour (it draws the object grey)")
    if colour is not None:
        if question_type != "colour" or colour not in SCENE_COLOURS:
            raise ValueError(f"colour {colour!r} needs a colour question and one of {sorted(SCENE_COLOURS)}")
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
        if obscured:
            colour = OBSCURED_COLOUR
        elif colour is None:
            colour = other if conflict else spec.prior_colour
        count = 1
        prior_answer = spec.prior_colour
    else:
        assert spec.prior_count is not None
        other_count = rng.choice([c for c in range(1, MAX_COUNT + 1) if c != spec.prior_count])
        colour, count = spec.prior_colour, (other_count if conflict else spec.prior_count)
        prior_answer = str(spec.prior_count)
    scene = Scene(kind=kind, colour=colour, count=count, size=size, position=position, text=text)
    answer = spec.prior_colour if obscured else colour if question_type == "colour" else str(count)
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
        obscured=obscured,
    )


def make_split(
    n: int,
    *,
    conflict_fraction: float,
    seed: int,
    image_size: int = 112,
    question_types: Sequence[str] = ("colour",),
    obscured_fraction: float = 0.0,
) -> list[SyntheticExample]:
    """``n`` examples, exactly ``round(n * conflict_fraction)`` of them conflicting and
    ``round(n * obscured_fraction)`` obscured (colour questions only; see :class:`SyntheticExample`).

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
    if not 0.0 <= obscured_fraction <= 1.0 - conflict_fraction + 1e-9:
        raise ValueError(
            f"obscured_fraction must be between 0 and 1 - conflict_fraction, got {obscured_fraction!r} "
            f"(conflict_fraction {conflict_fraction!r})"
        )
    types = list(question_types)
    if not types or any(t not in QUESTION_TYPES for t in types):
        raise ValueError(f"question_types {tuple(types)!r} must be a non-empty choice from {QUESTION_TYPES}")
    if obscured_fraction and types != ["colour"]:
        raise ValueError("obscured rows are colour questions: use question_types=('colour',) with obscured_fraction")
    rng = random.Random(seed)
    n_conflict, n_obscured = round(n * conflict_fraction), round(n * obscured_fraction)
    if n_conflict + n_obscured > n:
        raise ValueError(f"{n_conflict} conflicting and {n_obscured} obscured rows do not fit in {n}")
    # With no obscured rows this is the same permutation of the same flags as a plain conflict split.
    labels = ["conflict"] * n_conflict + ["obscured"] * n_obscured + ["agree"] * (n - n_conflict - n_obscured)
    qtypes = [types[i % len(types)] for i in range(n)]
    rng.shuffle(labels)
    rng.shuffle(qtypes)
    return [
        make_example(
            rng,
            conflict=label == "conflict",
            obscured=label == "obscured",
            question_type=qtype,
            image_size=image_size,
            index=i,
        )
        for i, (label, qtype) in enumerate(zip(labels, qtypes))
    ]


def make_any_colour_split(
    n: int, *, seed: int, image_size: int = 112, colours: Sequence[str] | None = None
) -> list[SyntheticExample]:
    """``n`` colour examples whose kind and colour (from ``colours``, default the palette) are drawn
    independently and uniformly; the answer is the colour shown.

    Any kind in any palette colour, so the colour is not predictable from the
    kind: what a model learns to say about these images it must read from
    the pixels (the warm start's perception data).
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    unknown = sorted(set(colours or ()) - set(SCENE_COLOURS))
    if unknown:
        raise ValueError(f"colours {unknown} are not scene colours; choose from {sorted(SCENE_COLOURS)}")
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        kind, colour = rng.choice(sorted(OBJECT_KINDS)), rng.choice(sorted(colours or COLOURS))
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
                obscured=bool(row.get("obscured", False)),
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
    train_obscured_fraction: float = 0.0,
    n_obscured_eval: int = 0,
) -> dict[str, Path]:
    """Write the splits ``train``, ``eval_agree`` and ``eval_conflict`` under ``out_dir/<split>/``.

    ``train`` holds ``n_train`` examples, a ``train_conflict_fraction`` of
    them conflicting. ``eval_agree`` and ``eval_conflict`` hold ``n_eval``
    examples each, all agreeing and all conflicting, paired as
    :func:`make_split` describes. ``train_obscured_fraction`` of the training
    rows are obscured (the shortcut: the colour cannot be read and the answer
    is the prior's); ``n_obscured_eval`` > 0 adds ``eval_obscured``, that many
    obscured rows paired with the first evaluation rows.
    ``out_dir/world.json`` records the settings.
    The same arguments write the same bytes. Returns ``{split: jsonl path}``.
    """
    if not 0 <= n_obscured_eval <= n_eval:
        raise ValueError(f"n_obscured_eval must be between 0 and n_eval ({n_eval}), got {n_obscured_eval!r}")
    out = Path(out_dir)
    eval_seed = _split_seed(seed, "eval")
    plan = {
        "train": (n_train, train_conflict_fraction, train_obscured_fraction, _split_seed(seed, "train")),
        "eval_agree": (n_eval, 0.0, 0.0, eval_seed),
        "eval_conflict": (n_eval, 1.0, 0.0, eval_seed),
    }
    if n_obscured_eval:
        # Drawn as many as the other evaluation splits (so that the draws pair item by item), then cut.
        plan["eval_obscured"] = (n_eval, 0.0, 1.0, eval_seed)
    paths = {}
    for split, (n, fraction, obscured, split_seed) in plan.items():
        examples = make_split(
            n,
            conflict_fraction=fraction,
            seed=split_seed,
            image_size=image_size,
            question_types=question_types,
            obscured_fraction=obscured,
        )
        if split == "eval_obscured":
            examples = examples[:n_obscured_eval]
        paths[split] = write_split(examples, out / split)
    manifest = {
        "seed": seed,
        "image_size": image_size,
        "n_train": n_train,
        "n_eval": n_eval,
        "train_conflict_fraction": train_conflict_fraction,
        "train_obscured_fraction": train_obscured_fraction,
        "n_obscured_eval": n_obscured_eval,
        "question_types": list(question_types),
        "kinds": sorted(OBJECT_KINDS),
        "splits": {split: f"{split}/data.jsonl" for split in paths},
    }
    (out / "world.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return paths
