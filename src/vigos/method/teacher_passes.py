"""The teachers' side of scoring: each teacher's contexts, its frozen passes, and how it is read.

`TeacherPasses` builds each term's teacher sequences (its own prompt, then the student's own token
ids), runs them under the teacher's weights (the policy under ``teacher``, or a separate model), keeps
final hidden states at the supervised positions only, and reads each teacher once per call as hidden
states, its top-k, or its log-probability of each sampled token. `vigos.method.scoring.Scorer` adds
the student's pass and the loss.

Position arithmetic: a causal model's hidden state at position ``p`` predicts
the token at ``p + 1``. A completion token at index ``j`` after a prompt of
``P`` tokens is therefore predicted from position ``P + j - 1``, in the
student's sequence and, with its own ``P``, in each teacher's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from vigos.data.rows import Example
from vigos.method import losses
from vigos.method.sampled_losses import SampledTeacher, sampled_teacher
from vigos.method.score_types import ScoringOptions, TeacherJob
from vigos.method.spans import CompletionSpans
from vigos.method.state_losses import HiddenTeacher, TopKTeacher, top_k_teacher
from vigos.method.teachers import SeparateTeacher, ServedTeacher, TeacherPolicy, TeacherTerm
from vigos.models.modeling import (
    Context,
    EncodedImage,
    ImageFeatures,
    collate_contexts,
    encode_image,
    encode_image_features,
    final_hidden_states,
    gathered_output_head,
    image_token_id,
    output_head_shape,
    tokenize_prompt,
)
from vigos.prompts import PromptSpec, render_prompt

# A teacher's side of one loss term, as ``_read_teachers`` chose to keep it (see vigos.method.state_losses).
TeacherRows = HiddenTeacher | TopKTeacher | SampledTeacher


@contextmanager
def timed(times: dict[str, float], stage: str) -> Iterator[None]:
    """Adds the wall time of the block to ``times[stage]`` (host time: no device synchronization)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        times[stage] = times.get(stage, 0.0) + time.perf_counter() - start


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


class TeacherPasses:
    """Each term's teacher, for given completions: contexts, frozen passes, and its representation."""

    def __init__(
        self,
        processor: Any,
        terms: Sequence[TeacherTerm],
        student_prompt: PromptSpec,
        *,
        teacher: TeacherPolicy | None = None,
        options: ScoringOptions | None = None,
        lockstep: bool = False,
        separate_teachers: Mapping[str, SeparateTeacher | ServedTeacher] | None = None,
    ):
        self.processor = processor
        # Sharded weights (FSDP, ZeRO-3) are gathered collectively in every forward
        # pass, so every process must run as many passes as the others.
        self.lockstep = lockstep
        self.terms = list(terms)
        # Terms whose teacher is another model (by term name), loaded here or served elsewhere; the others
        # run the policy's weights.
        others = dict(separate_teachers or {})
        self.separate = {name: t for name, t in others.items() if isinstance(t, SeparateTeacher)}
        self.served = {name: t for name, t in others.items() if not isinstance(t, SeparateTeacher)}
        unknown = sorted(set(others) - {t.name for t in self.terms})
        if unknown:
            raise ValueError(
                f"separate teachers for {unknown}, but this method's terms are {[t.name for t in self.terms]}"
            )
        self.student_prompt = student_prompt
        self.teacher = teacher or TeacherPolicy()
        self.options = options or ScoringOptions()
        tokenizer = processor.tokenizer
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.image_token = image_token_id(processor)
        self.divergences = {
            t.name: losses.get_loss(
                t.divergence, beta=self.options.jsd_beta, temperature=self.options.distill_temperature
            )
            for t in self.terms
        }

    def supervised_ranges(self, spans: Sequence[CompletionSpans]) -> dict[str, list[tuple[int, int] | None]]:
        """For each term, the completion token range each row's teacher supervises (None: not this row)."""
        return {t.name: [_supervised_range(t, s) for s in spans] for t in self.terms}

    def _encode_images(self, examples: Sequence[Example]) -> list[EncodedImage]:
        """Each example's image(s), processed once per distinct image object (rollouts of a prompt share it)."""
        images: dict[int, EncodedImage] = {}
        for example in examples:
            if id(example.image) not in images:
                images[id(example.image)] = encode_image(self.processor, example.image)
        return [images[id(e.image)] for e in examples]

    def _prompt_ids(self, spec: PromptSpec, example: Example, image: EncodedImage, answer: bool) -> list[int]:
        text = spec.text(example.question, example.answer if answer else None)
        return tokenize_prompt(self.processor, render_prompt(self.processor, text, spec.prefill, image.count), image)

    def teacher_head(self, model: torch.nn.Module, name: str) -> torch.Tensor:
        """Term ``name``'s teacher's output head [V, H_teacher], detached: a separate teacher's own, else
        the policy's under the teacher's weights (whole: call inside ``gathered_output_head`` under ZeRO-3)."""
        separate = self.separate.get(name)
        return separate.head() if separate else self.teacher.head(model)

    def _forward(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """What a pass keeps of every position: final hidden states [B, L, H]."""
        return final_hidden_states(model, batch)

    def _teacher_forward(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """One teacher pass, as `_forward`."""
        return self._forward(model, batch)

    def _output_width(self, model: torch.nn.Module) -> int:
        """The last dimension of `_forward`'s output."""
        return output_head_shape(model)[1]

    def _sampled_ids(
        self, completion_ids: list[list[int]], supervised: dict[str, list[tuple[int, int] | None]]
    ) -> dict[str, torch.Tensor]:
        """For each sampled-token term, the student's token ids [N_term] at its supervised tokens, in the
        row-major order of the teacher's and the student's gathers."""
        return {
            term.name: torch.tensor(
                [ids[j] for ids, r in zip(completion_ids, supervised[term.name]) if r for j in range(*r)],
                dtype=torch.long,
            )
            for term in self.terms
            if isinstance(self.divergences[term.name], losses.SampledTokenLoss)
        }

    def _read_teachers(
        self, model: torch.nn.Module, states: dict[str, torch.Tensor], sampled_ids: dict[str, torch.Tensor]
    ) -> dict[str, TeacherRows]:
        """Each term's teacher, from its hidden states [N_term, H]: its log-probability of each sampled
        token (a sampled-token term, ``sampled_ids`` [N_term]), kept as they are, or (``teacher_top_k``)
        turned into its top-k tokens and tail mass. The one place the representation is chosen."""
        teachers: dict[str, TeacherRows] = {}
        for name in self.separate:
            teachers[name] = self._teacher_rows(states[name], self.teacher_head(model, name), sampled_ids.get(name))
        policy = {name: rows for name, rows in states.items() if name not in self.separate}
        if self.options.teacher_top_k is None and not set(sampled_ids) & set(policy):
            # Hidden states as they are: the head is read in the loss, not here.
            teachers.update({name: HiddenTeacher(rows) for name, rows in policy.items()})
        elif policy:
            with gathered_output_head(model, needed_in_backward=False):
                head = self.teacher.head(model)
                for name, rows in policy.items():
                    rows = rows.to(head.dtype)
                    teachers[name] = self._teacher_rows(rows, head, sampled_ids.get(name), shared=True)
        return {name: teachers[name] for name in states}

    def _teacher_rows(
        self, rows: torch.Tensor, head: torch.Tensor, sampled: torch.Tensor | None, *, shared: bool = False
    ) -> TeacherRows:
        """One term's teacher from its hidden states [N, H] and head [V, H]: its log-probability of each
        sampled token (``sampled`` [N]), its hidden states (keeping its own head unless it is the policy's,
        ``shared``), or its top-k tokens (``teacher_top_k``)."""
        options = self.options
        k, temperature, chunk = options.teacher_top_k, options.distill_temperature, options.loss_chunk_size
        if sampled is not None:
            return sampled_teacher(rows, head, sampled.to(rows.device), temperature, chunk)
        if k is None:
            return HiddenTeacher(rows, None if shared else head)
        return top_k_teacher(rows, head, self._checked_top_k(k, head), temperature, chunk)

    @staticmethod
    def _checked_top_k(k: int, head: torch.Tensor) -> int:
        if k > head.shape[0]:
            raise ValueError(f"teacher_top_k {k} exceeds the vocabulary size {head.shape[0]}; use at most that")
        return k

    def _collate(
        self, contexts: Sequence[Context], model: torch.nn.Module, features: ImageFeatures | None = None
    ) -> dict[str, Any]:
        device = next(model.parameters()).device
        batch = collate_contexts(contexts, pad_token_id=self.pad_token_id, image_features=features)
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def teacher_contexts(
        self,
        examples: Sequence[Example],
        completion_ids: list[list[int]],
        image_of: list[EncodedImage],
        spans: Sequence[CompletionSpans],
    ) -> dict[str, list[TeacherJob]]:
        """Each term's teacher sequences, one per row it supervises.

        A teacher reads its own prompt (ending with its pre-fill), then the
        student's own token ids from where the term says (the completion's
        first token, or the one that opens ``<think>``) through the last
        supervised token: each supervised token is predicted after exactly
        the text the student had written before it, never after a
        re-tokenized copy of it.
        """
        supervised = self.supervised_ranges(spans)
        jobs: dict[str, list[TeacherJob]] = {}
        for term in self.terms:
            jobs[term.name] = []
            for row, r in enumerate(supervised[term.name]):
                if r is None:
                    continue
                start = spans[row].think_token if term.reads_from == "think" else 0
                prompt = self._prompt_ids(term.prompt, examples[row], image_of[row], answer=True)
                context = Context(prompt, completion_ids[row][start : r[1]], image_of[row])
                jobs[term.name].append(TeacherJob(row, context, len(prompt) + r[0] - start - 1, r[1] - r[0]))
        return jobs

    def teacher_states(
        self,
        model: torch.nn.Module,
        examples: Sequence[Example],
        completion_ids: list[list[int]],
        image_of: list[EncodedImage],
        spans: Sequence[CompletionSpans],
    ) -> dict[str, torch.Tensor]:
        """Each teacher's final hidden states at the positions that predict its supervised tokens.

        Returns {term: [N_term, H]} in row-major token order, matching the
        student's gather. Only hidden states are kept, never logits.
        """
        jobs = self.teacher_contexts(examples, completion_ids, image_of, spans)
        return self._teacher_outputs(model, examples, image_of, jobs, times={})[0]

    @torch.no_grad()
    def _teacher_outputs(
        self,
        model: torch.nn.Module,
        examples: Sequence[Example],
        image_of: list[EncodedImage],
        jobs: dict[str, list[TeacherJob]],
        images: list[EncodedImage] | None = None,
        *,
        times: dict[str, float],
    ) -> tuple[dict[str, torch.Tensor], ImageFeatures | None]:
        """Each teacher pass's output ([B, L, D], `_teacher_forward`'s) gathered to {term: [N_term, D]}.
        With ``images``, each is run through the vision tower once, under the teacher's weights, and
        the features stand in for the pixels in every pass of the policy's teachers; they are returned
        (else None). A separate teacher model encodes its own pixels in its passes."""
        states: dict[str, torch.Tensor] = {}
        features = None
        was_training = model.training
        model.eval()
        try:
            with self.teacher.weights(model):
                if images:
                    with timed(times, "vision"):
                        features = encode_image_features(model, images)
                for term in self.terms:
                    if term.name not in self.separate and term.name not in self.served:
                        states[term.name] = self._term_states(model, jobs[term.name], features, examples, image_of)
        finally:
            model.train(was_training)
        for name, separate in self.separate.items():
            states[name] = self._term_states(separate.model, jobs[name], None, examples, image_of, lockstep=False)
        return {term.name: states[term.name] for term in self.terms if term.name in states}, features

    def _term_states(
        self,
        model: torch.nn.Module,
        term_jobs: list[TeacherJob],
        features: ImageFeatures | None,
        examples: Sequence[Example],
        image_of: list[EncodedImage],
        *,
        lockstep: bool | None = None,
    ) -> torch.Tensor:
        """One term's teacher passes on ``model`` gathered to [N_term, D]."""
        size = self.options.teacher_batch_size
        # Contexts of similar length share a pass (less padding); states go back in row order.
        by_length = sorted(range(len(term_jobs)), key=lambda job: term_jobs[job].context.length)
        gathered: list[torch.Tensor | None] = [None] * len(term_jobs)
        for offset in range(0, len(term_jobs), size):
            chunk = by_length[offset : offset + size]
            batch = self._collate([term_jobs[job].context for job in chunk], model, features)
            output = self._teacher_forward(model, batch)
            for row, job in enumerate(chunk):
                first, count = term_jobs[job].first, term_jobs[job].count
                gathered[job] = output[row, first : first + count]
        if (self.lockstep if lockstep is None else lockstep) and examples:
            # Every process holds as many rows, so this many passes per term is the most any process runs:
            # passes on a throwaway context (one row's prompt, image included, so that the vision tower
            # runs too) until this process has run as many as any.
            most_passes = -(-len(examples) // size)
            filler = Context(
                self._prompt_ids(self.student_prompt, examples[0], image_of[0], answer=False), [], image_of[0]
            )
            for _ in range(most_passes - -(-len(term_jobs) // size)):
                final_hidden_states(model, self._collate([filler], model))
        if gathered:
            return torch.cat(gathered)
        return torch.zeros((0, self._output_width(model)), device=next(model.parameters()).device)

    def _served_teachers(
        self,
        model: torch.nn.Module,
        examples: Sequence[Example],
        jobs: dict[str, list[TeacherJob]],
        sampled_ids: dict[str, torch.Tensor],
    ) -> dict[str, TeacherRows]:
        """Each served term's teacher, from its server's prompt log-probabilities at the positions that
        predict the supervised tokens: its log-probability of each sampled token (a sampled-token term),
        else its ``teacher_top_k`` most likely tokens and the mass of the rest (`TopKTeacher`)."""
        teachers: dict[str, TeacherRows] = {}
        for name, served in self.served.items():
            sampled = name in sampled_ids
            k = 0 if sampled else self.options.teacher_top_k
            if k is None:
                raise ValueError(f"the {name} teacher is served ({served.source}): set teacher_top_k, the k it returns")
            rows: list[list[dict[int, float] | None]] = []
            for job in jobs[name]:
                context = job.context
                images = examples[job.row].image
                images = list(images) if isinstance(images, (list, tuple)) else [images]
                scored = served.prompt_logprobs(context.prompt_ids + context.appended_ids, images, k)
                # Entry i is the distribution over token i, which the context's position i - 1 predicts.
                rows.append(scored[job.first + 1 : job.first + 1 + job.count])
            device = next(model.parameters()).device  # where the student's rows, and so the loss, are
            if sampled:
                ids = sampled_ids[name].to(device)
                values = [entry[int(token)] for entry, token in zip((e for row in rows for e in row), ids.tolist())]
                teachers[name] = SampledTeacher(torch.tensor(values, device=device), ids, 1.0)
            else:
                teachers[name] = served_top_k(rows, k, output_head_shape(model)[0], device)
        return teachers


def served_top_k(
    rows: Sequence[Sequence[dict[int, float] | None]], k: int, vocab_rows: int, device: torch.device
) -> TopKTeacher:
    """A `TopKTeacher` (temperature 1) from served log-probabilities: per supervised token, the ``k``
    highest of its entry (an entry may hold one more: the prompt's own token) and the mass of the rest
    (no tail column when k covers the vocabulary's ``vocab_rows``)."""
    log_probs, ids = [], []
    for entry in (e for row in rows for e in row):
        if entry is None or len(entry) < k:
            raise ValueError(
                f"a served teacher returned {0 if entry is None else len(entry)} log-probabilities "
                f"for a supervised token, fewer than teacher_top_k = {k}"
            )
        top = sorted(entry.items(), key=lambda item: item[1], reverse=True)[:k]
        ids.append([token for token, _ in top])
        log_probs.append([value for _, value in top])
    values = torch.tensor(log_probs, dtype=torch.float32, device=device).view(-1, k)
    if k < vocab_rows:
        # The rest's mass from the kept ones; never quite zero (a server rounds its float32 values).
        kept = torch.logsumexp(values, dim=-1, keepdim=True).clamp(max=-1e-7)
        values = torch.cat([values, torch.log(-torch.expm1(kept))], dim=-1)
    return TopKTeacher(values, torch.tensor(ids, dtype=torch.long, device=device).view(-1, k), 1.0)
