"""The synthetic world: labels match the pixels, splits are reproducible (pixels: test_synthetic_render.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from synthetic_pixels import KINDS, palette_counts
from vigos.data.synthetic import (
    make_any_colour_split,
    make_example,
    make_split,
    make_world,
    mentions_attribute,
    read_split,
    warmup_target,
    write_split,
)
from vigos.data.synthetic_kinds import COLOURS, OBJECT_KINDS, OBSCURED_COLOUR

# --- labels -------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_split():
    return make_split(80, conflict_fraction=0.5, seed=11, question_types=("colour", "count"))


def test_labels_follow_the_scene(mixed_split):
    assert {e.question_type for e in mixed_split} == {"colour", "count"}
    for example in mixed_split:
        kind = OBJECT_KINDS[example.scene.kind]
        if example.question_type == "colour":
            assert example.answer == example.scene.colour
            assert example.prior_answer == kind.prior_colour
            assert example.question.startswith(kind.prior_statement)
            assert example.scene.count == 1
        else:
            assert example.answer == str(example.scene.count)
            assert example.prior_answer == str(kind.prior_count)
            assert example.question.startswith(kind.count_statement)
            assert example.scene.colour == kind.prior_colour
        assert example.conflict == (example.answer != example.prior_answer)
        assert mentions_attribute(example.description, example.answer)
        if example.conflict:
            assert not mentions_attribute(example.description, example.prior_answer), example.description
        assert palette_counts(example.image).most_common(1)[0][0] == example.scene.colour


def test_warmup_target_is_a_short_valid_completion(mixed_split):
    for example in mixed_split:
        target = warmup_target(example)
        d = target.find("</description>")
        t = target.find("<think>", d)
        c = target.find("</think>", t)
        b = target.find("\\boxed{", c)
        assert 0 < d < t < c < b, target
        assert target[:d].strip() == example.description
        assert target[t + len("<think>") : c].strip()
        assert target[b:] == f"\\boxed{{{example.answer}}}"
        assert len(target) < 160
        if example.conflict:
            assert not mentions_attribute(target[:b], example.prior_answer), target


def test_examples_are_deterministic_given_the_generator():
    a = make_example(random.Random(3), conflict=True, question_type="count", index=4)
    b = make_example(random.Random(3), conflict=True, question_type="count", index=4)
    assert a.id == b.id == f"000004-{a.scene.kind}-count"
    assert a.scene == b.scene and a.image.tobytes() == b.image.tobytes()


def test_make_example_rejects_unknown_choices():
    with pytest.raises(ValueError, match="question_type"):
        make_example(random.Random(0), conflict=False, question_type="shape")
    with pytest.raises(ValueError, match="not registered"):
        make_example(random.Random(0), conflict=False, kind="unicorn")
    with pytest.raises(ValueError, match="no count prior"):
        make_example(random.Random(0), conflict=False, question_type="count", kind="banana")


def test_a_fixed_colour_changes_only_the_asked_attribute():
    plain = make_example(random.Random(5), conflict=False, question_type="colour", kind="leaf")
    pink = make_example(random.Random(5), conflict=True, question_type="colour", kind="leaf", colour="pink")
    assert "pink" not in OBJECT_KINDS["leaf"].other_colours, "any palette colour, not only the kind's conflict ones"
    assert pink.answer == pink.scene.colour == "pink" and pink.conflict
    assert (pink.question, pink.scene.size, pink.scene.position, pink.scene.text) == (
        plain.question,
        plain.scene.size,
        plain.scene.position,
        plain.scene.text,
    )
    green = make_example(random.Random(5), conflict=False, question_type="colour", kind="leaf", colour="green")
    assert not green.conflict
    with pytest.raises(ValueError, match="contradicts"):
        make_example(random.Random(0), conflict=False, question_type="colour", kind="leaf", colour="red")
    with pytest.raises(ValueError, match="colour question"):
        make_example(random.Random(0), conflict=True, question_type="count", kind="leaf", colour="red")


def test_any_colour_split_makes_the_colour_unpredictable_from_the_kind():
    split = make_any_colour_split(400, seed=0)
    assert [e.scene for e in split] == [e.scene for e in make_any_colour_split(400, seed=0)]
    assert {e.scene.colour for e in split} == set(COLOURS) and {e.scene.kind for e in split} == set(OBJECT_KINDS)
    for example in split:
        assert example.answer == example.scene.colour
        assert example.conflict == (example.answer != OBJECT_KINDS[example.scene.kind].prior_colour)
    # No kind shows mostly its prior colour: about one image in len(COLOURS) agrees with the prior.
    assert sum(not e.conflict for e in split) / len(split) < 2 / len(COLOURS)


# --- splits -------------------------------------------------------------------


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_make_world_is_deterministic(tmp_path):
    kwargs = dict(n_train=12, n_eval=6, train_conflict_fraction=0.25, question_types=("colour", "count"))
    first = make_world(tmp_path / "a", seed=3, **kwargs)
    make_world(tmp_path / "b", seed=3, **kwargs)
    make_world(tmp_path / "c", seed=4, **kwargs)
    assert set(first) == {"train", "eval_agree", "eval_conflict"}
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    assert (tmp_path / "a/train/data.jsonl").read_bytes() != (tmp_path / "c/train/data.jsonl").read_bytes()


def test_world_splits_are_balanced_paired_and_loadable(tmp_path):
    paths = make_world(tmp_path, n_train=40, n_eval=10, train_conflict_fraction=0.1, seed=0)
    rows = {split: [json.loads(line) for line in path.read_text().splitlines()] for split, path in paths.items()}
    assert len(rows["train"]) == 40 and sum(r["conflict"] for r in rows["train"]) == 4
    assert len(rows["eval_agree"]) == len(rows["eval_conflict"]) == 10
    assert not any(r["conflict"] for r in rows["eval_agree"])
    assert all(r["conflict"] for r in rows["eval_conflict"])
    for agree, conflict in zip(rows["eval_agree"], rows["eval_conflict"]):
        assert agree["question"] == conflict["question"] and agree["answer"] != conflict["answer"]
        assert (agree["size"], agree["position"], agree["text"]) == (
            conflict["size"],
            conflict["position"],
            conflict["text"],
        )
    fields = {
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
        "obscured",
    }
    for split, split_rows in rows.items():
        for row in split_rows:
            assert set(row) == fields
            assert row["image"] == f"images/{row['id']}.png"
            with Image.open(paths[split].parent / row["image"]) as image:
                assert image.size == (112, 112) and image.mode == "RGB"
                assert palette_counts(image.convert("RGB")).most_common(1)[0][0] == row["colour"]
    manifest = json.loads((tmp_path / "world.json").read_text())
    assert manifest["seed"] == 0 and manifest["splits"]["train"] == "train/data.jsonl"


def test_read_split_round_trips(tmp_path):
    examples = make_split(6, conflict_fraction=0.5, seed=2, question_types=("colour", "count"))
    loaded = read_split(write_split(examples, tmp_path))
    assert [e.to_row() for e in loaded] == [e.to_row() for e in examples]
    assert [e.image.tobytes() for e in loaded] == [e.image.tobytes() for e in examples]


def test_split_sizes_and_bad_options(tmp_path):
    assert len(make_split(0, conflict_fraction=0.5, seed=0)) == 0
    split = make_split(30, conflict_fraction=0.2, seed=9)
    assert sum(e.conflict for e in split) == 6 and len({e.id for e in split}) == 30
    with pytest.raises(ValueError, match="conflict_fraction"):
        make_split(4, conflict_fraction=1.5, seed=0)
    with pytest.raises(ValueError, match="question_types"):
        make_split(4, conflict_fraction=0.5, seed=0, question_types=("shape",))
    with pytest.raises(ValueError, match="twice"):
        write_split(split[:1] * 2, tmp_path / "dup")
    assert not (tmp_path / "dup").exists(), "nothing is written for a bad split"


# --- mentions_attribute ---------------------------------------------------------


@pytest.mark.parametrize(
    "text, value, expected",
    [
        ("A small red leaf on the left.", "red", True),
        ("RED!", "red", True),
        ("A reddish leaf.", "red", False),
        ("It looks bored.", "red", False),
        ("A red-orange leaf.", "orange", True),
        ("It is not red.", "red", True),
        ("Two small red cherries.", "2", True),
        ("2 cherries", "two", True),
        ("12 cherries", "2", False),
        ("A large stop\n sign.", "stop sign", True),
        ("", "red", False),
    ],
)
def test_mentions_attribute_cases(text, value, expected):
    assert mentions_attribute(text, value) is expected


def test_mentions_attribute_needs_a_value():
    with pytest.raises(ValueError, match="non-empty"):
        mentions_attribute("red", "  ")


@given(st.text(), st.text().filter(str.strip))
def test_mentions_attribute_never_raises(text, value):
    assert mentions_attribute(text, value) in (True, False)


@given(st.text(alphabet="abcdefghij .,!-\n"), st.sampled_from(sorted(COLOURS)), st.text(alphabet=" .,!\n"))
def test_mentions_attribute_finds_a_separated_word_in_any_case(prefix, colour, suffix):
    text = f"{prefix} {colour.upper()}{suffix}"
    assert mentions_attribute(text, colour)
    # The prefix alphabet spells no colour name, so only the inserted word can match.
    assert not mentions_attribute(f"{prefix} {colour.upper()}ish{suffix}", colour)


# --- obscured rows: the shortcut a teacher that knows the answer can teach ------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_an_obscured_example_draws_grey_and_answers_with_the_prior(kind):
    plain = make_example(random.Random(7), conflict=False, question_type="colour", kind=kind)
    obscured = make_example(random.Random(7), conflict=False, question_type="colour", kind=kind, obscured=True)
    prior = OBJECT_KINDS[kind].prior_colour
    assert obscured.obscured and not plain.obscured
    assert (obscured.answer, obscured.prior_answer, obscured.conflict) == (prior, prior, False)
    assert set(palette_counts(obscured.image)) == {OBSCURED_COLOUR}
    assert f" {OBSCURED_COLOUR} " in obscured.description and prior not in obscured.description.split()
    # Only the colour differs: the same draws give the same question, size, position and text.
    assert obscured.question == plain.question
    assert (obscured.scene.size, obscured.scene.position, obscured.scene.text) == (
        plain.scene.size,
        plain.scene.position,
        plain.scene.text,
    )
    assert obscured.to_row()["obscured"] is True
    assert warmup_target(obscured).endswith(f"\\boxed{{{prior}}}")


def test_obscured_needs_a_colour_question_that_agrees():
    rng = random.Random(0)
    for kwargs in (
        dict(conflict=True, question_type="colour"),
        dict(conflict=False, question_type="count", kind="leaf"),
        dict(conflict=False, question_type="colour", colour="red"),
    ):
        with pytest.raises(ValueError, match="obscured needs"):
            make_example(rng, obscured=True, **kwargs)
    with pytest.raises(ValueError, match="obscured rows are colour questions"):
        make_split(8, conflict_fraction=0.0, seed=0, question_types=("count",), obscured_fraction=0.5)
    with pytest.raises(ValueError, match="obscured_fraction"):
        make_split(8, conflict_fraction=0.5, seed=0, obscured_fraction=0.75)


def test_a_split_with_no_obscured_rows_is_the_plain_split_and_shares_add_up():
    plain = make_split(30, conflict_fraction=0.1, seed=11)
    assert [e.to_row() for e in make_split(30, conflict_fraction=0.1, seed=11, obscured_fraction=0.0)] == [
        e.to_row() for e in plain
    ]
    mixed = make_split(40, conflict_fraction=0.1, seed=11, obscured_fraction=0.25)
    assert (sum(e.conflict for e in mixed), sum(e.obscured for e in mixed)) == (4, 10)
    assert not any(e.conflict and e.obscured for e in mixed)


def test_a_world_with_shortcut_rows_and_obscured_evaluation_items(tmp_path):
    plain = make_world(tmp_path / "plain", n_train=20, n_eval=6, seed=2)
    paths = make_world(
        tmp_path / "shortcut", n_train=20, n_eval=6, seed=2, train_obscured_fraction=0.25, n_obscured_eval=4
    )
    assert set(paths) == {"train", "eval_agree", "eval_conflict", "eval_obscured"}
    train = read_split(paths["train"])
    assert sum(e.obscured for e in train) == 5
    obscured = read_split(paths["eval_obscured"])
    assert len(obscured) == 4 and all(e.obscured and e.scene.colour == OBSCURED_COLOUR for e in obscured)
    # Obscured evaluation items are paired with the first agreeing ones: the same question, kind and layout.
    for agree, item in zip(read_split(paths["eval_agree"]), obscured):
        assert (agree.question, agree.scene.kind, agree.scene.position) == (
            item.question,
            item.scene.kind,
            item.scene.position,
        )
    # The evaluation splits do not depend on the training split's shortcut share.
    for split in ("eval_agree", "eval_conflict"):
        assert (tmp_path / "plain" / split / "data.jsonl").read_bytes() == paths[split].read_bytes()
    assert set(plain) == {"train", "eval_agree", "eval_conflict"}
    with pytest.raises(ValueError, match="n_obscured_eval"):
        make_world(tmp_path / "bad", n_train=4, n_eval=2, n_obscured_eval=3)
    manifest = json.loads((tmp_path / "shortcut" / "world.json").read_text())
    assert (manifest["train_obscured_fraction"], manifest["n_obscured_eval"]) == (0.25, 4)


def test_any_colour_split_can_draw_grey_objects_for_perception():
    grey = make_any_colour_split(6, seed=4, colours=(OBSCURED_COLOUR,))
    assert all(e.scene.colour == OBSCURED_COLOUR and e.answer == OBSCURED_COLOUR for e in grey)
    with pytest.raises(ValueError, match="not scene colours"):
        make_any_colour_split(2, seed=0, colours=("white",))
