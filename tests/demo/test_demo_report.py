"""Tests for vigos.demo.report: what the demo's report counts from the evaluation's responses."""

from __future__ import annotations

from vigos.demo.report import grounding


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
