"""Shortcut diagnostics: does the model look at the image, and do its teachers?

Four measurements, each usable on any model and dataset:

* **description grounding** (:func:`description_grounding`): of the valid
  rollouts, the share whose description states the true attribute and the
  share that states the text prior. Needs ground truth per row, which the
  synthetic world provides (``prior_answer`` in an example's meta).
* **answer leakage** (:func:`answer_leakage`): the share of descriptions that
  already contain the reference answer. A description is meant to say what
  the image shows, not to carry the answer a teacher steered it toward.
* **teacher image reliance** (:func:`teacher_image_reliance`): on the tokens
  each teacher supervises, the mean KL between the teacher's distribution with
  the true image and with a counterfactual one. Near zero means the teacher's
  target comes from the text (question, reference answer), not the image.
* **student image sensitivity** (:func:`student_image_sensitivity`): on paired
  rows that differ only in the image (prior-agreeing vs prior-conflicting),
  how often the student's answer changes, and whether it follows the image or
  the prior on the conflicting one.

:func:`diagnose` runs the first three on a sample of examples;
:class:`DiagnosticsCallback` logs it during training; ``vigos diagnose`` runs
all four from the command line.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from PIL import Image

from vigos.data.rows import Example
from vigos.data.synthetic import mentions_attribute, states_unshown_colour
from vigos.grading.answers import extract_answer, is_correct, normalize_answer
from vigos.method import losses
from vigos.models.modeling import EncodedImage, encode_image, image_token_id

if TYPE_CHECKING:
    from vigos.method.scoring import Scorer
    from vigos.rollout.hf import Rollout

COUNTERFACTUALS = ("blank", "shuffle", "same")
BLANK_GREY = (128, 128, 128)

__all__ = [
    "COUNTERFACTUALS",
    "answer_leakage",
    "description_grounding",
    "diagnose",
    "student_image_sensitivity",
    "teacher_image_reliance",
]


# --- text measurements -----------------------------------------------------------------------


def _check_lengths(what: str, first: Sequence[Any], **others: Sequence[Any]) -> None:
    for name, values in others.items():
        if len(values) != len(first):
            raise ValueError(f"{what}: got {len(first)} descriptions but {len(values)} {name}; pass one per row")


def description_grounding(
    descriptions: Sequence[str | None], true_values: Sequence[str], prior_values: Sequence[str]
) -> dict[str, float]:
    """Over the rows with a description (valid rollouts; ``None`` marks the others): the share
    that states the true value and the share that states the prior value.

    A value is stated when :func:`vigos.data.synthetic.mentions_attribute` finds it
    as a whole word. A row whose true value is its prior (a prior-agreeing
    image) counts for both shares when it states that value. Returns
    ``{"states_true", "states_prior", "n"}``, ``n`` the rows with a
    description; both shares are 0.0 when ``n`` is 0.
    """
    _check_lengths("description_grounding", descriptions, true_values=true_values, prior_values=prior_values)
    states_true = states_prior = n = 0
    for row, (description, true, prior) in enumerate(zip(descriptions, true_values, prior_values)):
        if description is None:
            continue
        if not str(true).strip() or not str(prior).strip():
            raise ValueError(
                f"description_grounding: row {row} has an empty true or prior value; every row with "
                "a description needs both"
            )
        n += 1
        states_true += mentions_attribute(description, true)
        states_prior += mentions_attribute(description, prior)
    return {"states_true": states_true / n if n else 0.0, "states_prior": states_prior / n if n else 0.0, "n": n}


def _leak_needles(answer: str) -> list[str]:
    """The forms of the answer to look for: as written, and normalized.

    The written form catches "1,000" where normalization would look for
    "1000"; the normalized one catches "\\boxed{Red}" or "two" as "red" or "2".
    A single letter (a multiple-choice option, a variable name) matches
    ordinary words such as the article "a", so it is never looked for.
    """
    forms = {answer.strip(), normalize_answer(answer)}
    return sorted(f for f in forms if f.strip() and not (len(f) == 1 and f.isalpha()))


def answer_leakage(descriptions: Sequence[str | None], answers: Sequence[str]) -> dict[str, float]:
    """The share of descriptions (``None``: no description, left out) that contain the reference answer.

    The answer is looked for as written and in the canonical form of
    :func:`vigos.grading.answers.normalize_answer` (no ``\\boxed{}``, lower case, "two"
    as "2", no leading article or trailing period), each with
    :func:`vigos.data.synthetic.mentions_attribute`: a whole-word match ignoring
    case, a digit also matching its number word. Rows whose answer is empty or
    a single letter (an option letter) are left out. Returns
    ``{"leakage", "n"}``, ``n`` the rows counted.
    """
    if len(descriptions) != len(answers):
        raise ValueError(
            f"answer_leakage: got {len(descriptions)} descriptions but {len(answers)} answers; pass one per row"
        )
    leaked = n = 0
    for description, answer in zip(descriptions, answers):
        needles = _leak_needles(answer) if description is not None else []
        if not needles:
            continue
        n += 1
        leaked += any(mentions_attribute(description, needle) for needle in needles)
    return {"leakage": leaked / n if n else 0.0, "n": n}


# --- teacher image reliance ------------------------------------------------------------------


def _counterfactual_images(
    processor: Any, examples: Sequence[Example], true_images: list[EncodedImage], mode: str
) -> list[EncodedImage]:
    """The image each row's teachers see instead of its own."""
    if mode == "same":
        return list(true_images)
    if mode == "shuffle":
        if len(examples) < 2:
            raise ValueError(
                "counterfactual='shuffle' shows each row the next row's image, so it needs at least "
                "2 rows; use 'blank' for a single row"
            )
        return [true_images[(i + 1) % len(true_images)] for i in range(len(true_images))]
    blanks: dict[tuple[tuple[int, int], ...], EncodedImage] = {}
    images = []
    for example in examples:
        sizes = tuple(image.size for image in example.images)
        if sizes not in blanks:
            blanks[sizes] = encode_image(processor, [Image.new("RGB", size, BLANK_GREY) for size in sizes])
        images.append(blanks[sizes])
    return images


def _kl_sum(
    true_states: torch.Tensor, other_states: torch.Tensor, head: torch.Tensor, temperature: float, chunk_size: int
) -> float:
    """Sum over tokens of KL(p_true || p_other), projecting ``chunk_size`` hidden states [chunk, H] at a time."""
    total = 0.0
    for start in range(0, true_states.shape[0], chunk_size):
        true_logits = F.linear(true_states[start : start + chunk_size].to(head.dtype), head)
        other_logits = F.linear(other_states[start : start + chunk_size].to(head.dtype), head)
        # forward_kl(student, teacher) is KL(teacher || student): the true-image view is the "teacher" side.
        total += float(losses.forward_kl(other_logits, true_logits, temperature).double().sum())
    return total


@torch.no_grad()
def teacher_image_reliance(
    model: torch.nn.Module,
    scorer: Scorer,
    examples: Sequence[Example],
    completions: Sequence[str | Sequence[int] | torch.Tensor],
    *,
    counterfactual: str = "blank",
    max_rows: int | None = None,
) -> dict[str, float]:
    """How much each teacher's target depends on the image.

    For each term of ``scorer`` and each token it supervises in
    ``completions`` (one per example, parsed into spans as in training), the
    teacher's next-token distribution with the row's own image is compared
    with its distribution given a counterfactual image, everything else equal:
    ``KL(p_true || p_counterfactual)`` at the scorer's distillation
    temperature, averaged over the term's tokens.

    ``counterfactual``: ``"blank"`` (a mid-grey image of the same size),
    ``"shuffle"`` (the next row's image, the last row taking the first's) or
    ``"same"`` (the row's own image: a control that is exactly 0).
    ``max_rows`` keeps the first rows only. Rows go through the teacher
    ``scorer.options.teacher_batch_size`` at a time and their hidden states
    are projected to the vocabulary ``scorer.options.loss_chunk_size`` tokens
    at a time, so memory does not grow with the number of rows.

    Returns ``{"reliance_<term>": mean KL, "tokens_<term>": token count}``;
    a term with no supervised token is left out.
    """
    if counterfactual not in COUNTERFACTUALS:
        raise ValueError(f"counterfactual must be one of {', '.join(COUNTERFACTUALS)}; got {counterfactual!r}")
    if len(examples) != len(completions):
        raise ValueError(
            f"got {len(examples)} examples but {len(completions)} completions; pass one example per completion"
        )
    examples, completions = list(examples), list(completions)
    if max_rows is not None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1 (or None for every row); got {max_rows}")
        examples, completions = examples[:max_rows], completions[:max_rows]
    completion_ids = scorer.tokenize_completions(completions)
    image_token = image_token_id(scorer.processor)
    for row, ids in enumerate(completion_ids):
        if image_token in ids:
            raise ValueError(
                f"completion {row} holds the image placeholder token {image_token}; completions are text only"
            )
    spans = scorer.parser.parse_batch(completion_ids)
    completion_ids = [ids[: s.length] for ids, s in zip(completion_ids, spans)]
    encoded: dict[int, EncodedImage] = {}
    for example in examples:
        if id(example.image) not in encoded:
            encoded[id(example.image)] = encode_image(scorer.processor, example.image)
    true_images = [encoded[id(e.image)] for e in examples]
    other_images = _counterfactual_images(scorer.processor, examples, true_images, counterfactual)

    heads = {t.name: scorer.teacher_head(model, t.name) for t in scorer.terms}
    temperature = scorer.options.distill_temperature
    chunk_size = scorer.options.loss_chunk_size or 1024
    group = scorer.options.teacher_batch_size
    sums = {t.name: 0.0 for t in scorer.terms}
    counts = {t.name: 0 for t in scorer.terms}
    for start in range(0, len(examples), group):
        rows = slice(start, start + group)
        supervised = scorer.supervised_ranges(spans[rows])
        if not any(r is not None for ranges in supervised.values() for r in ranges):
            continue
        args = (model, examples[rows], completion_ids[rows])
        true_states = scorer.teacher_states(*args, true_images[rows], spans[rows])
        other_states = scorer.teacher_states(*args, other_images[rows], spans[rows])
        for name, states in true_states.items():
            counts[name] += states.shape[0]
            sums[name] += _kl_sum(states, other_states[name], heads[name], temperature, chunk_size)
    result: dict[str, float] = {}
    for name, count in counts.items():
        if count:
            result[f"reliance_{name}"] = sums[name] / count
            result[f"tokens_{name}"] = count
    return result


# --- student image sensitivity -----------------------------------------------------------------


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Run with the global torch generators seeded, and give them back as they were.

    Sampling here must neither depend on nor disturb the training run's
    random stream.
    """
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _answers(processor: Any, completions: Sequence[Sequence[int]]) -> list[str | None]:
    tokenizer = processor.tokenizer
    return [extract_answer(tokenizer.decode(ids, skip_special_tokens=True)) for ids in completions]


def _same_answer(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    return normalize_answer(a) == normalize_answer(b)


def student_image_sensitivity(
    model: torch.nn.Module,
    processor: Any,
    agree_examples: Sequence[Example],
    conflict_examples: Sequence[Example],
    *,
    rollout: Rollout,
    seed: int | None = 0,
) -> dict[str, float]:
    """How the student's answer moves when a prior-agreeing image is swapped for a conflicting one.

    Row ``i`` of both lists must ask the same question (the synthetic world's
    ``eval_agree`` and ``eval_conflict`` splits are paired this way). The
    student answers each row through ``rollout`` (typically greedy or at low
    temperature); with ``seed`` set, both sides sample from the same random
    stream (common random numbers), so any change comes from the image, and
    the caller's random state is left untouched. With ``num_samples`` > 1,
    sample ``j`` of one side is compared with sample ``j`` of the other.

    The prior answer is ``meta["prior_answer"]`` of the conflicting row, or
    else the agreeing row's answer. Returns shares over the compared samples:
    ``changed`` (the answers differ after :func:`vigos.grading.answers.normalize_answer`;
    no answer on both sides counts as the same), ``completion_changed`` (the
    completions differ at all, answer or not), ``conflict_true`` and
    ``conflict_prior`` (the answer on the conflicting image is its true
    attribute / the prior), ``agree_true``, and ``n``.
    """
    if len(agree_examples) != len(conflict_examples):
        raise ValueError(
            f"got {len(agree_examples)} agreeing but {len(conflict_examples)} conflicting examples; "
            "pass paired rows (row i of each asks the same question)"
        )
    for index, (agree, conflict) in enumerate(zip(agree_examples, conflict_examples)):
        if agree.question != conflict.question:
            raise ValueError(
                f"pair {index}: the agreeing row asks {agree.question!r} but the conflicting row asks "
                f"{conflict.question!r}; pass row-aligned splits such as eval_agree and eval_conflict "
                "of one synthetic world"
            )
    if not agree_examples:
        return {
            "changed": 0.0,
            "completion_changed": 0.0,
            "conflict_true": 0.0,
            "conflict_prior": 0.0,
            "agree_true": 0.0,
            "n": 0,
        }
    with _seeded(seed):
        agree_out = rollout(model, agree_examples)
    with _seeded(seed):
        conflict_out = rollout(model, conflict_examples)
    per_row = len(agree_out) // len(agree_examples)
    agree_answers, conflict_answers = _answers(processor, agree_out), _answers(processor, conflict_out)
    changed = completion_changed = conflict_true = conflict_prior = agree_true = 0
    for index, (a, c) in enumerate(zip(agree_answers, conflict_answers)):
        agree, conflict = agree_examples[index // per_row], conflict_examples[index // per_row]
        prior = str(conflict.meta.get("prior_answer") or agree.answer)
        changed += not _same_answer(a, c)
        completion_changed += list(agree_out[index]) != list(conflict_out[index])
        conflict_true += is_correct(c, conflict.answer)
        conflict_prior += is_correct(c, prior)
        agree_true += is_correct(a, agree.answer)
    n = len(agree_answers)
    return {
        "changed": changed / n,
        "completion_changed": completion_changed / n,
        "conflict_true": conflict_true / n,
        "conflict_prior": conflict_prior / n,
        "agree_true": agree_true / n,
        "n": n,
    }


# --- the whole set ---------------------------------------------------------------------------


def _sample(rows: int, sample_size: int, seed: int) -> list[int]:
    """``sample_size`` row indices drawn with ``seed``, in row order."""
    return sorted(random.Random(seed).sample(range(rows), min(rows, sample_size)))


def _grounding(prefix: str, descriptions: list[str | None], examples: list[Example]) -> dict[str, float]:
    values = description_grounding(
        descriptions, [e.answer for e in examples], [str(e.meta["prior_answer"]) for e in examples]
    )
    return {f"{prefix}_{k}": v for k, v in values.items()}


@torch.no_grad()
def diagnose(
    model: torch.nn.Module,
    processor: Any,
    examples: Sequence[Example],
    *,
    scorer: Scorer,
    completions: Sequence[str | Sequence[int] | torch.Tensor] | None = None,
    rollout: Rollout | None = None,
    sample_size: int = 16,
    seed: int = 0,
    counterfactual: str = "blank",
) -> dict[str, float]:
    """Grounding, leakage and teacher image reliance on up to ``sample_size`` examples.

    ``sample_size`` examples are drawn with ``seed``. Without ``completions``
    the student samples them through ``rollout`` (required then), seeded with
    ``seed`` and leaving the caller's random state as it was. Given
    ``completions``, there are ``k`` per example (grouped by example) and the
    sample is drawn from those rows. ``scorer`` scores them (outside training:
    ``config.build_scorer(processor, teacher=config.teacher_policy(model))``).

    Returns, as flat floats: ``rows`` and ``valid_rate``; ``leakage`` and
    ``leakage_n`` (:func:`answer_leakage`); when examples carry
    ``meta["prior_answer"]`` (the synthetic world), ``grounding_states_true``,
    ``grounding_states_prior`` and ``grounding_n`` over those rows
    (:func:`description_grounding`, the example's answer as the true value),
    and the same with ``grounding_conflict_`` over the rows whose
    ``meta["conflict"]`` is true (rows with ``meta["obscured"]`` left out);
    when examples carry ``meta["colour"]`` (the colour drawn), ``ungrounded``
    and ``ungrounded_n``, the share of descriptions stating a colour the image
    does not show, and ``ungrounded_obscured`` likewise over the obscured rows;
    and ``reliance_<term>`` / ``tokens_<term>``
    (:func:`teacher_image_reliance` with ``counterfactual``).
    """
    if sample_size < 1:
        raise ValueError(f"sample_size must be at least 1; got {sample_size}")
    examples = list(examples)
    if not examples:
        raise ValueError("diagnose needs at least one example")
    if completions is not None:
        if not completions or len(completions) % len(examples):
            raise ValueError(
                f"got {len(completions)} completions for {len(examples)} examples; pass k completions "
                "per example, grouped by example"
            )
        per_row = len(completions) // len(examples)
        expanded = [e for e in examples for _ in range(per_row)]
        chosen = _sample(len(expanded), sample_size, seed)
        rows, sampled = [expanded[i] for i in chosen], [completions[i] for i in chosen]
    else:
        if rollout is None:
            raise ValueError("diagnose needs completions or a rollout to sample them")
        chosen_examples = [examples[i] for i in _sample(len(examples), sample_size, seed)]
        with _seeded(seed):
            sampled = rollout(model, chosen_examples)
        per_row = len(sampled) // len(chosen_examples)
        rows = [e for e in chosen_examples for _ in range(per_row)]

    ids = scorer.tokenize_completions(sampled)
    spans = scorer.parser.parse_batch(ids)
    tokenizer = processor.tokenizer
    descriptions = [
        tokenizer.decode(i[s.description_span[0] : s.description_span[1]], skip_special_tokens=True)
        if s.valid and s.description_span
        else None
        for i, s in zip(ids, spans)
    ]
    metrics: dict[str, float] = {"rows": len(rows), "valid_rate": sum(s.valid for s in spans) / len(spans)}
    leakage = answer_leakage(descriptions, [e.answer for e in rows])
    metrics.update(leakage=leakage["leakage"], leakage_n=leakage["n"])
    # Obscured rows (the colour cannot be read, the answer is the prior's) have no true value to state.
    with_prior = [
        i for i, e in enumerate(rows) if e.meta.get("prior_answer") not in (None, "") and not e.meta.get("obscured")
    ]
    if with_prior:
        metrics.update(_grounding("grounding", [descriptions[i] for i in with_prior], [rows[i] for i in with_prior]))
        conflict = [i for i in with_prior if rows[i].meta.get("conflict") is True]
        if conflict:
            metrics.update(
                _grounding("grounding_conflict", [descriptions[i] for i in conflict], [rows[i] for i in conflict])
            )
    metrics.update(_ungrounded(descriptions, rows))
    metrics.update(teacher_image_reliance(model, scorer, rows, ids, counterfactual=counterfactual))
    return metrics


def _ungrounded(descriptions: list[str | None], rows: list[Example]) -> dict[str, float]:
    """Over rows whose ``meta["colour"]`` says what colour is drawn (the synthetic world) and that have a
    description: the share stating a colour the image does not show, and the same over the obscured
    rows alone (``meta["obscured"]``)."""
    metrics: dict[str, float] = {}
    drawn = [(d, e) for d, e in zip(descriptions, rows) if d is not None and e.meta.get("colour")]
    for name, chosen in (
        ("ungrounded", drawn),
        ("ungrounded_obscured", [r for r in drawn if r[1].meta.get("obscured")]),
    ):
        if chosen:
            metrics[name] = sum(states_unshown_colour(d, str(e.meta["colour"])) for d, e in chosen) / len(chosen)
            metrics[f"{name}_n"] = len(chosen)
    return metrics


# --- `vigos diagnose` --------------------------------------------------------------------------
