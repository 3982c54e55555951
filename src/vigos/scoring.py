"""Score given completions: spans → teachers → loss terms and metrics, no sampling.

This is the public entry point that the trainer calls after its rollout, and
that tests, benchmarks and comparisons with other implementations call
directly with hand-made completions.

Position arithmetic: a causal model's hidden state at position ``p`` predicts
the token at ``p + 1``. A completion token at index ``j`` after a prompt of
``P`` tokens is therefore predicted from position ``P + j - 1``, in the
student's sequence and, with its own ``P``, in each teacher's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from . import losses
from .data import Example
from .grading import is_correct
from .modeling import (
    Context,
    EncodedImage,
    collate_contexts,
    encode_image,
    final_hidden_states,
    image_token_id,
    output_head,
    tokenize_prompt,
)
from .prompts import PromptSpec, render_prompt
from .spans import CompletionSpans, SpanParser, span_mask
from .teachers import TeacherPolicy, TeacherTerm

ReduceSum = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ScoringOptions:
    """Loss settings (the trainer fills these from its config)."""

    distill_temperature: float = 1.0
    jsd_beta: float = 0.5
    token_loss_clip: float | None = 0.05
    description_end_clip: float | None = 0.05
    reasoning_start_clip: float | None = 0.05
    loss_chunk_size: int | None = 1024
    teacher_batch_size: int = 8


@dataclass
class ScoreOutput:
    """What scoring returns.

    ``loss`` is the weighted sum of the terms; ``terms`` holds each term's
    unweighted value: this process's share of the term's mean over the global
    batch (its tokens' divergences summed, divided by the global token count),
    so that the shares of all processes add up to the term (with one process,
    the share is the term). ``metrics`` are plain floats, the same on every
    process: this call's share of the optimizer step's rates, means and terms
    over all processes (with no gradient accumulation, the step's values).
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    metrics: dict[str, float]
    spans: list[CompletionSpans]
    completion_ids: list[list[int]]
    supervised: dict[str, list[tuple[int, int] | None]] = field(default_factory=dict)


def _supervised_range(term: TeacherTerm, spans: CompletionSpans) -> tuple[int, int] | None:
    """Token range ``[start, end)`` of the completion that ``term`` supervises, or None."""
    if term.rows == "valid" and not spans.valid or term.rows == "invalid" and spans.valid:
        return None
    if term.span == "description":
        found = spans.description_span
    elif term.span == "reasoning":
        found = spans.reasoning_span
    else:
        found = (0, spans.length)
    return found if found is not None and found[1] > found[0] else None


class Scorer:
    """Computes the ViGOS/OPSD loss for given completions of given examples."""

    def __init__(
        self,
        processor: Any,
        terms: Sequence[TeacherTerm],
        student_prompt: PromptSpec,
        *,
        teacher: TeacherPolicy | None = None,
        options: ScoringOptions | None = None,
        reduce_sum: ReduceSum | None = None,
        lockstep: bool = False,
    ):
        self.processor = processor
        # Sharded weights (FSDP, ZeRO-3) are gathered collectively in every forward
        # pass, so every process must run as many passes as the others.
        self.lockstep = lockstep
        self.terms = list(terms)
        self.student_prompt = student_prompt
        self.teacher = teacher or TeacherPolicy()
        self.options = options or ScoringOptions()
        self.reduce_sum = reduce_sum or (lambda t: t)
        tokenizer = processor.tokenizer
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.image_token = image_token_id(processor)
        self.parser = SpanParser(tokenizer)
        self.divergences = {
            t.name: losses.get_divergence(
                t.divergence, beta=self.options.jsd_beta, temperature=self.options.distill_temperature
            )
            for t in self.terms
        }

    def tokenize_completions(self, completions: Sequence[str | Sequence[int] | torch.Tensor]) -> list[list[int]]:
        """Completions as token ids; text is the part after the ``<description>`` pre-fill."""
        ids = []
        for c in completions:
            if isinstance(c, str):
                ids.append(self.processor.tokenizer(c, add_special_tokens=False)["input_ids"])
            elif isinstance(c, torch.Tensor):
                ids.append([int(i) for i in c.tolist()])
            else:
                ids.append([int(i) for i in c])
        return ids

    def supervised_ranges(self, spans: Sequence[CompletionSpans]) -> dict[str, list[tuple[int, int] | None]]:
        """For each term, the completion token range each row's teacher supervises (None: not this row)."""
        return {t.name: [_supervised_range(t, s) for s in spans] for t in self.terms}

    def totals(self, completions: Sequence[str | Sequence[int] | torch.Tensor]) -> torch.Tensor:
        """This process's rollout count and each term's supervised token count for ``completions``.

        Returns float32 [1 + terms]. Summed over the micro-batches of an
        optimizer step and over processes, it is what ``step_totals`` takes.
        """
        spans = self.parser.parse_batch(self.tokenize_completions(completions))
        supervised = self.supervised_ranges(spans)
        return self._totals(spans, supervised)

    def _totals(self, spans: list[CompletionSpans], supervised: dict[str, list[tuple[int, int] | None]]) -> torch.Tensor:
        counts = [sum(r[1] - r[0] for r in supervised[t.name] if r) for t in self.terms]
        return torch.tensor([len(spans), *counts], dtype=torch.float32)

    def _prompt_ids(self, spec: PromptSpec, example: Example, image: EncodedImage, answer: bool) -> list[int]:
        text = spec.text(example.question, example.answer if answer else None)
        return tokenize_prompt(self.processor, render_prompt(self.processor, text, spec.prefill), image)

    def __call__(
        self,
        model: torch.nn.Module,
        examples: Sequence[Example],
        completions: Sequence[str | Sequence[int] | torch.Tensor],
        *,
        step_totals: torch.Tensor | None = None,
    ) -> ScoreOutput:
        """Loss terms and metrics of ``completions`` (one per example).

        ``step_totals`` [1 + terms]: the rollouts and each term's supervised
        tokens over the whole optimizer step (every micro-batch of a gradient
        accumulation window, every process; see :meth:`totals`). Each term is
        normalized by them, so that the micro-batches' losses add up to the
        step's. None: this call is the whole step (totals summed over processes).
        """
        if len(examples) != len(completions):
            raise ValueError(f"got {len(examples)} examples but {len(completions)} completions; pass one example per completion")
        completion_ids = self.tokenize_completions(completions)
        for index, ids in enumerate(completion_ids):
            if self.image_token in ids:
                raise ValueError(
                    f"completion {index} holds the image placeholder token {self.image_token}; completions are text "
                    "only (rollouts suppress vision tokens)"
                )
        spans = self.parser.parse_batch(completion_ids)
        completion_ids = [ids[: s.length] for ids, s in zip(completion_ids, spans)]
        images: dict[int, EncodedImage] = {}
        for example in examples:
            if id(example.image) not in images:
                images[id(example.image)] = encode_image(self.processor, example.image)
        image_of = [images[id(e.image)] for e in examples]

        supervised = self.supervised_ranges(spans)
        teacher_states = self.teacher_states(model, examples, completion_ids, image_of, supervised)

        student_prompts = [self._prompt_ids(self.student_prompt, e, img, answer=False) for e, img in zip(examples, image_of)]
        contexts = [Context(p, c, img) for p, c, img in zip(student_prompts, completion_ids, image_of)]
        student_hidden = final_hidden_states(model, self._collate(contexts, model))
        student_head = output_head(model)
        teacher_head = self.teacher.head(model)

        local_totals = self._totals(spans, supervised).to(student_hidden.device)
        totals = self.reduce_sum(local_totals) if step_totals is None else step_totals.to(student_hidden.device)
        global_counts = totals[1:]
        # Keeps every parameter in the graph when no term has a token here, so
        # that distributed gradient reduction still sees this process.
        loss = student_hidden.sum() * 0.0
        terms: dict[str, torch.Tensor] = {}
        prompt_lengths = torch.tensor([len(p) for p in student_prompts], device=student_hidden.device)
        width = max((len(c) for c in completion_ids), default=0)
        for index, term in enumerate(self.terms):
            rows = supervised[term.name]
            row_index, token_index = span_mask(rows, width).to(student_hidden.device).nonzero(as_tuple=True)
            student_states = student_hidden[row_index, prompt_lengths[row_index] + token_index - 1]
            clip = self._clip_values(term, rows, row_index, token_index)
            value = losses.divergence_from_hidden(
                student_states,
                teacher_states[term.name].to(student_states.dtype),
                student_head,
                teacher_head,
                self.divergences[term.name],
                mask=torch.ones(len(row_index), dtype=torch.bool, device=student_hidden.device),
                clip=clip,
                global_count=global_counts[index],
                chunk_size=self.options.loss_chunk_size,
            )
            terms[term.name] = value
            loss = loss + term.weight * value
        metrics = self._metrics(examples, completion_ids, spans, local_totals, terms, loss, float(totals[0]))
        return ScoreOutput(loss, terms, metrics, spans, completion_ids, supervised)

    def _collate(self, contexts: Sequence[Context], model: torch.nn.Module) -> dict[str, torch.Tensor]:
        device = next(model.parameters()).device
        batch = collate_contexts(contexts, pad_token_id=self.pad_token_id, image_token=self.image_token)
        return {k: v.to(device) for k, v in batch.items()}

    @torch.no_grad()
    def teacher_states(
        self,
        model: torch.nn.Module,
        examples: Sequence[Example],
        completion_ids: list[list[int]],
        image_of: list[EncodedImage],
        supervised: dict[str, list[tuple[int, int] | None]],
    ) -> dict[str, torch.Tensor]:
        """Each teacher's final hidden states at the positions that predict its supervised tokens.

        Returns {term: [N_term, H]} in row-major token order, matching the
        student's gather. Only hidden states are kept, never logits.
        """
        hidden_size = output_head(model).shape[-1]
        size = self.options.teacher_batch_size
        # Every process holds as many rows, so this many passes per term is the most any process runs.
        most_passes = -(-len(examples) // size)
        states: dict[str, torch.Tensor] = {}
        was_training = model.training
        model.eval()
        try:
            with self.teacher.weights(model):
                for term in self.terms:
                    jobs = []
                    for row, r in enumerate(supervised[term.name]):
                        if r is None:
                            continue
                        start = 0 if term.sees_from_start else r[0]
                        prompt = self._prompt_ids(term.prompt, examples[row], image_of[row], answer=True)
                        context = Context(prompt, completion_ids[row][start : r[1]], image_of[row])
                        jobs.append((context, len(prompt) + r[0] - start - 1, r[1] - r[0]))
                    gathered = []
                    for offset in range(0, len(jobs), size):
                        chunk = jobs[offset : offset + size]
                        hidden = final_hidden_states(model, self._collate([c for c, _, _ in chunk], model))
                        for row, (_, first, count) in enumerate(chunk):
                            gathered.append(hidden[row, first : first + count])
                    if self.lockstep and examples:
                        # Passes on a throwaway context (one row's prompt, image included, so that
                        # the vision tower runs too) until this process has run as many as any.
                        filler = Context(self._prompt_ids(self.student_prompt, examples[0], image_of[0], answer=False),
                                         [], image_of[0])
                        for _ in range(most_passes - -(-len(jobs) // size)):
                            final_hidden_states(model, self._collate([filler], model))
                    states[term.name] = (
                        torch.cat(gathered) if gathered else torch.zeros((0, hidden_size), device=next(model.parameters()).device)
                    )
        finally:
            model.train(was_training)
        return states

    def _clip_values(
        self, term: TeacherTerm, rows: list[tuple[int, int] | None], row_index: torch.Tensor, token_index: torch.Tensor
    ) -> torch.Tensor | None:
        """Per-token clip [N_term]: the token clip, and the boundary clips on the
        last description token and the first reasoning token."""
        options = self.options
        clip = torch.full(token_index.shape, float("inf"), device=token_index.device)
        if options.token_loss_clip is not None:
            clip.fill_(options.token_loss_clip)
        bounds = torch.tensor([r if r else (0, 0) for r in rows], dtype=torch.long, device=token_index.device).view(-1, 2)
        if term.span == "description" and options.description_end_clip is not None:
            clip[token_index == bounds[row_index, 1] - 1] = options.description_end_clip
        if term.span == "reasoning" and options.reasoning_start_clip is not None:
            clip[token_index == bounds[row_index, 0]] = options.reasoning_start_clip
        return clip

    def _metrics(
        self,
        examples: Sequence[Example],
        completion_ids: list[list[int]],
        spans: list[CompletionSpans],
        local_totals: torch.Tensor,
        terms: dict[str, torch.Tensor],
        loss: torch.Tensor,
        step_rollouts: float,
    ) -> dict[str, float]:
        """This call's share of the step's metrics over all processes: sums across
        processes, divided by the step's rollouts (``loss_*`` are already shares)."""
        tokenizer = self.processor.tokenizer
        correct = 0
        for example, ids, s in zip(examples, completion_ids, spans):
            prediction = s.answer if s.valid else None
            if prediction is None:
                from .grading import extract_answer

                prediction = extract_answer(tokenizer.decode(ids, skip_special_tokens=True))
            correct += bool(is_correct(prediction, example.answer))
        names = list(terms)
        local = torch.tensor(
            [sum(s.valid for s in spans), sum(s.tagless for s in spans), sum(s.length for s in spans), correct,
             float(loss.detach())] + [float(terms[name].detach()) for name in names],
            dtype=torch.float32,
        )
        summed = self.reduce_sum(torch.cat([local_totals.cpu(), local]).to(loss.device)).tolist()
        rollouts, counts = summed[0], summed[1 : 1 + len(names)]
        valid, tagless, length, correct, total_loss, *values = summed[1 + len(names) :]
        n = max(step_rollouts, 1.0)
        metrics = {
            "loss": total_loss,
            "valid_rate": valid / n,
            "fallback_rate": (rollouts - valid) / n,
            "tagless_rate": tagless / n,
            "completion_length": length / n,
            "answer_accuracy": correct / n,
        }
        for name, value, count in zip(names, values, counts):
            metrics[f"loss_{name}"] = value
            metrics[f"tokens_{name}"] = count / n
        return metrics


def score_completions(
    model: torch.nn.Module,
    processor: Any,
    examples: Sequence[Example],
    completions: Sequence[str | Sequence[int] | torch.Tensor],
    *,
    method: str = "vigos",
    teacher: TeacherPolicy | None = None,
    config: Any = None,
) -> ScoreOutput:
    """Score ``completions`` (one per example) with ``method``'s teachers and return the loss,
    each term and the metrics. ``config`` is a :class:`vigos.config.ViGOSConfig` (defaults if None)."""
    from .config import ViGOSConfig

    config = config or ViGOSConfig(method=method, output_dir="vigos_output", report_to="none")
    return config.build_scorer(processor, teacher=teacher)(model, examples, completions)
