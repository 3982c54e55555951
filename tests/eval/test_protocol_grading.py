"""Grading under each protocol: the benchmarks' own rules (official) and the release's judge protocol (paper),
the judge parts against a real judge server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PIL import Image

from judge_server import JudgeServer
from vigos import prompts
from vigos.eval.benchmarks import load_benchmark
from vigos.eval.fixtures import write_fixture
from vigos.eval.items import EvalItem
from vigos.eval.judge import JudgeClient, JudgeConfig
from vigos.eval.judge_prompts import parse_item_verdicts, parse_score
from vigos.eval.metrics import best_of_k, pass_at_k, summarize
from vigos.eval.printed_options import options_for_grading, printed_options
from vigos.eval.protocol_grading import _at_precision, apply_judge, judge_requirement, record_item
from vigos.grading.vilp import normalize_vilp

SPEC = prompts.student_spec(prompts.STUDENT_PROMPT)
IMAGE = Image.new("RGB", (8, 8))


@pytest.fixture
def judge(tmp_path) -> Iterator[tuple[JudgeServer, JudgeClient]]:
    server = JudgeServer(score="0.5")
    client = JudgeClient(JudgeConfig(server.base_url, "judge-model", cache_path=str(tmp_path / "cache.sqlite")))
    yield server, client
    client.close()
    server.close()


# --- official: the benchmarks' own rules ---------------------------------------------------------------


def test_a_float_answer_is_rounded_to_the_questions_precision():
    assert _at_precision("1.454", {"answer_type": "float", "precision": 2.0}) == "1.45"
    assert _at_precision("3", {"answer_type": "float", "precision": 1}) == "3.0"
    for answer, meta in (("1.454", {"answer_type": "integer", "precision": 2}), ("abc", {"answer_type": "float"})):
        assert _at_precision(answer, meta) == answer
    assert _at_precision("x1", {"answer_type": "float", "precision": 1}) == "x1"
    assert _at_precision(None, {"answer_type": "float", "precision": 1}) is None


def test_every_accepted_letter_of_a_multi_answer_item_counts_and_precision_applies():
    multi = EvalItem("mmmu", "1", "Which?", IMAGE, "A", options=["x", "y", "z"], grader="multiple_choice")
    multi.meta["accepted_answers"] = ["A", "C"]
    record = record_item(multi, ["\\boxed{C}", "\\boxed{B}", "\\boxed{A}"], SPEC, "official")
    assert record["correct"] == [True, False, True]
    precise = EvalItem("mathvista", "2", "How long?", IMAGE, "1.45", grader="math")
    precise.meta.update(answer_type="float", precision=2.0)
    record = record_item(precise, ["\\boxed{1.454}", "\\boxed{1.46}"], SPEC, "official")
    assert record["correct"] == [True, False]
    assert record["samples"][0]["answer"] == "1.45" and record["samples"][0]["extracted"] == "1.454"


@pytest.mark.parametrize(
    ("text", "options"),
    [
        ("Which shape is drawn?\nChoices:\nA:circle\nB:square\nC:star", ["circle", "square", "star"]),  # MathVerse
        (
            "Which view?\nOptions: A: the first view, B: the second, one, C: neither",
            ["the first view", "the second, one", "neither"],
        ),  # MMSI
        ("Which shape?\nA. circle\nB. square", ["circle", "square"]),  # RealWorldQA
        ("(A) left\n(B) right", ["left", "right"]),
        ("A: one option only", None),
        ("Is A. the answer, or B.?", None),
    ],
)
def test_printed_options_are_read_back(text, options):
    assert printed_options(text) == options


def test_options_that_do_not_reach_the_answer_letter_are_not_used():
    assert options_for_grading("Pick.\nA. x\nB. y", "B") == ["x", "y"]
    assert options_for_grading("Pick.\nA. x\nB. y", "C") is None


@pytest.mark.parametrize("name", ["mathverse", "mmsi", "realworldqa"])
def test_an_options_text_counts_as_the_option_where_options_are_printed_in_the_question(name, tmp_path):
    write_fixture(name, tmp_path, n=4)
    item = next(item for item in load_benchmark(name, tmp_path) if item.meta.get("options"))
    # The question keeps its printed options, and they are not printed a second time.
    assert item.options is None and all(item.prompt_question().count(option) == 1 for option in item.meta["options"])
    right = item.meta["options"][ord(item.answer) - ord("A")]
    wrong = next(option for option in item.meta["options"] if option != right)
    texts = [f"\\boxed{{{right}}}", f"\\boxed{{{item.answer}}}", f"\\boxed{{{wrong}}}", f"Answer: {right}"]
    assert record_item(item, texts, SPEC, "official")["correct"] == [True, True, False, True]


def test_vilp_items_are_graded_by_vilps_rule(tmp_path):
    write_fixture("vilp-f", tmp_path, n=1)
    item = load_benchmark("vilp-f", tmp_path)[0]
    assert item.grader == "vilp"
    record = record_item(item, [f"\\boxed{{{item.answer.upper()}.}}", "\\boxed{nothing}"], SPEC, "official")
    assert record["correct"] == [True, False]
    assert normalize_vilp(f" {item.answer.upper()}.") == normalize_vilp(item.answer)


def test_mmvet_gets_the_judges_partial_credit(judge):
    server, client = judge
    item = EvalItem("mmvet", "v1", "What is shown?", IMAGE, "cat <AND> dog", grader="judge")
    item.meta["partial_credit"] = True
    assert "mmvet" in str(judge_requirement("official", [item]))
    assert judge_requirement("official", [EvalItem("x", "1", "q", IMAGE, "a")]) is None
    record = record_item(item, ["\\boxed{a cat}", "a cat and a dog"], SPEC, "official")
    apply_judge([record], client, "official")
    assert record["scores"] == [0.5, 0.5] and record["correct"] == [False, False] and record["grading"] == "judge"
    sent = server.prompts()
    assert len(sent) == 2 and all("Ground truth: cat <AND> dog" in prompt for prompt in sent)
    # The whole response goes to the judge, as MM-Vet's grader reads the model's output.
    assert sum("Candidate answer: \\boxed{a cat}\n" in prompt for prompt in sent) == 1
    assert sum("Candidate answer: a cat and a dog\n" in prompt for prompt in sent) == 1
    metrics = summarize([record], k=1)["benchmarks"]["mmvet"]
    assert metrics["avg@1"]["mean"] == 0.5 and metrics["pass@1"]["mean"] == 0.5


def test_best_of_k_is_pass_at_k_on_zero_one_scores_and_the_expected_best_otherwise():
    for correct in ([1, 0, 0, 1, 0], [0, 0, 0], [1, 1, 1], [0, 1]):
        for k in range(1, len(correct) + 1):
            assert best_of_k(correct, k) == pytest.approx(pass_at_k(len(correct), sum(correct), k))
    # Pairs of (0.2, 0.6, 0.4): best 0.6, 0.6, 0.4 -> 1.6 / 3.
    assert best_of_k([0.2, 0.6, 0.4], 2) == pytest.approx(1.6 / 3)
    with pytest.raises(ValueError, match="partial-credit score must be a number in"):
        summarize([{"benchmark": "x", "correct": [False], "scores": [1.5]}], k=1)


def test_judge_reply_parsers():
    assert parse_score("0.5") == 0.5 and parse_score("<think>2</think>Score: 1.0") == 1.0
    assert parse_score("2") is None and parse_score("no idea") is None
    assert parse_item_verdicts("1: yes\n2: No\n3. yes", 3) == [True, False, True]
    assert parse_item_verdicts("**1**: yes\n- 2: no", 2) == [True, False]
    assert parse_item_verdicts("1: yes", 2) is None and parse_item_verdicts("1: yes\n2: no\n3: no", 2) is None


# --- paper: boxed answers only, one judge call per item ------------------------------------------------


def test_paper_takes_boxed_answers_only_and_asks_the_judge_once_per_item(judge):
    server, client = judge
    item = EvalItem("mmmu", "m1", "Which?", IMAGE, "A", options=["x", "y"], grader="multiple_choice")
    texts = ["so \\boxed{A}", "Answer: A", "\\boxed{ B }"]
    record = record_item(item, texts, SPEC, "paper")
    assert [sample["answer"] for sample in record["samples"]] == ["A", None, "B"]
    assert record["correct"] == [False, False, False] and record["grader"] == "judge"
    other = record_item(EvalItem("mmmu", "m2", "How many?", IMAGE, "3"), ["\\boxed{3}"] * 3, SPEC, "paper")
    apply_judge([record, other], client, "paper")
    assert len(server.requests) == 2  # one call per item, all samples in it
    (first,) = [prompt for prompt in server.prompts() if "Which?" in prompt]  # the two are asked in parallel
    assert "Which?\nA. x\nB. y" in first and "Reference answer:\nA" in first
    assert "1. A\n2. (no answer in \\boxed{})\n3. B" in first
    assert record["correct"] == [True, False, False] and other["correct"] == [True, True, True]
    assert record["grading"] == "judge" and record["samples"][0]["rule_correct"] is False
    assert "paper protocol grades every item" in str(judge_requirement("paper", []))
