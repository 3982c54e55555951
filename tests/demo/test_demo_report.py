"""Tests for vigos.demo.results and vigos.demo.report: what the demo counts from the evaluation's responses."""

from __future__ import annotations

import json

from vigos.demo.report import abilities_table, curves_figure, perception_misses, table
from vigos.demo.results import grounding, ungrounded
from vigos.demo.warmstart import TAUGHT_PERCEPTION


def test_grounding_counts_descriptions_on_conflict_items():
    responses = {
        "c/1": {
            "conflict": True,
            "answer": "red",
            "samples": [
                {"text": "<description> A red leaf. </description><think>"},
                {"text": "<description> A green leaf. </description>"},
                {"text": "no description here"},
            ],
        },
        "a/1": {"conflict": False, "answer": "green", "samples": [{"text": "<description> green </description>"}]},
    }
    assert grounding(responses, {"c/1": "green", "a/1": "green"}) == {
        "states_true": 0.5,
        "states_prior": 0.5,
        "descriptions": 2,
    }


def test_ungrounded_counts_colours_the_image_does_not_show():
    responses = {
        "eval_conflict/1": {
            "conflict": True,
            "answer": "red",
            "samples": [
                {"text": "<description> A red leaf. </description>"},
                {"text": "<description> A green leaf. </description>"},
            ],
        },
        "eval_obscured/1": {
            "conflict": None,
            "answer": "green",
            "samples": [
                {"text": "<description> A grey leaf. </description>"},
                {"text": "<description> A green leaf. </description>"},
                {"text": "<description> A large leaf. </description>"},
                {"text": "no description"},
            ],
        },
        "eval_agree/1": {
            "conflict": False,
            "answer": "green",
            "samples": [{"text": "<description> red </description>"}],
        },
    }
    shown = {"eval_conflict/1": "red", "eval_obscured/1": "grey", "eval_agree/1": "green"}
    assert ungrounded(responses, shown) == {"ungrounded_conflict": 0.5, "ungrounded_obscured": 1 / 3}
    assert ungrounded({k: v for k, v in responses.items() if "obscured" not in k}, shown) == {
        "ungrounded_conflict": 0.5
    }


def test_tables_show_only_the_measured_columns_and_roles_mark_what_they_do_not_write():
    results = {
        "warm_start": {"score_avg": (0.1, 0.0), "prior_avg": (0.9, 0.01), "ungrounded_obscured": (0.2, 0.0)},
        "opsd": {"score_avg": (0.5, 0.1), "prior_avg": (0.95, 0.02), "ungrounded_obscured": (0.6, 0.1)},
    }
    text = table(results, {"warm_start": "warm start", "opsd": "OPSD"}, 4)
    assert text.splitlines()[0] == "| model | Score Avg@4 | Prior Avg@4 | ungrounded (obscured) |"
    assert "| OPSD | 50.0 ± 10.0 | 95.0 ± 2.0 | 60.0 ± 10.0 |" in text
    roles = abilities_table(
        {
            "perception": {"describes_kind": 0.9, "describes_all": 0.8},
            "reasoning": {"states_true": 1.0, "states_prior": 0.0},
        }
    )
    assert "| perception teacher: the image only | 90% | 80% | - | - |" in roles
    assert "| reasoning teacher: image, question and answer | - | - | 100% | 0% |" in roles


def test_perception_misses_names_each_attribute_below_the_goal():
    able = {"perception": {"describes_kind": 0.95, "describes_colour": 1.0, "describes_all": 0.5}}
    assert perception_misses(able) == "The perception teacher states every attribute on at least 90% of the images."
    weak = {"perception": {"describes_kind": 0.95, "describes_size": 0.5, "describes_text": 0.8, "describes_all": 0.4}}
    assert perception_misses(weak).endswith("fewer than 90% of the images: size (50%), printed text (80%).")


def test_perception_misses_says_why_from_the_images_it_was_taught_on():
    abilities = {
        "perception": {"describes_kind": 0.1, "describes_colour": 1.0, "describes_position": 0.3},
        TAUGHT_PERCEPTION: {"describes_kind": 0.12, "describes_colour": 1.0, "describes_position": 0.95},
    }
    sentence = perception_misses(abilities)
    assert "fewer than 90% of the images: kind (10%), position (30%)." in sentence
    assert "so the warm start did not teach them: kind (12%)." in sentence
    assert "without carrying the attribute to fresh ones: position (95%)." in sentence
    roles = abilities_table(abilities)
    assert "| perception teacher, on images it was taught on | 12% | 100% | 95% |" in roles


def test_curves_draw_sparse_series_with_markers_and_shares_on_the_whole_range(tmp_path):
    run = tmp_path / "train" / "vigos-s0"
    run.mkdir(parents=True)
    records = [{"step": step, "loss": 1.0 / step, "valid_rate": 0.5} for step in range(1, 31)]
    records += [{"step": 10, "diag_ungrounded": 0.3}, {"step": 20, "diag_ungrounded": 0.25}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    figure, names = curves_figure(tmp_path, {"vigos": "ViGOS"})
    assert names == ["loss", "valid_rate", "diag_ungrounded"]
    panels = {axes.get_title(): axes for axes in figure.axes}
    assert panels["loss"].lines[0].get_marker() in ("None", None, "")
    assert panels["diag_ungrounded"].lines[0].get_marker() == "o"
    for share in ("valid_rate", "diag_ungrounded"):
        assert panels[share].get_ylim() == (-0.05, 1.05)
    assert panels["loss"].get_ylim() != (-0.05, 1.05)
