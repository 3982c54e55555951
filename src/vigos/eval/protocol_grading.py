"""How each protocol turns an item's completions into graded samples (:mod:`vigos.eval.protocols`).

``official``: the final answer is the last ``\\boxed{}``, else an "Answer: X"
cue, else a lone option letter (:func:`vigos.grading.answers.extract_answer`);
it is graded by the item's grader, as each benchmark's authors grade: an
option's text counts as the option (options printed in the question are read
back into ``meta["options"]``), every accepted MMMU letter counts, MathVista's
float answers are rounded to the question's precision, ViLP's words are made
canonical. MM-Vet items (``meta["partial_credit"]``) get the judge's 0-1
score, which needs a judge; other ``judge``-graded items get its yes/no
verdict when one is configured, and keep the rule verdict otherwise.

``paper``: the final answer is the last ``\\boxed{}`` only (a completion
without one is wrong), and every item is graded by one judge call that sees
the question, the reference and all its samples' answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vigos import prompts
from vigos.eval.items import EvalItem
from vigos.eval.judge import JudgeClient
from vigos.eval.judge_prompts import (
    ITEM_FORM,
    ITEM_TOKENS_PER_ATTEMPT,
    SCORE_FORM,
    item_prompt,
    parse_item_verdicts,
    parse_score,
    score_prompt,
)
from vigos.grading.answers import extract_answer, extract_boxed, get_grader

__all__ = ["apply_judge", "judge_requirement", "record_item"]


def _grading_options(item: EvalItem) -> list[str] | None:
    # MMMU-Pro's vision setting prints its options in the image, and MathVerse, MMSI-Bench and RealWorldQA in the
    # question text; all keep them in meta for grading.
    return item.options or item.meta.get("options")


def _at_precision(answer: str | None, meta: dict[str, Any]) -> str | None:
    """A float answer rounded to ``meta["precision"]`` decimals where ``meta["answer_type"]`` is ``float``
    (MathVista's rule: ``1.454`` is ``1.45`` at precision 2); any other answer as it is."""
    precision = meta.get("precision")
    if answer is None or meta.get("answer_type") != "float" or precision is None:
        return answer
    try:
        return str(round(float(answer.strip()), int(precision)))
    except (ValueError, OverflowError):
        return answer


def _official_sample(item: EvalItem, text: str, options: list[str] | None) -> dict[str, Any]:
    grader = get_grader(item.grader)
    # MMMU items with several correct letters accept each of them, as MMMU's own scorer does.
    references = item.meta.get("accepted_answers") or [item.answer]
    answer = extract_answer(text, options)
    sample: dict[str, Any] = {"text": text, "answer": answer}
    rounded = _at_precision(answer, item.meta)
    if rounded != answer:  # MathVista's scorer rounds a float answer to the question's precision
        sample.update(answer=rounded, extracted=answer)
    sample["correct"] = any(bool(grader(sample["answer"], reference, options)) for reference in references)
    return sample


def _paper_sample(text: str) -> dict[str, Any]:
    boxed = extract_boxed(text)
    # Wrong until the judge says otherwise; without a box it stays wrong.
    return {"text": text, "answer": None if boxed is None else boxed.strip(), "correct": False}


def record_item(item: EvalItem, texts: Sequence[str], spec: prompts.PromptSpec, protocol: str) -> dict[str, Any]:
    """An item's record with the protocol's rule verdicts (a judge may overrule them, :func:`apply_judge`)."""
    options = _grading_options(item)
    if protocol == "paper":
        samples = [_paper_sample(text) for text in texts]
    else:
        samples = [_official_sample(item, text, options) for text in texts]
    question = item.prompt_question()
    return {
        "id": item.id,
        "benchmark": item.benchmark,
        "question": question,
        "prompt": spec.text(question),
        "answer": item.answer,
        "options": item.options,
        "category": item.category,
        "split": item.split,
        "conflict": item.conflict,
        "grader": "judge" if protocol == "paper" else item.grader,
        "partial_credit": protocol != "paper" and bool(item.meta.get("partial_credit")),
        "grading": "rule",
        "samples": samples,
        "correct": [sample["correct"] for sample in samples],
    }


def judge_requirement(
    protocol: str,
    items: Sequence[EvalItem],
    *,
    judge_options: str = "--judge-url and --judge-model",
    benchmarks_option: str = "--benchmarks",
) -> str | None:
    """Why this run needs a judge (a message naming ``judge_options``, the options that give one), or None when
    it can do without one."""
    if protocol == "paper":
        return (
            f"the paper protocol grades every item with an LLM judge: pass {judge_options} (or use --protocol official)"
        )
    needing = sorted({item.benchmark for item in items if item.meta.get("partial_credit")})
    if needing:
        return (
            f"{', '.join(needing)}: the official protocol grades these with an LLM judge's 0-1 partial credit, as "
            f"their authors do: pass {judge_options} (or leave them out of {benchmarks_option})"
        )
    return None


def apply_judge(records: list[dict[str, Any]], judge: JudgeClient, protocol: str) -> None:
    """Grade ``records`` by the judge as ``protocol`` asks (the rule verdicts stay as ``rule_correct``)."""
    if protocol == "paper":
        _judge_per_item(records, judge)
        return
    scored = [record for record in records if record["grader"] == "judge" and record.get("partial_credit")]
    if scored:
        asks = [
            # MM-Vet's grader reads the model's whole output, not an extracted answer.
            score_prompt(record["question"], record["answer"], sample["text"])
            for record in scored
            for sample in record["samples"]
        ]
        scores = iter(judge.ask_many(asks, parse_score, form=SCORE_FORM))
        for record in scored:
            for sample in record["samples"]:
                sample["score"] = next(scores)
            # Full credit is what "correct" means here; the metrics count the scores themselves.
            _set_verdicts(record, [sample["score"] == 1.0 for sample in record["samples"]])
            record["scores"] = [sample["score"] for sample in record["samples"]]
    judged = [record for record in records if record["grader"] == "judge" and not record.get("partial_credit")]
    triples = [
        (record["question"], record["answer"], sample["text"]) for record in judged for sample in record["samples"]
    ]
    if triples:
        verdicts = iter(judge.judge_many(triples))
        for record in judged:
            _set_verdicts(record, [bool(next(verdicts)) for _ in record["samples"]])


def _judge_per_item(records: list[dict[str, Any]], judge: JudgeClient) -> None:
    """One call per item over all its samples' boxed answers, as the release makes it (a sample without an answer
    is shown as such, and is wrong whatever the verdict)."""
    if not records:
        return
    asks = [
        item_prompt(record["question"], record["answer"], [sample["answer"] or None for sample in record["samples"]])
        for record in records
    ]
    k = len(records[0]["samples"])  # every item of a run has the same number of samples
    by_item = judge.ask_many(
        asks, lambda reply: parse_item_verdicts(reply, k), form=ITEM_FORM, max_tokens=ITEM_TOKENS_PER_ATTEMPT * k
    )
    for record, verdicts in zip(records, by_item, strict=True):
        _set_verdicts(
            record, [bool(verdict and sample["answer"]) for verdict, sample in zip(verdicts, record["samples"])]
        )


def _set_verdicts(record: dict[str, Any], verdicts: list[bool]) -> None:
    for sample, verdict in zip(record["samples"], verdicts, strict=True):
        sample["rule_correct"] = sample["correct"]
        sample["correct"] = verdict
    record["correct"] = list(verdicts)
    record["grading"] = "judge"
